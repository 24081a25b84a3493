"""Text in, token ids out: checked UTF-8 reading, the character vocabulary, splits, and
labelled lines for classification (a folder of <label>.txt files or a TSV) with a stratified split.

Every problem with a user's file is a ``DataError`` whose message names the file, says what
is wrong (with the byte offset for bad UTF-8) and what to do.
"""

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass, field
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


# Text is turned into ids a chunk of characters at a time, as numpy arrays of code points: fast
# (no Python per character) and within a few MB of extra memory however long the text.
_CHUNK_CHARS = 1 << 20
_CODE_POINTS = 0x110000


def _code_point_chunks(text):
    """(start, code points (uint32) of text[start:start + _CHUNK_CHARS]) for each chunk."""
    for start in range(0, len(text), _CHUNK_CHARS):
        # surrogatepass: a str from the command line may hold lone surrogates; they are
        # characters here like any other (and in no vocabulary read from UTF-8).
        chunk = text[start : start + _CHUNK_CHARS].encode("utf-32-le", "surrogatepass")
        yield start, np.frombuffer(chunk, dtype=np.uint32)


def distinct_chars(text):
    """Every distinct character of ``text``, sorted by code point."""
    seen = np.zeros(_CODE_POINTS, dtype=bool)
    for _, points in _code_point_chunks(text):
        seen[points] = True
    return [chr(point) for point in np.flatnonzero(seen)]


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
        self._table = None  # code point -> id (-1: unknown), built on first encode

    @classmethod
    def from_text(cls, text):
        """Every distinct character of ``text``, sorted by code point."""
        return cls(distinct_chars(text))

    @property
    def compact_dtype(self):
        """The smallest unsigned integer type that holds every id (uint8 up to 256 characters):
        a long text's ids in 1 or 2 bytes a character instead of 8."""
        for dtype in (np.uint8, np.uint16):
            if len(self.chars) <= np.iinfo(dtype).max + 1:
                return np.dtype(dtype)
        return np.dtype(np.int32)

    def unknown_chars(self, text):
        """The distinct characters of ``text`` outside the vocabulary, sorted by code point."""
        return [char for char in distinct_chars(text) if char not in self.index]

    def _lookup(self):
        if self._table is None:
            points = np.array([ord(char) for char in self.chars], dtype=np.int64)
            table = np.full(int(points.max(initial=0)) + 2, -1, dtype=np.int32)
            table[points] = np.arange(len(points))
            self._table = table  # its last entry, past every known code point, is -1
        return self._table

    def __len__(self):
        return len(self.chars)

    def __contains__(self, char):
        return char in self.index

    def encode(self, text, *, drop_unknown=False, what="the text", compact=False):
        """Token ids of ``text``: int64, or with ``compact`` the vocabulary's
        ``compact_dtype`` (a long corpus's ids in 1 byte a character).

        A character outside the vocabulary raises a DataError naming it and its position,
        unless ``drop_unknown``, which skips such characters. Returns (ids, dropped count).
        """
        table = self._lookup()
        past = len(table) - 1  # code points past the table map to its last entry, -1
        ids = np.empty(len(text), dtype=self.compact_dtype if compact else np.int64)
        filled = 0
        for start, points in _code_point_chunks(text):
            chunk = table[np.minimum(points, past)]
            unknown = chunk < 0
            if unknown.any():
                if not drop_unknown:
                    position = start + int(np.argmax(unknown))
                    raise DataError(
                        f"{what} has the character {describe_char(text[position])} at position "
                        f"{position}, which the model never saw; remove it or use --drop-unknown"
                    )
                chunk = chunk[~unknown]
            ids[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        dropped = len(text) - filled
        return (ids[:filled].copy() if dropped else ids), dropped

    def decode(self, ids):
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)


def split_by_position(ids, val_frac):
    """(train, validation): the last ``val_frac`` of the ids is validation (at least 1 id)."""
    if not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be between 0 and 1 (exclusive), not {val_frac}")
    n_val = max(1, int(round(len(ids) * val_frac)))
    if n_val >= len(ids):
        raise DataError(
            f"the text has only {len(ids)} characters: too short to split off {val_frac:.0%} for validation"
        )
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
                f"use a smaller --batch-size or --seq-len, or a longer text"
            )
        # The ids keep their type (a long corpus's are 1-byte, ``Vocab.encode(compact=True)``):
        # a view, not a copy; batches convert to intp.
        self.streams = np.ascontiguousarray(np.asarray(ids)[: batch * length].reshape(batch, length))
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
        return (
            np.ascontiguousarray(window[:, :-1].T, dtype=np.intp),
            np.ascontiguousarray(window[:, 1:].T, dtype=np.intp),
        )


# ---------------------------------------------------------------------------------------------
# Labelled lines (many-to-one classification): a folder of <label>.txt files or a TSV file.
# ---------------------------------------------------------------------------------------------

# Universal newlines, as Python's text mode reads them: CRLF (Windows), LF, and a lone CR (old
# Mac files), so a CRLF file never leaves a '\r' on its examples or labels.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# How much of a bad line an error message shows.
_SHOW_CHARS = 60
# Hex digits of the data digest (64 bits: plenty to notice a resume on different data).
_DIGEST_HEX = 16
_DIGEST_VERSION = b"numrnn-labelled-v1\x00"
_EXPECTED = (
    "a folder of <label>.txt files (one example per line, e.g. names/Greek.txt) "
    "or a UTF-8 TSV file of text<TAB>label lines"
)


@dataclass
class LabelledData:
    """Examples and their labels, as read by ``read_labelled``.

    ``labels[i]`` is the id of ``texts[i]``'s label, an index into ``label_names`` (sorted by
    code point, so ids do not depend on file order). ``digest`` fingerprints the label names and
    the (text, label) sequence in order: a checkpoint records it with its split's indices, so a
    resume on different data (or the same data reordered) is noticed. Duplicate examples are
    kept as they are (see ``duplicates``/``conflicts``); only blank lines are skipped.
    """

    texts: list  # list[str], one example each, surrounding whitespace stripped
    labels: np.ndarray  # (N,) int64 label ids
    label_names: list  # list[str], sorted; label id = index
    blank_lines: int  # whitespace-only lines skipped
    digest: str  # short hex fingerprint of label_names, texts and labels
    source: str  # "folder" or "tsv"
    ignored_files: list = field(default_factory=list)  # folder entries not read (names only)

    def __len__(self):
        return len(self.texts)

    def counts(self):
        """Examples per label id, (C,) int64."""
        return np.bincount(self.labels, minlength=len(self.label_names)).astype(np.int64)

    def duplicates(self):
        """How many examples repeat an earlier (text, label) pair exactly."""
        return len(self.texts) - len(set(zip(self.texts, self.labels.tolist())))

    def conflicts(self):
        """How many distinct texts occur under more than one label (no model can get all right)."""
        seen = {}
        for text, label in zip(self.texts, self.labels.tolist()):
            seen.setdefault(text, set()).add(label)
        return sum(1 for labels in seen.values() if len(labels) > 1)


def read_labelled(path):
    """Labelled examples from a folder of ``<label>.txt`` files or a ``text<TAB>label`` TSV file.

    A folder: every ``*.txt`` file directly inside it is one label, named by the file's stem,
    one example per line; other files, sub-folders and hidden files (``.name``) are ignored and
    listed in ``ignored_files``. A file: a UTF-8 TSV, one ``text<TAB>label`` per line.

    Each file is read with ``read_text`` (UTF-8 checked, byte-order mark dropped). Lines end at
    LF, CRLF or a lone CR. Whitespace-only lines are skipped and counted in ``blank_lines``.
    Surrounding whitespace of each example and label is stripped: it is an artefact of how the
    files were made, not part of the example (the names data has 'Park ' and 'See ' with a
    trailing space in Korean.txt and Chinese.txt only, which a model would learn as a label
    cue), and it is invisible in the file. Inner whitespace is kept.

    Raises DataError naming the path (and line number) for: a missing path, a folder with no
    .txt files, a folder with one label only, a label file with no examples, a file that is not
    UTF-8 or looks binary, a malformed TSV line, a TSV with fewer than two labels.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give {_EXPECTED}")
    if path.is_dir():
        texts, label_ids, names, blank, ignored = _read_label_folder(path)
        source = "folder"
    else:
        texts, label_ids, names, blank = _read_label_tsv(path)
        ignored = []
        source = "tsv"
    labels = np.asarray(label_ids, dtype=np.int64)
    return LabelledData(
        texts=texts,
        labels=labels,
        label_names=names,
        blank_lines=blank,
        digest=_labelled_digest(texts, labels, names),
        source=source,
        ignored_files=ignored,
    )


def _lines(text):
    """The lines of ``text``; a final line break does not start an extra (blank) line."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _show(line):
    """A line as an error message shows it: repr, cut to _SHOW_CHARS characters."""
    if len(line) > _SHOW_CHARS:
        return repr(line[:_SHOW_CHARS]) + "..."
    return repr(line)


def _read_label_folder(folder):
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(f"cannot list the folder {folder}: {exc.strerror or exc}") from None
    files, ignored = [], []
    for entry in entries:
        if entry.suffix == ".txt" and not entry.name.startswith(".") and entry.is_file():
            files.append(entry)
        else:
            ignored.append(entry.name)
    if not files:
        others = ""
        if ignored:
            listed = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
            others = f" (it has {len(ignored)} other entries: {listed})"
        raise DataError(
            f"{folder} has no .txt files{others}; a folder of labelled examples holds one "
            f"<label>.txt file per label with one example per line, e.g. Greek.txt, Irish.txt"
        )
    if len(files) == 1:
        raise DataError(
            f"{folder} has one label file only ({files[0].name}); classification needs at "
            f"least two labels: add another <label>.txt file"
        )
    # Sorted by label name, so ids and example order do not depend on the listing order.
    files.sort(key=lambda p: p.stem)
    names = [p.stem for p in files]
    texts, label_ids, blank = [], [], 0
    for label_id, file in enumerate(files):
        no_examples = (
            f"{file} has no examples for the label '{file.stem}'; put one example "
            f"per line in it, or remove it"
        )
        try:
            if file.stat().st_size == 0:
                raise DataError(no_examples)
        except OSError as exc:
            raise DataError(f"cannot read {file}: {exc.strerror or exc}") from None
        before = len(texts)
        for line in _lines(read_text(file)):
            example = line.strip()
            if not example:
                blank += 1
                continue
            texts.append(example)
            label_ids.append(label_id)
        if len(texts) == before:
            raise DataError(no_examples)
    return texts, label_ids, names, blank, ignored


def _read_label_tsv(path):
    form = "each line must be text<TAB>label, e.g. 'Nakamura\\tJapanese'"
    pairs, blank = [], 0
    for number, line in enumerate(_lines(read_text(path)), start=1):
        if not line.strip():
            blank += 1
            continue
        where = f"{path}, line {number}"
        tabs = line.count("\t")
        if tabs == 0:
            raise DataError(
                f"{where} has no tab: {_show(line)}; {form} (or give a folder of <label>.txt files instead)"
            )
        if tabs > 1:
            raise DataError(
                f"{where} has {tabs} tabs, not one: {_show(line)}; {form}, with no tab inside the text"
            )
        text, label = (part.strip() for part in line.split("\t"))
        if not text:
            raise DataError(f"{where} has an empty text before the tab: {_show(line)}; {form}")
        if not label:
            raise DataError(f"{where} has an empty label after the tab: {_show(line)}; {form}")
        pairs.append((text, label))
    if not pairs:
        raise DataError(f"{path} has no examples (only {blank} blank lines); {form}")
    names = sorted({label for _, label in pairs})
    if len(names) < 2:
        raise DataError(f"{path} has one label only ('{names[0]}'); classification needs at least two labels")
    index = {name: i for i, name in enumerate(names)}
    return [t for t, _ in pairs], [index[label] for _, label in pairs], names, blank


def _labelled_digest(texts, labels, names):
    """Hex sha256 (cut short) of the label names and the (label, text) sequence, unambiguous:
    every string is length-prefixed, so no text or name can imitate a separator."""
    digest = hashlib.sha256(_DIGEST_VERSION)

    def put(string):
        data = string.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    digest.update(len(names).to_bytes(8, "little"))
    for name in names:
        put(name)
    for text, label in zip(texts, labels.tolist()):
        digest.update(int(label).to_bytes(8, "little"))
        put(text)
    return digest.hexdigest()[:_DIGEST_HEX]


def _check_fraction(value, option):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{option} must be a number between 0 and 1, not {value!r}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(
            f"{option} must be at least 0 and below 1, not {value}; "
            f"e.g. {option} 0.1 keeps 10% of each label's examples apart"
        )
    return float(value)


def _checked_split_options(val_frac, test_frac, seed, *, example):
    """(val, test) fractions checked, with the seed; ConfigErrors name the option."""
    val = _check_fraction(val_frac, "--val-frac")
    test = _check_fraction(test_frac, "--test-frac")
    if val + test >= 1.0:
        raise ConfigError(
            f"--val-frac {val} and --test-frac {test} add up to {val + test:g}, "
            f"leaving nothing to train on; keep their sum below 1, e.g. {example}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"--seed must be a whole number of 0 or more, not {seed!r}")
    return val, test


def stratified_split(labels, val_frac, test_frac, seed):
    """(train_idx, val_idx, test_idx): a seeded split of example indices, stratified by label.

    Each label's examples are shuffled with one ``numpy.random.default_rng(seed)`` (labels
    visited in ascending id order), and the label contributes round(n * test_frac) examples to
    test and round(n * val_frac) to validation (rounded half up), the rest to train. So every
    split holds each label in the proportion of the whole as closely as integer counts allow,
    label by label. The test examples are cut first from each shuffled label, so for one seed
    the test set depends only on ``test_frac``: changing ``val_frac`` never moves an example
    into or out of test.

    Tiny labels: every label keeps at least one example in train (a label the model never sees
    cannot be learnt). When rounding would take all of a label's examples, validation or test
    gives one back, the one whose rounded count exceeds its exact share the most (test on a
    tie). So a label with 1 example is train only, and val/test can get 0 of a label with few
    examples (and be empty altogether for tiny data): callers check the sizes they need.

    Fractions of 0 give empty splits. The three arrays are int64 indices into ``labels``,
    sorted ascending (a split is a set: training order is the trainer's, shuffled per epoch
    with its own generator); together they cover every index exactly once. Deterministic for a
    seed: no global random state is read or changed.
    """
    val, test = _checked_split_options(val_frac, test_frac, seed, example="0.1 and 0.1")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError("labels must be a 1-D array of integer label ids")
    rng = np.random.default_rng(int(seed))
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        exact = {"test": n * test, "val": n * val}
        # +1e-9: 0.35 * 10 is 3.4999999999999996 in floating point, and must round to 4.
        count = {k: math.floor(x + 0.5 + 1e-9) for k, x in exact.items()}
        while count["test"] + count["val"] > n - 1:
            over = max(("test", "val"), key=lambda k: (count[k] > 0, count[k] - exact[k]))
            count[over] -= 1
        n_test, n_val = count["test"], count["val"]
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])

    def joined(arrays):
        if not arrays:
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate(arrays)).astype(np.int64)

    return joined(parts["train"]), joined(parts["val"]), joined(parts["test"])


# --------------------------------------------------------------------------- sentence pairs

_PAIRS_DIGEST_VERSION = b"numrnn-pairs-v1\x00"


@dataclass(frozen=True)
class PairsData:
    """Source and target texts, as read by ``read_pairs``; ``digest`` fingerprints the pairs
    in order (after ``reverse``), as ``LabelledData.digest`` does for labelled examples."""

    sources: list  # list[str], surrounding whitespace stripped
    targets: list  # list[str]
    blank_lines: int
    digest: str
    reverse: bool  # the file's second column is the source

    def __len__(self):
        return len(self.sources)


def read_pairs(path, *, reverse=False):
    """Sentence pairs from a UTF-8 TSV file, one ``source<TAB>target`` per line; further
    columns are ignored (``../shared/data/eng-fra.txt`` has an attribution third).
    ``reverse`` swaps the first two columns.

    The file is read with ``read_text`` (UTF-8 checked, byte-order mark dropped); lines end at
    LF, CRLF or a lone CR. Whitespace-only lines are skipped and counted; each field's
    surrounding whitespace is stripped. Raises DataError naming the file for a missing or
    unreadable file, and the line for a line without a tab or with an empty source or target.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; give a UTF-8 TSV file of source<TAB>target lines")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a UTF-8 TSV file of source<TAB>target lines")
    form = "each line must be source<TAB>target, e.g. 'Go.\\tVa !'"
    sources, targets, blank = [], [], 0
    for number, line in enumerate(_lines(read_text(path)), start=1):
        if not line.strip():
            blank += 1
            continue
        where = f"{path}, line {number}"
        if "\t" not in line:
            raise DataError(f"{where} has no tab: {_show(line)}; {form}")
        first, second = (part.strip() for part in line.split("\t")[:2])
        source, target = (second, first) if reverse else (first, second)
        if not source:
            raise DataError(f"{where} has an empty source: {_show(line)}; {form}")
        if not target:
            raise DataError(f"{where} has an empty target: {_show(line)}; {form}")
        sources.append(source)
        targets.append(target)
    if not sources:
        raise DataError(f"{path} has no pairs (only {blank} blank lines); {form}")
    return PairsData(sources, targets, blank, _pairs_digest(sources, targets), bool(reverse))


def _pairs_digest(sources, targets):
    digest = hashlib.sha256(_PAIRS_DIGEST_VERSION)
    for text in (s for pair in zip(sources, targets) for s in pair):
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:_DIGEST_HEX]


def shuffled_split(count, val_frac, test_frac, seed):
    """(train, val, test) index arrays over ``count`` items: one permutation by
    ``default_rng(seed)``, cut into test, validation and training parts (sizes rounded to the
    nearest whole item). Raises ConfigError for fractions that leave nothing to train on."""
    val, test = _checked_split_options(val_frac, test_frac, seed, example="0.05 and 0.05")
    order = np.random.default_rng(int(seed)).permutation(count)
    n_test = int(math.floor(count * test + 0.5 + 1e-9))
    n_val = int(math.floor(count * val + 0.5 + 1e-9))
    test_rows, val_rows, train_rows = np.split(order, [n_test, n_test + n_val])
    return train_rows, val_rows, test_rows
