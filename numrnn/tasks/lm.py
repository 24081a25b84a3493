"""Many-to-many: a character-level language model (next-character prediction).

Truncated BPTT over ``batch_size`` contiguous streams of the training text: each step reads
``seq_len`` characters of every stream and carries the hidden state into the next step (the
gradient stops at the chunk's start). Evaluation reads the whole validation split with
carried state. The data position is the streams' column; the carried state is saved in
checkpoints, so a resumed run continues exactly.
"""

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from numrnn.data import TextStreams
from numrnn.errors import ConfigError, DataError
from numrnn.model import State
from numrnn.trainer import LN2, Notice, characters_score

NAME = "char-lm"
UNIT = "chars"
SCORE_CHUNK = 256  # characters per forward call when scoring a text; the state carries across
DIGEST_CHUNK = 1 << 20  # ids per piece of the corpus digest


def ids_digest(ids):
    """A short fingerprint of a corpus, to notice a resume on different text."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), DIGEST_CHUNK):  # int64 a chunk at a time: a long text's ids
        digest.update(np.ascontiguousarray(ids[start : start + DIGEST_CHUNK], dtype=np.int64))
    return digest.hexdigest()[:16]


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


class LanguageModelTask:
    """The trainer's task for a character language model (see ``numrnn.trainer``)."""

    name = NAME
    unit = UNIT

    def __init__(self, model, vocab, train_ids, val_ids, *, batch_size, seq_len, on_event=None):
        self.model = model
        self.vocab = vocab
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.streams = TextStreams(train_ids, batch_size, seq_len)
        self.val_ids = None if val_ids is None or len(val_ids) < 2 else np.asarray(val_ids)
        if val_ids is not None and self.val_ids is None and on_event is not None:
            on_event(
                Notice(
                    f"the validation split has {len(val_ids)} character(s), too few "
                    f"to score; training goes on without evaluation (raise --val-frac "
                    f"or use a longer text)"
                )
            )
        # The data position is only meaningful on the same training text.
        self.corpus = {"train_chars": len(train_ids), "digest": ids_digest(train_ids)}
        self.state = model.zero_state(batch_size)
        self._next_state = None

    # ------------------------------------------------------------------ sizes

    @property
    def steps_per_epoch(self):
        return self.streams.steps_per_epoch

    @property
    def items_per_step(self):
        return self.seq_len * self.batch_size

    @property
    def train_items(self):
        return int(self.streams.streams.size)

    @property
    def val_items(self):
        return 0 if self.val_ids is None else len(self.val_ids)

    def items_at(self, epoch, position):
        return self.items_per_step

    # ------------------------------------------------------------------ batches

    def start_epoch(self, epoch):
        self.state = self.model.zero_state(self.batch_size)

    def next_position(self, position):
        return position + self.seq_len

    def at_epoch_end(self, position):
        # The last column is only ever a target.
        return position + self.seq_len >= self.streams.stream_length

    def epoch_fraction(self, position):
        return (position // self.seq_len) / self.steps_per_epoch

    def loss_and_grad(self, epoch, position, rng):
        tokens, targets = self.streams.batch_at(position)
        # Truncated BPTT: the gradient stops at the chunk's start, so its state's is not wanted.
        result = self.model.loss_and_grad(tokens, targets, self.state, train=True, rng=rng, state_grad=False)
        self._next_state = result.state
        return result.loss

    def step_done(self):
        self.state = self._next_state

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, should_stop=None):
        scored = evaluate(
            self.model,
            self.val_ids,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            should_stop=should_stop,
        )
        return characters_score(scored, UNIT)

    # ------------------------------------------------------------------ checkpoints

    def meta(self):
        return {"corpus": self.corpus}

    def carried_state(self):
        return self.state

    def resume(self, checkpoint, position):
        """None when the saved position and carried state apply, else why they do not."""
        same_text = checkpoint.meta.get("corpus", {}).get("digest") == self.corpus["digest"]
        saved_batch = checkpoint.state["h"].shape[1] if checkpoint.state else None
        if not same_text:
            return (
                "this text differs from the one the checkpoint was trained on; "
                "training goes on from the start of an epoch"
            )
        if saved_batch != self.batch_size:
            return (
                f"--batch-size changed from {saved_batch} to {self.batch_size}; the data "
                f"position restarts at the start of an epoch"
            )
        h, c = checkpoint.state["h"], checkpoint.state.get("c")
        dtype = self.model.dtype
        self.state = State(h.astype(dtype, copy=True), None if c is None else c.astype(dtype, copy=True))
        return None


# --------------------------------------------------------------------------- scoring a text


@dataclass
class TextScore:
    loss: float  # mean next-character cross-entropy, nats/char
    chars: int  # characters predicted (the first character has no prediction)
    unknown_chars: int  # characters outside the vocabulary, dropped from the stream

    @property
    def bpc(self):
        return self.loss / LN2

    @property
    def perplexity(self):
        return math.exp(self.loss)

    def to_dict(self):
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "unknown_chars": self.unknown_chars,
        }


def score_text(model, vocab, text, *, what="the text"):
    """The model's sequential loss on ``text``: one stream from a zero state, state carried.

    Characters outside ``vocab`` are dropped from the stream and counted.
    """
    ids, unknown = vocab.encode(text, drop_unknown=True)
    if len(ids) < 2:
        raise DataError(
            f"{what} has {len(ids)} character(s) the model knows "
            f"({unknown} unknown dropped); scoring needs at least 2"
        )
    loss, chars = evaluate(model, ids, batch_size=1, seq_len=SCORE_CHUNK)
    return TextScore(loss=loss, chars=chars, unknown_chars=unknown)
