"""The body every training command shares, imported only when one runs (it loads numpy/numba).

A command describes its task with a ``TrainingCommand``: how to read its data, build a new
model configuration, prepare the data for a vocabulary, make the trainer's task, and what to
say at the end. This module does the rest: checkpoint paths, --resume (options not given
again come from the checkpoint), the model, metrics, progress, Ctrl-C and the summary.
"""

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numba
import numpy as np

from numrnn.checkpoint import best_path, check_writable, load_checkpoint
from numrnn.configs import TrainConfig
from numrnn.data import describe_char
from numrnn.errors import CheckpointError, ConfigError, DataError
from numrnn.tasks import network_class, require_task
from numrnn.threads import ThreadGovernor
from numrnn.trainer import STOP_REASONS, Trainer
from numrnn.tunables import kernels_compiled
from numrnn_cli.console import err_console
from numrnn_cli.exit_codes import ExitCode
from numrnn_cli.params import format_duration
from numrnn_cli.progress import TrainView
from numrnn_cli.training import MODEL_OPTIONS, TRAIN_OPTIONS, InterruptFlag


@dataclass(frozen=True)
class TrainingCommand:
    task: str  # the task's name in checkpoints (numrnn.tasks.TASKS)
    command: str  # how a user runs it, e.g. "numrnn classify train"
    read: Callable  # (path, options, resume checkpoint or None) -> data, raising DataError
    new_model: Callable  # (data, options, train_config) -> (vocab, ModelConfig)
    prepare: Callable  # (path, data, vocab, options, train_config, resume) -> prepared
    make_task: Callable  # (model, vocab, prepared, options, train_config, on_event) -> task
    summary: Callable  # (result, out, prepared) -> extra summary lines
    model_options: tuple = MODEL_OPTIONS
    fixed_options: tuple = ()  # options a resume may not change (e.g. how data is split)
    describe: Callable = None  # (data, prepared) -> lines said before training starts


def run_training(command, data_path, options, explicit):
    """Everything a training command does after parsing; returns the TrainResult (and exits
    130 after saving when interrupted)."""
    resume = load_checkpoint(options["resume"]) if options["resume"] else None
    data = command.read(data_path, options, resume)
    if resume is not None:
        model_config, train_config, dtype = _resumed_configs(command, resume, options, explicit)
        vocab = resume.vocab
        out = options["out"] or options["resume"]
    else:
        train_config = _train_config(options)
        vocab, model_config = command.new_model(data, options, train_config)
        dtype = options["dtype"]
        out = options["out"] or Path(Path(data_path).stem + ".safetensors")
        for path in (out, best_path(out)):
            check_writable(path)  # first, so that a folder given as -o is named as such
            if path.exists() and not options["force"]:
                raise CheckpointError(
                    f"{path} already exists; continue it with --resume {path}, or pass --force "
                    f"to overwrite it, or choose another file with -o"
                )
    model_config.validate()
    train_config.validate()
    prepared = command.prepare(data_path, data, vocab, options, train_config, resume)
    if resume is not None:
        check_writable(out)
        check_writable(best_path(out))
    metrics = _open_metrics(options["metrics"])

    model = network_class(command.task)(
        model_config, dtype=np.float32 if dtype == "float32" else np.float64, device=options["device"]
    )
    rng = np.random.default_rng(train_config.seed)
    if resume is None:
        model.init_weights(rng)
    else:
        model.load_torch_weights(resume.weights)

    console = err_console()
    try:
        cold = not kernels_compiled(
            f"{model_config.cell}_forward",
            f"{model_config.cell}_backward",
            f"{train_config.optimizer}_update",
        )
        with TrainView(console, quiet=options["quiet"], metrics=metrics, compiling=cold) as view:
            for line in command.describe(data, prepared) if command.describe else ():
                view.say(line)
            task = command.make_task(model, vocab, prepared, options, train_config, view)
            trainer = Trainer(task, train_config, out, on_event=view, resume=resume, rng=rng)
            stop = InterruptFlag(
                lambda: view.say(
                    "[yellow]stopping after this step and saving (Ctrl-C again quits without saving)[/]"
                )
            )
            # Without --threads, the thread count follows the cores other processes leave free.
            governor = None if options["threads"] else ThreadGovernor(numba.config.NUMBA_NUM_THREADS)

            def between_steps():
                if governor is not None:
                    governor.check()
                return stop()

            with stop:
                result = trainer.run(should_stop=between_steps)
    finally:
        if metrics is not None:
            metrics.close()
    _summarise(command, result, data_path, options["quiet"], prepared)
    if result.reason == "interrupted":
        raise click.exceptions.Exit(ExitCode.INTERRUPTED)
    return result


def _train_config(options):
    values = {name: options[name] for name in TRAIN_OPTIONS if name in options}
    values["max_time"] = values["max_time"] or 0.0
    return TrainConfig(**values)


def _resumed_configs(command, checkpoint, options, explicit):
    """The checkpoint's configs, with the options given on this command line applied."""
    meta = checkpoint.meta
    require_task(checkpoint, command.task)
    if "train" not in meta or "progress" not in meta:
        raise CheckpointError(
            f"{checkpoint.path} holds no training state (it was not written by "
            f"{command.command}), so it cannot be resumed"
        )
    saved = checkpoint.model_config
    for name in command.model_options:
        if name in explicit and options[name] != getattr(saved, name):
            shown = {True: "on", False: "off"}.get(options[name], options[name])
            raise ConfigError(
                f"--{name.replace('_', '-')} {shown} contradicts the checkpoint, whose "
                f"model has {name} {getattr(saved, name)}; leave --{name.replace('_', '-')} out "
                f"to resume it"
            )
    if "dtype" in explicit and options["dtype"] != meta["dtype"]:
        raise ConfigError(
            f"--dtype {options['dtype']} contradicts the checkpoint ({meta['dtype']}); "
            f"leave --dtype out to resume it"
        )
    if "optimizer" in explicit and options["optimizer"] != meta["train"].get("optimizer"):
        raise ConfigError(
            f"--optimizer {options['optimizer']} contradicts the checkpoint, trained "
            f"with {meta['train'].get('optimizer')}; leave --optimizer out to resume it"
        )
    for name in command.fixed_options:
        if name in explicit and options[name] != meta["train"].get(name):
            raise ConfigError(
                f"--{name.replace('_', '-')} {options[name]} contradicts the "
                f"checkpoint ({meta['train'].get(name)}), which fixed how the data "
                f"is split; leave --{name.replace('_', '-')} out to resume it"
            )
    model_config = saved
    if "dropout" in explicit:
        model_config = replace(saved, dropout=options["dropout"])
    known = set(TrainConfig.__dataclass_fields__)
    values = {key: value for key, value in meta["train"].items() if key in known}
    for name in TRAIN_OPTIONS:
        if name in explicit:
            values[name] = options[name]
    values["max_time"] = values.get("max_time") or 0.0
    try:
        train_config = TrainConfig(**values)
    except TypeError as exc:
        raise CheckpointError(f"{checkpoint.path}: its training configuration is not valid: {exc}") from None
    return model_config, train_config, meta["dtype"]


def _open_metrics(path):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None


def _summarise(command, result, data_path, quiet, prepared):
    console = err_console()
    resume_cmd = f"{command.command} {shlex.quote(str(data_path))} --resume {shlex.quote(str(result.out))}"
    if result.reason == "interrupted":
        console.print(
            f"[yellow]interrupted[/] at step {result.step:,}; saved {result.out}. "
            f"Resume with:\n  {resume_cmd}",
            highlight=False,
            soft_wrap=True,
        )
        return
    if quiet:
        return
    lines = [
        f"stopped at step {result.step:,} ({STOP_REASONS[result.reason]}) after "
        f"{format_duration(result.elapsed_s)} of training; saved {result.out}"
    ]
    lines += command.summary(result, result.out, prepared)
    if result.reason in ("max_steps", "max_epochs"):
        lines.append(f"train further:   {resume_cmd} --{result.reason.replace('_', '-')} N")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    sys.stderr.flush()


def labelled_data_line(data, path, *, conflicts):
    """What a labelled-data command read: "N examples of C labels from PATH (notes)"; with
    ``conflicts``, also how many texts stand under more than one label."""
    notes = []
    if data.blank_lines:
        notes.append(f"{data.blank_lines:,} blank line{'' if data.blank_lines == 1 else 's'} skipped")
    if data.duplicates():
        notes.append(f"{data.duplicates():,} repeated")
    if conflicts and data.conflicts():
        notes.append(f"{data.conflicts():,} under more than one label")
    if data.ignored_files:
        notes.append(f"{len(data.ignored_files)} file(s) not ending in .txt ignored")
    return f"{len(data):,} examples of {len(data.label_names)} labels from {path}" + (
        f" ({', '.join(notes)})" if notes else ""
    )


def listing(names, limit=30):
    """Names for a message: "a, b, c and 12 more"."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_new_labels(path, data, resume):
    """On --resume, the data's labels must be the checkpoint's, in the same order."""
    if resume is not None and resume.labels != data.label_names:
        raise DataError(
            f"{path} has the labels {listing(data.label_names)}, but the checkpoint was trained "
            f"on {listing(resume.labels)}; resume on the same data"
        )


def refuse_unknown_characters(path, texts, vocab, what="data"):
    """On --resume, every training character must be in the checkpoint's vocabulary."""
    unknown = sorted({char for text in texts for char in vocab.unknown_chars(text)})
    if unknown:
        shown = ", ".join(describe_char(char) for char in unknown[:5])
        raise DataError(
            f"{path} has {len(unknown)} character(s) the checkpoint's vocabulary lacks ({shown}); "
            f"resume on the {what} the model was trained on"
        )


def recorded_data(loaded, read, argument, other):
    """The data the checkpoint ``loaded`` was trained on, read again (``read(path)``) from
    where it records it and checked against its digest, for scoring its own splits;
    ``argument`` names the command's data argument and ``other`` what it scores instead."""
    recorded = loaded.meta.get("data", {})
    path = recorded.get("path")
    if not path:
        raise DataError(f"{loaded.path} does not record where its data is; give {argument}")
    if not Path(path).exists():
        raise DataError(
            f"{loaded.path} was trained on {path}, which is not there any more; give {argument} to "
            f"score {other}"
        )
    data = read(path)
    if data.digest != recorded.get("digest"):
        raise DataError(
            f"{path} changed since the model was trained on it, so its test split cannot be "
            f"recreated; give {argument} ({path}) to score all of it"
        )
    return data
