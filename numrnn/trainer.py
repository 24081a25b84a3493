"""Training a character-level language model: the loop, evaluation, checkpoints, resume.

Truncated BPTT over ``batch_size`` contiguous streams of the training text: each step reads
``seq_len`` characters of every stream, carries the hidden state into the next step (the
gradient stops at the chunk's start), clips the global gradient norm and updates the flat
parameter buffer. Evaluation reads the whole validation split with carried state.

Everything that decides the future of a run (weights, optimizer state, step, data position,
carried state, RNG state, best validation loss) is saved in the checkpoint, so a resumed
run continues exactly: same losses, bit-identical weights. Progress is reported through the
``on_event`` callback (events below); nothing here prints.
"""

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from numrnn.checkpoint import best_path, save_checkpoint
from numrnn.data import TextStreams
from numrnn.errors import ConfigError, TrainingDiverged
from numrnn.model import State
from numrnn.configs import TrainConfig  # noqa: F401 (re-exported)
from numrnn.optim import LRSchedule, Optimizer

TASK = "char-lm"
LN2 = math.log(2.0)


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0              # updates made, counting those before any resume
    epoch: int = 0             # completed passes over the training streams
    stream_pos: int = 0        # column of the streams the next batch starts at
    elapsed_s: float = 0.0     # training time over all sessions
    best_val_loss: Optional[float] = None
    best_step: Optional[int] = None
    evals_since_best: int = 0
    last_val_loss: Optional[float] = None


# --------------------------------------------------------------------------- events


@dataclass
class TrainStarted:
    step: int                  # the first step of this session (0 unless resumed)
    total_steps: Optional[int]  # where --max-steps / --max-epochs end the run, if known
    steps_per_epoch: int
    chars_per_step: int
    train_chars: int
    val_chars: int
    parameters: int
    resumed: bool


@dataclass
class StepDone:
    """Every step: its loss (nats/char) and learning rate."""

    step: int
    epoch: float
    loss: float
    lr: float


@dataclass
class StepReport:
    """One log interval: mean train loss (nats/char) over its steps."""

    step: int
    epoch: float               # fractional: epochs completed plus the share of this one
    elapsed_s: float
    train_loss: float
    chars_per_s: float
    lr: float
    val_loss: Optional[float]  # the last evaluation's, if any


@dataclass
class EvalReport:
    step: int
    epoch: float
    elapsed_s: float
    val_loss: float
    chars: int
    improved: bool
    best_val_loss: float

    @property
    def val_bpc(self):
        return self.val_loss / LN2


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
    reason: str                # max_steps | max_epochs | max_time | patience | interrupted
    step: int
    epoch: int
    out: Path
    best_out: Optional[Path]
    best_val_loss: Optional[float]
    last_val_loss: Optional[float]
    elapsed_s: float


STOP_REASONS = {
    "max_steps": "reached --max-steps",
    "max_epochs": "reached --max-epochs",
    "max_time": "reached --max-time",
    "patience": "validation loss stopped improving (--patience)",
    "interrupted": "interrupted",
}


# --------------------------------------------------------------------------- evaluation


def evaluate(model, ids, *, batch_size, seq_len, should_stop=None):
    """Mean next-character loss (nats) over ``ids`` read as ``batch_size`` streams with
    carried state (one stream reads the text exactly as the model would). Returns
    (loss, characters scored), or None when ``should_stop()`` turned true mid-way."""
    ids = np.asarray(ids, dtype=np.int64)
    batch = max(1, min(batch_size, (len(ids) - 1) // max(seq_len, 1)))
    length = len(ids) // batch
    if length < 2:
        raise ConfigError(f"the text has {len(ids)} characters; scoring needs at least 2")
    streams = ids[: batch * length].reshape(batch, length)
    state = model.zero_state(batch)
    total, count = 0.0, 0
    for pos in range(0, length - 1, seq_len):
        if should_stop is not None and should_stop():
            return None
        T = min(seq_len, length - 1 - pos)
        tokens = np.ascontiguousarray(streams[:, pos : pos + T].T)
        targets = np.ascontiguousarray(streams[:, pos + 1 : pos + T + 1].T)
        result = model.loss(tokens, targets, state)
        total += result.loss * T * batch
        count += T * batch
        state = result.state
    return total / count, count


# --------------------------------------------------------------------------- training


def ids_digest(ids):
    """A short fingerprint of a corpus, to notice a resume on different text."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


class Trainer:
    """Trains ``model`` on token ids; saves to ``out`` (latest) and ``out``.best (best val).

    model: a numrnn.model.Model with initialised weights. vocab: its Vocab (saved with it).
    resume: a loaded Checkpoint to continue from (its weights must already be in ``model``).
    """

    def __init__(self, model, vocab, train_ids, val_ids, config, out, *, on_event=None,
                 resume=None, rng=None):
        self.model = model
        self.vocab = vocab
        self.config = config.validate()
        self.out = Path(out)
        self.best_out = best_path(self.out)
        self.on_event = on_event or (lambda event: None)
        self.streams = TextStreams(train_ids, config.batch_size, config.seq_len)
        self.val_ids = None if val_ids is None or len(val_ids) < 2 else np.asarray(val_ids)
        if val_ids is not None and self.val_ids is None:
            self.on_event(Notice(f"the validation split has {len(val_ids)} character(s), too few "
                                 f"to score; training goes on without evaluation (raise --val-frac "
                                 f"or use a longer text)"))
        self.schedule = LRSchedule.parse(config.lr_decay)
        self.total_steps = self._total_steps()
        if self.schedule.needs_horizon and not self.total_steps:
            raise ConfigError(f"--lr-decay {config.lr_decay} needs --max-steps or --max-epochs "
                              f"to know where it ends")
        # The data position is only meaningful on the same training text.
        self.corpus = {"train_chars": int(len(train_ids)), "digest": ids_digest(train_ids)}
        self.optimizer = Optimizer(config.optimizer, model.layout.size, model.dtype, model.kernels)
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.progress = Progress()
        self.state = model.zero_state(config.batch_size)
        self.saved_step = None  # the step of the latest checkpoint in ``out``, if any
        if resume is not None:
            self._restore(resume)

    # ------------------------------------------------------------------ set-up

    def _total_steps(self):
        limits = [self.config.max_steps] if self.config.max_steps else []
        if self.config.max_epochs:
            limits.append(self.config.max_epochs * self.streams.steps_per_epoch)
        return min(limits) if limits else None

    def _restore(self, checkpoint):
        meta = checkpoint.meta
        saved_optimizer = meta.get("train", {}).get("optimizer")
        if saved_optimizer != self.config.optimizer:
            raise ConfigError(f"the checkpoint was trained with --optimizer {saved_optimizer}; "
                              f"resume with the same optimizer")
        self.optimizer.load_state(checkpoint.optim, meta["progress"].get("optimizer_steps", 0))
        fields = {f.name for f in dataclasses.fields(Progress)}
        self.progress = Progress(**{k: v for k, v in meta["progress"].items() if k in fields})
        self.rng.bit_generator.state = meta["rng"]
        if checkpoint.path is not None and Path(checkpoint.path).resolve() == self.out.resolve():
            self.saved_step = self.progress.step
        same_text = meta.get("corpus", {}).get("digest") == self.corpus["digest"]
        saved_batch = checkpoint.state["h"].shape[1] if checkpoint.state else None
        if not same_text:
            self.on_event(Notice("this text differs from the one the checkpoint was trained on; "
                                 "training goes on from the start of an epoch"))
            self._start_epoch()
        elif saved_batch != self.config.batch_size:
            self.on_event(Notice(f"--batch-size changed from {saved_batch} to "
                                 f"{self.config.batch_size}; the data position restarts at "
                                 f"the start of an epoch"))
            self._start_epoch()
        else:
            h = checkpoint.state["h"]
            c = checkpoint.state.get("c")
            self.state = State(h.astype(self.model.dtype, copy=True),
                               None if c is None else c.astype(self.model.dtype, copy=True))
            if self.progress.stream_pos + self.config.seq_len >= self.streams.stream_length:
                self._next_epoch()

    def _start_epoch(self):
        self.progress.stream_pos = 0
        self.state = self.model.zero_state(self.config.batch_size)

    def _next_epoch(self):
        self.progress.epoch += 1
        self._start_epoch()

    # ------------------------------------------------------------------ the loop

    def run(self, should_stop=None):
        """Train until a limit, patience or ``should_stop()``; returns a TrainResult.

        Raises TrainingDiverged (after keeping the last good checkpoints) on a NaN or
        infinite loss or gradient.
        """
        should_stop = should_stop or (lambda: False)
        cfg, model, progress = self.config, self.model, self.progress
        chars_per_step = cfg.seq_len * cfg.batch_size
        self.on_event(TrainStarted(
            step=progress.step, total_steps=self.total_steps,
            steps_per_epoch=self.streams.steps_per_epoch, chars_per_step=chars_per_step,
            train_chars=int(self.streams.streams.size),
            val_chars=0 if self.val_ids is None else int(len(self.val_ids)),
            parameters=model.layout.size, resumed=progress.step > 0))
        session_start = time.perf_counter()
        window_losses, window_time = [], 0.0
        reason = self._limit_reached(session_start)
        while reason is None:
            if should_stop():
                reason = "interrupted"
                break
            started = time.perf_counter()
            loss, lr = self._step()
            spent = time.perf_counter() - started
            window_time += spent
            progress.elapsed_s += spent
            window_losses.append(loss)
            step = progress.step
            self.on_event(StepDone(step=step, epoch=self._epoch_float(), loss=loss, lr=lr))
            if step % cfg.log_every == 0:
                self.on_event(StepReport(
                    step=step, epoch=self._epoch_float(), elapsed_s=progress.elapsed_s,
                    train_loss=float(np.mean(window_losses)),
                    chars_per_s=chars_per_step * len(window_losses) / max(window_time, 1e-9),
                    lr=lr, val_loss=progress.last_val_loss))
                window_losses, window_time = [], 0.0
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
            reason=reason, step=progress.step, epoch=progress.epoch, out=self.out,
            best_out=self.best_out if progress.best_step is not None else None,
            best_val_loss=progress.best_val_loss, last_val_loss=progress.last_val_loss,
            elapsed_s=progress.elapsed_s)

    def _step(self):
        cfg, model, progress = self.config, self.model, self.progress
        tokens, targets = self.streams.batch_at(progress.stream_pos)
        result = model.loss_and_grad(tokens, targets, self.state, train=True, rng=self.rng)
        k = model.kernels
        norm = k.clip_global_norm(model.grads, cfg.grad_clip) if cfg.grad_clip else k.global_norm(model.grads)
        if not (math.isfinite(result.loss) and math.isfinite(norm)):
            what = "loss" if not math.isfinite(result.loss) else "gradient norm"
            kept = (f"the last good checkpoint ({self.out}, step {self.saved_step}) is kept"
                    if self.saved_step is not None else "no checkpoint was written")
            raise TrainingDiverged(
                f"the {what} became {result.loss if what == 'loss' else norm} at step "
                f"{progress.step + 1}; training stopped and {kept}; try a lower --lr "
                f"(now {cfg.lr:g}) or a tighter --grad-clip (now {cfg.grad_clip:g})")
        lr = self.schedule.lr(cfg.lr, progress.step, self.total_steps)
        self.optimizer.update(model.params, model.grads, lr)
        self.state = result.state
        progress.step += 1
        progress.stream_pos += cfg.seq_len
        if progress.stream_pos + cfg.seq_len >= self.streams.stream_length:
            self._next_epoch()
        return result.loss, lr

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
        per_epoch = self.streams.steps_per_epoch
        return self.progress.epoch + (self.progress.stream_pos // self.config.seq_len) / per_epoch

    def _needs_final_eval(self):
        return self.val_ids is not None and self.progress.step > 0 and not (
            self.config.eval_every and self.progress.step % self.config.eval_every == 0)

    def _evaluate(self, should_stop):
        if self.val_ids is None:
            return False
        cfg, progress = self.config, self.progress
        scored = evaluate(self.model, self.val_ids, batch_size=cfg.batch_size,
                          seq_len=cfg.seq_len, should_stop=should_stop)
        if scored is None:
            return None
        val_loss, chars = scored
        improved = progress.best_val_loss is None or val_loss < progress.best_val_loss
        progress.last_val_loss = val_loss
        if improved:
            progress.best_val_loss, progress.best_step = val_loss, progress.step
            progress.evals_since_best = 0
        else:
            progress.evals_since_best += 1
        self.on_event(EvalReport(step=progress.step, epoch=self._epoch_float(),
                                 elapsed_s=progress.elapsed_s, val_loss=val_loss, chars=chars,
                                 improved=improved, best_val_loss=progress.best_val_loss))
        if improved:
            self.save(best=True)
        return True

    # ------------------------------------------------------------------ checkpoints

    def save(self, best=False):
        path = self.best_out if best else self.out
        progress = dataclasses.asdict(self.progress)
        progress["optimizer_steps"] = self.optimizer.steps
        meta = {
            "task": TASK,
            "train": dataclasses.asdict(self.config),
            "progress": progress,
            "rng": self.rng.bit_generator.state,
            "corpus": self.corpus,
        }
        save_checkpoint(path, self.model, self.vocab, meta=meta, optim=self.optimizer.state,
                        state=self.state)
        if not best:
            self.saved_step = self.progress.step
        self.on_event(CheckpointSaved(path=path, step=self.progress.step, best=best))
        return path
