"""What the tasks over labelled examples share (``classify``, ``generate``): texts encoded as
token ids, batches of similar length shuffled per (seed, epoch), and the trainer-task plumbing
that follows from them (positions, resume, the data's metadata).
"""

import numpy as np

BUCKET_BATCHES = 16  # batches whose examples are sorted by length together (see batch_order)


def encode_texts(vocab, texts):
    """(ids, offsets, lengths, dropped): every text's ids back to back, unknown characters
    dropped; text i is ids[offsets[i] : offsets[i] + lengths[i]]; dropped maps each unknown
    character to how often it was dropped."""
    index = vocab.index
    ids, lengths, dropped = [], np.zeros(len(texts), np.int64), {}
    for i, text in enumerate(texts):
        known = [index[char] for char in text if char in index]
        if len(known) != len(text):
            for char in text:
                if char not in index:
                    dropped[char] = dropped.get(char, 0) + 1
        ids.extend(known)
        lengths[i] = len(known)
    offsets = np.zeros(len(texts), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.asarray(ids, np.int64), offsets, lengths, dropped


class EncodedTexts:
    """Texts as token ids, with their labels (-1: none), cut into padded time-major batches."""

    def __init__(self, vocab, texts, labels=None):
        self.ids, self.offsets, self.lengths, self.dropped = encode_texts(vocab, texts)
        self.labels = np.full(len(texts), -1, np.int64) if labels is None else np.asarray(labels, np.int64)

    def __len__(self):
        return len(self.lengths)

    def batch(self, rows):
        """tokens (T, B) right-padded with 0, targets (B), lengths (B) of the examples ``rows``;
        T is the longest of them. Every row must have at least one known character."""
        lengths = self.lengths[rows]
        T = int(lengths.max())
        steps = np.arange(T)[:, None]
        real = steps < lengths[None, :]  # (T, B)
        # One gather for the whole batch: position t of row b, clamped inside the ids.
        at = np.minimum(self.offsets[rows][None, :] + steps, max(len(self.ids) - 1, 0))
        tokens = np.where(real, self.ids[at] if len(self.ids) else 0, 0).astype(np.intp)
        return tokens, self.labels[rows], lengths


def batch_order(lengths, batch_size, rng, bucket=BUCKET_BATCHES):
    """The batches of one epoch: a list of index arrays into ``lengths``.

    A random permutation is cut into groups of ``bucket`` batches; each group is sorted by
    length before it is cut into batches, and the batches are shuffled, so a batch holds
    examples of similar length (less padding to compute) while every epoch still sees a new
    random grouping. bucket=1 gives plain shuffled batches. Each batch lists its longest
    example first, so the recurrent steps compute only the rows still running.
    """
    order = rng.permutation(len(lengths))
    group = batch_size * max(bucket, 1)
    batches = []
    for start in range(0, len(order), group):
        members = order[start : start + group]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches += [members[i : i + batch_size][::-1] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class ExamplesTask:
    """The trainer-task methods (``numrnn.trainer``) of a task over labelled examples: one step
    is one batch of ``batch_order``, drawn as a pure function of (seed, epoch), so a resumed
    run draws the same batches; there is no state carried between batches. Subclasses give
    the sizes in their unit, the loss and the evaluation."""

    def __init__(self, model, vocab, data, split, *, batch_size, seed, split_meta=None, encoded=None):
        """data: a LabelledData; split: (train, val, test) index arrays into it; split_meta:
        what recreates the split (the data's path), saved in checkpoints. encoded: the
        EncodedTexts whose lengths group the batches (default: the data's texts and labels)."""
        self.model = model
        self.vocab = vocab
        self.data = data
        self.train_rows, self.val_rows, self.test_rows = (np.asarray(s, np.int64) for s in split)
        self.encoded = EncodedTexts(vocab, data.texts, data.labels) if encoded is None else encoded
        self.batch_size = batch_size
        self.seed = seed
        self.split_meta = split_meta or {}
        self._batches = None
        self._epoch = None

    @property
    def steps_per_epoch(self):
        return -(-len(self.train_rows) // self.batch_size)

    def epoch_batches(self, epoch):
        """The batches of ``epoch``: index arrays into the data's examples."""
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            lengths = self.batch_lengths()[self.train_rows]
            self._batches = [self.train_rows[b] for b in batch_order(lengths, self.batch_size, rng)]
            self._epoch = epoch
        return self._batches

    def batch_lengths(self):
        """Per example, the length that groups it with similar ones in a batch."""
        return self.encoded.lengths

    def start_epoch(self, epoch):
        self.epoch_batches(epoch)

    def next_position(self, position):
        return position + 1

    def at_epoch_end(self, position):
        return position >= self.steps_per_epoch

    def epoch_fraction(self, position):
        return position / self.steps_per_epoch

    def step_done(self):
        pass

    def data_meta(self):
        """The labels, the data's fingerprint and path, and the split's sizes."""
        return {
            "labels": list(self.data.label_names),
            "data": {
                "digest": self.data.digest,
                "source": self.data.source,
                "examples": len(self.data),
                "blank_lines": self.data.blank_lines,
                **self.split_meta,
            },
            "split": {"train": len(self.train_rows), "val": len(self.val_rows), "test": len(self.test_rows)},
        }

    def carried_state(self):
        return None

    def resume(self, checkpoint, position):
        """None when the saved position applies, else why it does not."""
        if checkpoint.meta.get("data", {}).get("digest") != self.data.digest:
            return (
                "these examples differ from the ones the checkpoint was trained on; "
                "training goes on from the start of an epoch"
            )
        if checkpoint.meta.get("train", {}).get("batch_size") != self.batch_size:
            return (
                f"--batch-size changed to {self.batch_size}; the data position restarts "
                f"at the start of an epoch"
            )
        return None
