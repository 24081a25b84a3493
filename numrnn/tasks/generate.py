"""One-to-many: a character model conditioned on a label (a name for a language).

    label -> Conditioning (a learnt initial state per label, a learnt per-label row added to
    layer 0's gate pre-activations at every step, or both: ``ModelConfig.condition``)
    [START] c1 c2 ... cn  -> embedding or one-hot -> recurrent stack -> head
    targets c1 c2 ... cn [END]

The vocabulary is the training names' characters (sorted by code point), then the two
special tokens: END (U+0003, "end of text"), then START (U+0002, "start of text"), so
START is the last id. Both are control characters that the data may not hold (a DataError
names the example). START is only ever an input and END only ever a target, so the head
outputs every id but START (``output_size = vocab_size - 1``): generation can never draw a
START, and a sample ends when it draws END.

Batches are right-padded (targets -1 at padding: the loss ignores them, and the recurrence
is causal, so padding changes no loss or gradient), of names of similar length, shuffled per
(seed, epoch) (``numrnn.tasks.examples``), so a resumed run continues exactly.
Evaluation is the validation loss per character, the END target counted as a character.
"""

import numpy as np

from numrnn.data import Vocab, describe_char
from numrnn.errors import DataError
from numrnn.tasks.examples import ExamplesTask
from numrnn.trainer import characters_score

NAME = "generate"
UNIT = "chars"
START = "\x02"  # ASCII STX: the input of a sequence's first step
END = "\x03"  # ASCII ETX: the target after its last character
EVAL_BATCH = 512  # names per forward call when scoring (no gradients: wider is faster)


def check_reserved(texts, what="the data"):
    """Refuse texts that hold the START or END character (reserved for the model)."""
    for text in texts:
        for char in (START, END):
            if char in text:
                raise DataError(
                    f"{what} has the control character {describe_char(char)} in "
                    f"{text!r}; it is reserved for the start and end of a sequence: "
                    f"remove it"
                )


def build_vocab(texts):
    """The training texts' characters (sorted), then END, then START (the last id)."""
    check_reserved(texts)
    return Vocab(sorted(set("".join(texts))) + [END, START])


def output_size(vocab):
    """The head's width: every id but START (the last one)."""
    return len(vocab) - 1


def special_ids(vocab):
    """(start id, end id) of a generator's vocabulary; a DataError if it lacks them."""
    if START not in vocab or END not in vocab or vocab.index[START] != len(vocab) - 1:
        raise DataError("this vocabulary has no start and end tokens; it is not a generator's")
    return vocab.index[START], vocab.index[END]


def sequences(encoded, rows, start, end):
    """tokens (T+1, B), targets (T+1, B) and labels (B) of the names ``rows`` of ``encoded``
    (an EncodedTexts), T the longest name: tokens are START then the name (padding 0),
    targets the name then END (padding -1, ignored by the loss)."""
    names, labels, lengths = encoded.batch(rows)
    T, B = names.shape
    tokens = np.zeros((T + 1, B), np.intp)
    tokens[0] = start
    tokens[1:] = names
    targets = np.full((T + 1, B), -1, np.intp)
    targets[:T] = names
    steps = np.arange(T + 1)[:, None]
    targets[steps > lengths[None, :]] = -1
    targets[lengths, np.arange(B)] = end
    return tokens, targets, labels


def steps_of(targets):
    """(B) each row's real steps in a batch of ``sequences``: its name and END."""
    return np.count_nonzero(targets >= 0, axis=0)


def score(model, encoded, rows, start, end, *, should_stop=None, batch=EVAL_BATCH):
    """Mean loss per character (nats; END counted) over the names ``rows``, and the characters
    scored; None when should_stop() turned true mid-way."""
    rows = np.asarray(rows)
    rows = rows[np.argsort(-encoded.lengths[rows], kind="stable")]  # longest first: packed steps
    total, count = 0.0, 0
    for begin in range(0, len(rows), batch):
        if should_stop is not None and should_stop():
            return None
        tokens, targets, labels = sequences(encoded, rows[begin : begin + batch], start, end)
        chars = int(np.count_nonzero(targets >= 0))
        total += model.loss(tokens, targets, labels=labels, lengths=steps_of(targets)).loss * chars
        count += chars
    return (total / count if count else float("nan")), count


class GenerateTask(ExamplesTask):
    """The trainer's task for a label-conditioned generator (see ``numrnn.trainer``)."""

    name = NAME
    unit = UNIT

    def __init__(self, model, vocab, data, split, *, batch_size, seed, split_meta=None):
        """data: a LabelledData; split: (train, val, test) index arrays into it; split_meta:
        what recreates the split (the data's path), saved in checkpoints. Validation names
        with a character the vocabulary lacks are left out (``val_skipped``): a loss over a
        name with a character dropped would be a loss over another name."""
        super().__init__(model, vocab, data, split, batch_size=batch_size, seed=seed, split_meta=split_meta)
        self.start, self.end = special_ids(vocab)
        whole = self.encoded.lengths == np.asarray([len(text) for text in data.texts])
        if not whole[self.train_rows].all():
            bad = self.train_rows[~whole[self.train_rows]][0]
            raise DataError(
                f"the training name {data.texts[bad]!r} has characters the model's "
                f"vocabulary lacks; train on the data the model was trained on"
            )
        self.val_skipped = int(np.count_nonzero(~whole[self.val_rows]))
        self.val_rows = self.val_rows[whole[self.val_rows]]

    # ------------------------------------------------------------------ sizes

    @property
    def items_per_step(self):
        """Characters per step on average (each name's END counted)."""
        mean = float(np.mean(self.encoded.lengths[self.train_rows] + 1))
        return round(mean * min(self.batch_size, len(self.train_rows)))

    @property
    def train_items(self):
        return int(np.sum(self.encoded.lengths[self.train_rows] + 1))

    @property
    def val_items(self):
        return int(np.sum(self.encoded.lengths[self.val_rows] + 1))

    def items_at(self, epoch, position):
        rows = self.epoch_batches(epoch)[position]
        return int(np.sum(self.encoded.lengths[rows] + 1))

    # ------------------------------------------------------------------ batches

    def batch_at(self, epoch, position):
        """(tokens, targets, labels) of the batch at ``position`` of ``epoch``."""
        return sequences(self.encoded, self.epoch_batches(epoch)[position], self.start, self.end)

    def loss_and_grad(self, epoch, position, rng):
        tokens, targets, labels = self.batch_at(epoch, position)
        return self.model.loss_and_grad(
            tokens, targets, labels=labels, lengths=steps_of(targets), train=True, rng=rng, state_grad=False
        ).loss

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, should_stop=None):
        scored = score(self.model, self.encoded, self.val_rows, self.start, self.end, should_stop=should_stop)
        return characters_score(scored, UNIT)

    # ------------------------------------------------------------------ checkpoints

    def meta(self):
        meta = self.data_meta()
        meta["split"]["val_skipped"] = self.val_skipped
        meta["generate"] = {"condition": self.model.config.condition, "start": START, "end": END}
        return meta
