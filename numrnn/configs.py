"""Configuration dataclasses and name lists, importable without numpy or numba.

The CLI builds these from its options (option names are the field names with dashes) and
reads the name lists for its choices, so `numrnn --help` loads nothing heavy. Each config's
``validate()`` raises a ConfigError naming the field.
"""

import math
import re
from dataclasses import dataclass

from numrnn.cells import CELL_TABLE, CELLS
from numrnn.errors import ConfigError

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
# The losses `numrnn gradcheck` checks, one per topology (numrnn.gradcheck says what each is).
GRADCHECK_LOSSES = (
    "lm",
    "classify",
    "classify-bi",
    "one-to-one",
    "generate",
    "translate",
    "translate-dot",
    "translate-general",
    "translate-additive",
)
# How a conditioned generator reads its label (numrnn.layers.Conditioning): not at all, as
# its initial state, added to layer 0's input at every step, or both.
CONDITIONS = ("none", "state", "input", "both")
# How a translator's decoder reads the encoder's outputs (numrnn.layers.Attention): not at all
# (only through its initial state), Luong's dot or general score, or Bahdanau's additive one.
ATTENTIONS = ("none", "dot", "general", "additive")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. ``embed=0`` feeds one-hot vectors; ``output_size=0`` means vocab_size."""

    cell: str = "lstm"
    vocab_size: int = 65
    hidden: int = 256
    layers: int = 2
    embed: int = 64
    output_size: int = 0
    dropout: float = 0.0
    bidirectional: bool = False  # a second stack reads each sequence backwards (classifiers)
    condition: str = "none"  # how a label conditions the model (CONDITIONS)
    condition_classes: int = 0  # how many labels a conditioned model knows (0 when none)
    # Translators (an encoder-decoder): the encoder is the stack above (vocab_size, embed,
    # hidden, layers, bidirectional); the decoder has output_size characters, the same cell,
    # embedding width and layers, and decoder_hidden units (0: the encoder's output width).
    attention: str = "none"
    decoder_hidden: int = 0

    def validate(self):
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        for name in ("vocab_size", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("embed", "output_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"condition must be one of {', '.join(CONDITIONS)}, not {self.condition!r}")
        if self.condition == "none" and self.condition_classes != 0:
            raise ConfigError(
                f"condition_classes must be 0 when condition is none, not {self.condition_classes}"
            )
        if self.condition != "none" and self.condition_classes < 1:
            raise ConfigError(
                f"condition_classes must be at least 1 when condition is "
                f"{self.condition}, not {self.condition_classes}"
            )
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}")
        if self.decoder_hidden < 0:
            raise ConfigError(f"decoder_hidden must be 0 or more, not {self.decoder_hidden}")
        if self.condition != "none" and self.bidirectional:
            raise ConfigError(
                "a conditioned generator reads left to right; condition needs bidirectional off"
            )
        return self

    @property
    def gate_width(self):
        return CELL_TABLE[self.cell].gates * self.hidden

    @property
    def outputs(self):
        return self.output_size or self.vocab_size

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def decoder_width(self):
        """A translator's decoder units."""
        return self.decoder_hidden or self.directions * self.hidden

    def layer_input_width(self, layer):
        if layer > 0:
            return self.directions * self.hidden
        return self.embed or self.vocab_size


@dataclass(frozen=True)
class TrainConfig:
    """How to train. A limit of 0 means no limit; ``grad_clip`` 0 turns clipping off."""

    seq_len: int = 128
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 2e-3
    lr_decay: str = "none"
    grad_clip: float = 5.0
    max_steps: int = 0
    max_epochs: int = 50
    max_time: float = 0.0  # seconds of this session
    eval_every: int = 250  # steps; 0 evaluates only at the end
    checkpoint_every: int = 250
    log_every: int = 50
    patience: int = 0  # evaluations without improvement before stopping; 0 = never
    val_frac: float = 0.05
    test_frac: float = 0.0  # a held-out test split (tasks with labelled examples)
    seed: int = 0

    def validate(self):
        for name in ("seq_len", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in (
            "max_steps",
            "max_epochs",
            "max_time",
            "eval_every",
            "checkpoint_every",
            "patience",
            "grad_clip",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, not {self.lr}")
        if not 0.0 <= self.val_frac < 1.0:
            raise ConfigError(f"val_frac must be in [0, 1), not {self.val_frac}")
        if not 0.0 <= self.test_frac < 1.0 or self.val_frac + self.test_frac >= 1.0:
            raise ConfigError(
                f"test_frac must be in [0, 1) and leave examples to train on "
                f"(val_frac {self.val_frac} + test_frac {self.test_frac})"
            )
        LRSchedule.parse(self.lr_decay)
        return self


@dataclass(frozen=True)
class SampleConfig:
    """How to generate. ``argmax`` ignores temperature, top-k and top-p."""

    length: int = 1000  # characters generated after the prime
    temperature: float = 1.0  # > 0; below 1 sharpens the distribution, above 1 flattens it
    top_k: int = 0  # keep the k most probable characters; 0 = off
    top_p: float = 1.0  # keep the fewest most probable whose sum reaches p; 1.0 = off
    argmax: bool = False  # greedy: always the most probable character
    stop: str = ""  # end right after this string is generated; "" = never
    chunk: int = 256  # characters per compiled call (streaming granularity)

    def validate(self):
        if self.length < 0:
            raise ConfigError(f"length must be 0 or more, not {self.length}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a number greater than 0, not {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be 0 (off) or more, not {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), not {self.top_p}")
        if self.chunk < 1:
            raise ConfigError(f"chunk must be at least 1, not {self.chunk}")
        return self


# --------------------------------------------------------------------------- schedules

SCHEDULE_HELP = (
    "none (constant), cosine[:FLOOR] and linear[:FLOOR] (from --lr down to FLOOR, default 0, "
    "at the last step, so they need --max-steps or --max-epochs), step:EVERY:FACTOR "
    "(multiply by FACTOR every EVERY steps, e.g. step:1000:0.5)"
)
_NUMBER = r"[0-9.]+(?:[eE][-+]?[0-9]+)?"


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate as a pure function of the step, so a resumed run gets the same one."""

    kind: str = "none"
    floor: float = 0.0
    every: int = 0
    factor: float = 1.0

    @classmethod
    def parse(cls, spec):
        text = (spec or "none").strip().lower()
        if text in ("none", "constant"):
            return cls()
        match = re.fullmatch(rf"(cosine|linear)(?::({_NUMBER}))?", text)
        if match:
            return cls(kind=match[1], floor=float(match[2] or 0.0))
        match = re.fullmatch(rf"step:([0-9]+):({_NUMBER})", text)
        if match and int(match[1]) > 0 and 0 < float(match[2]) <= 1:
            return cls(kind="step", every=int(match[1]), factor=float(match[2]))
        raise ConfigError(f"lr_decay {spec!r} is not a schedule I know; use {SCHEDULE_HELP}")

    @property
    def needs_horizon(self):
        return self.kind in ("cosine", "linear")

    def lr(self, base_lr, step, total_steps=None):
        """The learning rate of update number ``step`` (0 for the first)."""
        if self.kind == "none":
            return base_lr
        if self.kind == "step":
            return base_lr * self.factor ** (step // self.every)
        if not total_steps:
            raise ConfigError(f"lr_decay {self.kind} needs --max-steps or --max-epochs to know where it ends")
        progress = min(step / total_steps, 1.0)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return self.floor + (base_lr - self.floor) * shape
