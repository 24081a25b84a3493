"""The generic training loop: limits, cadence, patience, schedule, clipping, divergence,
optimizer, RNG, checkpoints, events.

A task (``numrnn.tasks``) owns everything about the data and the loss: its model, its
batches and their position, the loss and gradient of a batch, evaluation and the metadata a
checkpoint records. Each step the trainer asks the task for the loss and gradient of the
batch at the current position, clips the global gradient norm, stops on a NaN or infinite
loss or gradient, updates the flat parameter buffer and moves the position on.

Everything that decides the future of a run (weights, optimizer state, step, epoch, data
position, the task's carried state, RNG state, best validation loss) is saved in the
checkpoint, so a resumed run continues exactly: same losses, bit-identical weights. Progress
is reported through the ``on_event`` callback (events below); nothing here prints.

The task interface (duck-typed):
- ``name``, ``unit`` (what an item is: "chars", "names"), ``model``, ``steps_per_epoch``,
  ``items_per_step``, ``train_items``, ``val_items`` (0: no evaluation);
- ``loss_and_grad(epoch, position, rng) -> float``: the batch's loss, its gradient left in
  ``model.grads``; ``step_done()`` after the update (e.g. to carry a state);
- ``next_position(position)``, ``at_epoch_end(position)``, ``start_epoch(epoch)``,
  ``epoch_fraction(position)``; ``items_at(epoch, position)``: the items in that batch;
- ``evaluate(should_stop) -> Score or None`` (None: stopped mid-way);
- ``meta() -> dict`` (recorded in checkpoints); ``vocab``; ``carried_state()`` (tensors to save
  as ``state.*``, or None); ``resume(checkpoint, position) -> None or a notice`` (a notice
  when the saved position cannot be used: the epoch restarts).
"""

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numrnn.checkpoint import best_path, save_checkpoint
from numrnn.configs import TrainConfig  # noqa: F401 (re-exported)
from numrnn.errors import ConfigError, TrainingDiverged
from numrnn.optim import LRSchedule, Optimizer

LN2 = math.log(2.0)


@dataclass
class Score:
    """An evaluation: mean loss (nats per item) over ``count`` items, and task metrics."""

    loss: float
    count: int
    unit: str
    metrics: dict = field(default_factory=dict)  # e.g. {"bpc": ...} or {"accuracy": ...}


def characters_score(scored, unit="chars"):
    """The Score of (mean loss per character, characters), with bits per character; None
    (an evaluation stopped mid-way) passes through."""
    if scored is None:
        return None
    loss, chars = scored
    return Score(loss=loss, count=chars, unit=unit, metrics={"bpc": loss / LN2})


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0  # updates made, counting those before any resume
    epoch: int = 0  # completed passes over the training data
    position: int = 0  # where in the epoch the next batch starts (the task's unit)
    elapsed_s: float = 0.0  # training time over all sessions
    best_val_loss: float | None = None  # the validation loss of the best checkpoint
    best_step: int | None = None
    best_selection: float | None = None  # what chose it (lower is better; see selection_value)
    evals_since_best: int = 0
    last_val_loss: float | None = None

    @classmethod
    def from_meta(cls, saved):
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in fields}
        if "stream_pos" in saved:  # checkpoint format 1 (language models only)
            values["position"] = saved["stream_pos"]
        return cls(**values)


# --------------------------------------------------------------------------- events


@dataclass
class TrainStarted:
    step: int  # the first step of this session (0 unless resumed)
    total_steps: int | None  # where --max-steps / --max-epochs end the run, if known
    steps_per_epoch: int
    items_per_step: int
    train_items: int
    val_items: int
    parameters: int
    resumed: bool
    unit: str = "chars"


@dataclass
class StepDone:
    """Every step: its loss (nats per item) and learning rate."""

    step: int
    epoch: float
    loss: float
    lr: float


@dataclass
class StepReport:
    """One log interval: mean train loss (nats per item) over its steps."""

    step: int
    epoch: float  # fractional: epochs completed plus the share of this one
    elapsed_s: float
    train_loss: float
    items_per_s: float
    lr: float
    val_loss: float | None  # the last evaluation's, if any
    unit: str = "chars"


@dataclass
class EvalReport:
    step: int
    epoch: float
    elapsed_s: float
    val_loss: float
    items: int
    improved: bool
    best_val_loss: float
    unit: str = "chars"
    metrics: dict = field(default_factory=dict)
    select_by: str | None = None  # the metric the best checkpoint is chosen by; None: the loss
    best_selection: float | None = None  # the best value of it so far (negated: lower is better)


@dataclass
class CheckpointSaved:
    path: Path
    step: int
    best: bool


@dataclass
class Notice:
    message: str


@dataclass
class TrainResult:
    reason: str  # max_steps | max_epochs | max_time | patience | interrupted
    step: int
    epoch: int
    out: Path
    best_out: Path | None
    best_val_loss: float | None
    last_val_loss: float | None
    elapsed_s: float
    select_by: str | None = None  # as EvalReport's
    best_selection: float | None = None


def selection_value(select_by, score):
    """What an evaluation is ranked by, lower better: the loss, or a task's metric (higher
    better, e.g. a translator's chrF) negated. A task names its metric as ``select_by``."""
    return score.loss if select_by is None else -score.metrics[select_by]


STOP_REASONS = {
    "max_steps": "reached --max-steps",
    "max_epochs": "reached --max-epochs",
    "max_time": "reached --max-time",
    "patience": "the validation score stopped improving (--patience)",
    "interrupted": "interrupted",
}


# --------------------------------------------------------------------------- training


class Trainer:
    """Trains ``task.model`` on ``task``'s batches; saves to ``out`` (latest) and
    ``out``.best (best validation loss).

    resume: a loaded Checkpoint to continue from (its weights must already be in the model).
    """

    def __init__(self, task, config, out, *, on_event=None, resume=None, rng=None):
        self.task = task
        self.model = task.model
        self.config = config.validate()
        self.out = Path(out)
        self.best_out = best_path(self.out)
        self.on_event = on_event or (lambda event: None)
        self.schedule = LRSchedule.parse(config.lr_decay)
        self.total_steps = self._total_steps()
        if self.schedule.needs_horizon and not self.total_steps:
            raise ConfigError(
                f"--lr-decay {config.lr_decay} needs --max-steps or --max-epochs to know where it ends"
            )
        model = self.model
        self.optimizer = Optimizer(config.optimizer, model.layout.size, model.dtype, model.kernels)
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.progress = Progress()
        self.saved_step = None  # the step of the latest checkpoint in ``out``, if any
        self.task.start_epoch(0)
        if resume is not None:
            self._restore(resume)

    # ------------------------------------------------------------------ set-up

    def _total_steps(self):
        limits = [self.config.max_steps] if self.config.max_steps else []
        if self.config.max_epochs:
            limits.append(self.config.max_epochs * self.task.steps_per_epoch)
        return min(limits) if limits else None

    def _restore(self, checkpoint):
        meta = checkpoint.meta
        saved_optimizer = meta.get("train", {}).get("optimizer")
        if saved_optimizer != self.config.optimizer:
            raise ConfigError(
                f"the checkpoint was trained with --optimizer {saved_optimizer}; "
                f"resume with the same optimizer"
            )
        self.optimizer.load_state(checkpoint.optim, meta["progress"].get("optimizer_steps", 0))
        self.progress = Progress.from_meta(meta["progress"])
        self.rng.bit_generator.state = meta["rng"]
        if checkpoint.path is not None and Path(checkpoint.path).resolve() == self.out.resolve():
            self.saved_step = self.progress.step
        self.task.start_epoch(self.progress.epoch)
        notice = self.task.resume(checkpoint, self.progress.position)
        if notice is not None:
            self.on_event(Notice(notice))
            self.progress.position = 0
            self.task.start_epoch(self.progress.epoch)
        elif self.task.at_epoch_end(self.progress.position):
            self._next_epoch()

    def _next_epoch(self):
        self.progress.epoch += 1
        self.progress.position = 0
        self.task.start_epoch(self.progress.epoch)

    # ------------------------------------------------------------------ the loop

    def run(self, should_stop=None):
        """Train until a limit, patience or ``should_stop()``; returns a TrainResult.

        Raises TrainingDiverged (after keeping the last good checkpoints) on a NaN or
        infinite loss or gradient.
        """
        should_stop = should_stop or (lambda: False)
        cfg, task, progress = self.config, self.task, self.progress
        self.on_event(
            TrainStarted(
                step=progress.step,
                total_steps=self.total_steps,
                steps_per_epoch=task.steps_per_epoch,
                items_per_step=task.items_per_step,
                train_items=task.train_items,
                val_items=task.val_items,
                parameters=self.model.layout.size,
                resumed=progress.step > 0,
                unit=task.unit,
            )
        )
        session_start = time.perf_counter()
        window_losses, window_time, window_items = [], 0.0, 0
        reason = self._limit_reached(session_start)
        while reason is None:
            if should_stop():
                reason = "interrupted"
                break
            started = time.perf_counter()
            batch_items = self.task.items_at(progress.epoch, progress.position)
            loss, lr = self._step()
            spent = time.perf_counter() - started
            window_time += spent
            window_items += batch_items
            progress.elapsed_s += spent
            window_losses.append(loss)
            step = progress.step
            self.on_event(StepDone(step=step, epoch=self._epoch_float(), loss=loss, lr=lr))
            if step % cfg.log_every == 0:
                self.on_event(
                    StepReport(
                        step=step,
                        epoch=self._epoch_float(),
                        elapsed_s=progress.elapsed_s,
                        train_loss=float(np.mean(window_losses)),
                        items_per_s=window_items / max(window_time, 1e-9),
                        lr=lr,
                        val_loss=progress.last_val_loss,
                        unit=task.unit,
                    )
                )
                window_losses, window_time, window_items = [], 0.0, 0
            if cfg.eval_every and step % cfg.eval_every == 0:
                if self._evaluate(should_stop) is None:
                    reason = "interrupted"
                    break
                if cfg.patience and progress.evals_since_best >= cfg.patience:
                    reason = "patience"
                    break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self.save()
            reason = self._limit_reached(session_start)
        if reason not in ("interrupted", "patience") and self._needs_final_eval():
            self._evaluate(should_stop)
        self.save()
        return TrainResult(
            reason=reason,
            step=progress.step,
            epoch=progress.epoch,
            out=self.out,
            best_out=self.best_out if progress.best_step is not None else None,
            best_val_loss=progress.best_val_loss,
            last_val_loss=progress.last_val_loss,
            elapsed_s=progress.elapsed_s,
            select_by=getattr(self.task, "select_by", None),
            best_selection=progress.best_selection,
        )

    def _step(self):
        cfg, model, progress = self.config, self.model, self.progress
        loss = self.task.loss_and_grad(progress.epoch, progress.position, self.rng)
        k = model.kernels
        norm = k.clip_global_norm(model.grads, cfg.grad_clip) if cfg.grad_clip else k.global_norm(model.grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            kept = (
                f"the last good checkpoint ({self.out}, step {self.saved_step}) is kept"
                if self.saved_step is not None
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"the {what} became {loss if what == 'loss' else norm} at step "
                f"{progress.step + 1}; training stopped and {kept}; try a lower --lr "
                f"(now {cfg.lr:g}) or a tighter --grad-clip (now {cfg.grad_clip:g})"
            )
        lr = self.schedule.lr(cfg.lr, progress.step, self.total_steps)
        self.optimizer.update(model.params, model.grads, lr)
        self.task.step_done()
        progress.step += 1
        progress.position = self.task.next_position(progress.position)
        if self.task.at_epoch_end(progress.position):
            self._next_epoch()
        return loss, lr

    def _limit_reached(self, session_start):
        cfg, progress = self.config, self.progress
        if cfg.max_steps and progress.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs and progress.epoch >= cfg.max_epochs:
            return "max_epochs"
        if cfg.max_time and time.perf_counter() - session_start >= cfg.max_time:
            return "max_time"
        return None

    def _epoch_float(self):
        return self.progress.epoch + self.task.epoch_fraction(self.progress.position)

    def _needs_final_eval(self):
        return (
            self.task.val_items > 0
            and self.progress.step > 0
            and not (self.config.eval_every and self.progress.step % self.config.eval_every == 0)
        )

    def _evaluate(self, should_stop):
        if not self.task.val_items:
            return False
        progress = self.progress
        score = self.task.evaluate(should_stop)
        if score is None:
            return None
        select_by = getattr(self.task, "select_by", None)
        value = selection_value(select_by, score)
        best = progress.best_selection
        if best is None and select_by is None:
            best = progress.best_val_loss  # a checkpoint from before best_selection was saved
        improved = best is None or value < best
        progress.last_val_loss = score.loss
        if improved:
            progress.best_val_loss, progress.best_step = score.loss, progress.step
            progress.best_selection = value
            progress.evals_since_best = 0
        else:
            progress.evals_since_best += 1
        self.on_event(
            EvalReport(
                step=progress.step,
                epoch=self._epoch_float(),
                elapsed_s=progress.elapsed_s,
                val_loss=score.loss,
                items=score.count,
                improved=improved,
                best_val_loss=progress.best_val_loss,
                unit=score.unit,
                metrics=score.metrics,
                select_by=select_by,
                best_selection=progress.best_selection,
            )
        )
        if improved:
            self.save(best=True)
        return True

    # ------------------------------------------------------------------ checkpoints

    def save(self, best=False):
        path = self.best_out if best else self.out
        progress = dataclasses.asdict(self.progress)
        progress["optimizer_steps"] = self.optimizer.steps
        meta = {
            "task": self.task.name,
            "train": dataclasses.asdict(self.config),
            "progress": progress,
            "rng": self.rng.bit_generator.state,
            **self.task.meta(),
        }
        save_checkpoint(
            path,
            self.model,
            self.task.vocab,
            meta=meta,
            optim=self.optimizer.state,
            state=self.task.carried_state(),
        )
        if not best:
            self.saved_step = self.progress.step
        self.on_event(CheckpointSaved(path=path, step=self.progress.step, best=best))
        return path
