"""Text in, token ids out: checked UTF-8 reading, the character vocabulary, splits.

Every problem with a user's file is a ``DataError`` whose message names the file, says what
is wrong (with the byte offset for bad UTF-8) and what to do.
"""

import unicodedata
from pathlib import Path

import numpy as np

from numrnn.errors import ConfigError, DataError

# A NUL byte in the first block marks a binary file (no text format uses it).
_BINARY_SNIFF_BYTES = 8192
_BOM = "\ufeff"


def read_text(path):
    """The text of a UTF-8 file (a leading byte-order mark dropped), or a clear DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; give the path of a UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the path of a UTF-8 text file inside it")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw:
        raise DataError(f"{path} is empty; it needs some text")
    nul = raw.find(b"\x00", 0, _BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise DataError(f"{path} looks like a binary file (a NUL byte at offset {nul}), not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
            f"convert it first, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt"
        ) from None
    text = text.removeprefix(_BOM)
    if not text:
        raise DataError(f"{path} holds only a byte-order mark; it needs some text")
    return text


def describe_char(char):
    """A character as a user can find it: 'é' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)."""
    name = unicodedata.name(char, "")
    shown = repr(char) if not char.isprintable() or char.isspace() else f"'{char}'"
    return f"{shown} (U+{ord(char):04X}{' ' + name if name else ''})"


class Vocab:
    """The characters a model knows; a character's id is its index in ``chars``."""

    def __init__(self, chars):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise DataError("a vocabulary cannot list a character twice")
        self.chars = chars
        self.index = {char: i for i, char in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        """Every distinct character of ``text``, sorted by code point."""
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def __contains__(self, char):
        return char in self.index

    def encode(self, text, *, drop_unknown=False, what="the text"):
        """Token ids (int64) of ``text``.

        A character outside the vocabulary raises a DataError naming it and its position,
        unless ``drop_unknown``, which skips such characters. Returns (ids, dropped count).
        """
        index = self.index
        ids = []
        dropped = 0
        for position, char in enumerate(text):
            token = index.get(char)
            if token is None:
                if not drop_unknown:
                    raise DataError(
                        f"{what} has the character {describe_char(char)} at position {position}, "
                        f"which the model never saw; remove it or use --drop-unknown"
                    )
                dropped += 1
                continue
            ids.append(token)
        return np.asarray(ids, dtype=np.int64), dropped

    def decode(self, ids):
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)


def split_by_position(ids, val_frac):
    """(train, validation): the last ``val_frac`` of the ids is validation (at least 1 id)."""
    if not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be between 0 and 1 (exclusive), not {val_frac}")
    n_val = max(1, int(round(len(ids) * val_frac)))
    if n_val >= len(ids):
        raise DataError(f"the text has only {len(ids)} characters: too short to split off "
                        f"{val_frac:.0%} for validation")
    return ids[:-n_val], ids[-n_val:]


class TextStreams:
    """Time-major batches for truncated BPTT: ``batch`` contiguous streams read in step.

    The ids are cut into ``batch`` equal streams (the tail that does not fill a stream is
    dropped); step ``pos`` of an epoch reads columns ``pos .. pos+seq_len`` of every stream, so
    stream b's next batch continues where its last one stopped and the hidden state can be
    carried across batches.
    """

    def __init__(self, ids, batch, seq_len, *, what="the training text"):
        if batch < 1 or seq_len < 1:
            raise ConfigError("batch_size and seq_len must be at least 1")
        length = len(ids) // batch
        if length < seq_len + 1:
            need = batch * (seq_len + 1)
            raise DataError(
                f"{what} has {len(ids)} characters, fewer than one batch needs "
                f"(batch size {batch} x (sequence length {seq_len} + 1) = {need}); "
                f"use a smaller --batch-size or --seq-len, or a longer text")
        self.streams = np.ascontiguousarray(np.asarray(ids, dtype=np.int64)[: batch * length]
                                            .reshape(batch, length))
        self.batch = batch
        self.seq_len = seq_len
        # The last column is only ever a target.
        self.steps_per_epoch = (length - 1) // seq_len

    @property
    def stream_length(self):
        return self.streams.shape[1]

    def batch_at(self, pos, seq_len=None):
        """tokens (T, B) and targets (T, B) starting at column ``pos`` of every stream."""
        T = seq_len or self.seq_len
        window = self.streams[:, pos : pos + T + 1]
        if window.shape[1] != T + 1:
            raise IndexError(f"position {pos} + {T} runs past the streams' end")
        return np.ascontiguousarray(window[:, :-1].T), np.ascontiguousarray(window[:, 1:].T)
