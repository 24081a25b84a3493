"""Renders the trainer's events: a rich progress bar on a terminal, plain lines otherwise,
and JSON lines for --metrics."""

import json
import math

import click

from numrnn_cli.params import format_duration

_NOUNS = {"chars": "characters"}  # how a unit reads in a sentence
_PER = {"chars": "char", "names": "name", "examples": "example"}
_METRICS = {
    "bpc": "{:.4f} bits/char",
    "accuracy": "accuracy {:.2%}",
    "macro_f1": "macro-F1 {:.3f}",
    "chrf": "greedy chrF {:.1f}",
}
_NOT_PER_ITEM = {"chrf"}  # scores of whole translations, said after "over N characters"


def _metric(name, value):
    return _METRICS.get(name, name + " {:.4g}").format(value)


def _loss(value):
    return "-" if value is None else f"{value:.4f}"


class TrainView:
    """The trainer's ``on_event`` callback for the CLI; use as a context manager."""

    def __init__(self, console, *, quiet=False, metrics=None, compiling=False):
        self.console = console
        self.quiet = quiet
        self.metrics = metrics  # an open text file or None
        self.compiling = compiling  # a cold kernel cache: the first step compiles
        self.live = console.is_terminal and not quiet
        self.bar = None
        self.task = None
        self.last_train = None
        self.last_val = None
        self.items_per_s = None
        self.unit = "chars"
        self.epoch = 0.0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def say(self, message):
        """A status line that stays (above the bar on a terminal)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(message, highlight=False)
        else:
            click.echo(click.unstyle(_plain(message)), err=True)

    def warn(self, message):
        text = f"[yellow]warning:[/] {message}"
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            click.echo(f"warning: {message}", err=True)

    # ------------------------------------------------------------------ events

    def __call__(self, event):
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_TrainStarted(self, event):
        if self.compiling and self.bar is None:
            self.say("compiling the kernels (first run only; later runs start at once)")
        what = "resuming at step" if event.resumed else "training from step"
        total = f" of {event.total_steps:,}" if event.total_steps else ""
        self.unit = event.unit
        noun = _NOUNS.get(event.unit, event.unit)
        self.say(
            f"{what} {event.step:,}{total}: {event.parameters:,} parameters, "
            f"{event.train_items:,} training and {event.val_items:,} validation {noun}, "
            f"{event.steps_per_epoch:,} steps per epoch of {event.items_per_step:,} {noun}"
        )
        if self.bar is not None:
            self.task = self.bar.add_task(
                "compiling (first run only)" if self.compiling else "training",
                total=event.total_steps,
                completed=event.step,
                stats="",
            )

    def _on_StepDone(self, event):
        if self.bar is not None:
            self.last_train = (
                event.loss if self.last_train is None else 0.9 * self.last_train + 0.1 * event.loss
            )
            self.epoch = event.epoch
            self.bar.update(self.task, completed=event.step, description="training", stats=self._stats())

    def _on_StepReport(self, event):
        self.items_per_s = event.items_per_s
        self.last_train = event.train_loss
        self._record(
            {
                "event": "train",
                "step": event.step,
                "epoch": round(event.epoch, 4),
                "elapsed_s": round(event.elapsed_s, 3),
                "train_loss": event.train_loss,
                "val_loss": event.val_loss,
                f"{event.unit}_per_s": round(event.items_per_s, 1),
                "unit": event.unit,
                "lr": event.lr,
            }
        )
        if self.bar is not None:
            self.bar.update(self.task, stats=self._stats())
        elif not self.quiet:
            click.echo(
                f"step {event.step:>7,}  epoch {event.epoch:6.2f}  loss {event.train_loss:.4f}"
                f"  val {_loss(event.val_loss)}  {event.items_per_s:>9,.0f} {event.unit}/s"
                f"  lr {event.lr:.2e}  {format_duration(event.elapsed_s)}",
                err=True,
            )

    def _on_EvalReport(self, event):
        self.last_val = event.val_loss
        self._record(
            {
                "event": "eval",
                "step": event.step,
                "epoch": round(event.epoch, 4),
                "elapsed_s": round(event.elapsed_s, 3),
                "val_loss": event.val_loss,
                **{f"val_{name}": value for name, value in event.metrics.items()},
                f"val_{event.unit}": event.items,
            }
        )
        if event.improved:
            mark = " [green](best)[/]"
        elif event.select_by is not None:
            mark = f" (best {_metric(event.select_by, -event.best_selection)})"
        else:
            mark = f" (best {event.best_val_loss:.4f})"
        noun = _NOUNS.get(event.unit, event.unit)
        per = _PER.get(event.unit, event.unit)
        metrics = event.metrics.items()
        extra = "".join(f", {_metric(name, value)}" for name, value in metrics if name not in _NOT_PER_ITEM)
        after = "".join(f"; {_metric(name, value)}" for name, value in metrics if name in _NOT_PER_ITEM)
        self.say(
            f"step {event.step:,}: validation loss {event.val_loss:.4f} nats/{per}{extra} "
            f"over {event.items:,} {noun}{after}{mark}"
        )

    def _on_CheckpointSaved(self, event):
        if event.best:
            return  # the evaluation line already says "(best)"
        if self.bar is not None:
            self.bar.update(self.task, stats=self._stats() + f"  saved @{event.step:,}")

    def _on_Notice(self, event):
        self.warn(event.message)

    def _stats(self):
        parts = [f"epoch {self.epoch:.2f}", f"loss {_loss(self.last_train)}", f"val {_loss(self.last_val)}"]
        if self.items_per_s:
            parts.append(f"{self.items_per_s:,.0f} {self.unit}/s")
        return "  ".join(parts)

    def _record(self, record):
        if self.metrics is None:
            return
        clean = {
            key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in record.items()
        }
        self.metrics.write(json.dumps(clean) + "\n")
        self.metrics.flush()


def _plain(message):
    from rich.text import Text

    return Text.from_markup(message).plain
