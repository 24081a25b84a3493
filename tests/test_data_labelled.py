"""data.py, labelled lines: read_labelled (folder of <label>.txt files or TSV) and stratified_split."""

import pathlib

import numpy as np
import pytest

from numrnn.data import LabelledData, read_labelled, stratified_split
from numrnn.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA

# The shared real data (names/ is one <Language>.txt per label), outside the repository:
# the names data: 20 languages, about 20,000 surnames (README of the shared data).
NAMES_LABELS = (18, 20)
NAMES_TOTAL = (15_000, 25_000)
# Length of the short hex digest.
DIGEST_HEX = 16


def write(folder, files):
    """Write {name: str | bytes} into folder; return folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return folder


# -- folders --------------------------------------------------------------------------------


def test_folder_labels_are_file_stems_sorted_with_ids_as_indices(tmp_path):
    folder = write(
        tmp_path / "names", {"Greek.txt": "Pappas\nKaralis\n", "Czech.txt": "Novak\n", "Irish.txt": "Murphy"}
    )
    data = read_labelled(folder)
    assert isinstance(data, LabelledData)
    assert data.source == "folder"
    assert data.label_names == ["Czech", "Greek", "Irish"]
    assert data.texts == ["Novak", "Pappas", "Karalis", "Murphy"]
    assert data.labels.dtype == np.int64
    assert data.labels.tolist() == [0, 1, 1, 2]
    assert data.counts().tolist() == [1, 2, 1]
    assert len(data) == 4
    assert data.blank_lines == 0 and data.ignored_files == []
    assert len(data.digest) == DIGEST_HEX and int(data.digest, 16) >= 0


def test_folder_blank_lines_skipped_and_counted_final_newline_is_not_a_blank(tmp_path):
    folder = write(tmp_path / "d", {"a.txt": "x\n\n   \ny\n", "b.txt": "\t\nz\n\n"})
    data = read_labelled(folder)
    assert data.texts == ["x", "y", "z"]
    assert data.blank_lines == 4


def test_folder_crlf_lone_cr_and_bom(tmp_path):
    folder = write(tmp_path / "d", {"a.txt": b"\xef\xbb\xbfAbel\r\nBaker\r\n", "b.txt": b"Cole\rDunn\r"})
    data = read_labelled(folder)
    assert data.texts == ["Abel", "Baker", "Cole", "Dunn"]
    assert not any("\r" in t or "\ufeff" in t for t in data.texts)


def test_surrounding_whitespace_is_stripped_inner_kept_non_ascii_kept(tmp_path):
    # As in the names data: Korean.txt has 'Park ' with a trailing space.
    folder = write(
        tmp_path / "d",
        {"Korean.txt": "Park \n  Oh\n", "Spanish.txt": "De la Cruz\nNúñez\n", "Czech.txt": "Šťastný\n"},
    )
    data = read_labelled(folder)
    assert data.texts == ["Šťastný", "Park", "Oh", "De la Cruz", "Núñez"]


def test_duplicates_are_kept_and_reported(tmp_path):
    folder = write(tmp_path / "d", {"a.txt": "Lee\nLee\nKim\n", "b.txt": "Lee\nMoss\n"})
    data = read_labelled(folder)
    assert data.texts == ["Lee", "Lee", "Kim", "Lee", "Moss"]
    assert data.duplicates() == 1  # the second Lee in a.txt
    assert data.conflicts() == 1  # Lee is under a and b


def test_other_files_hidden_files_and_subfolders_are_ignored_and_listed(tmp_path):
    folder = write(
        tmp_path / "d",
        {"a.txt": "x\n", "b.txt": "y\n", "README.md": "hi", ".hidden.txt": b"\x00\x01", "c.csv": "1,2"},
    )
    (folder / "sub.txt").mkdir()
    data = read_labelled(folder)
    assert data.label_names == ["a", "b"]
    assert data.ignored_files == [".hidden.txt", "README.md", "c.csv", "sub.txt"]


def test_listing_order_changes_nothing(tmp_path, monkeypatch):
    folder = write(tmp_path / "d", {"b.txt": "y1\ny2\n", "a.txt": "x\n", "c b.txt": "q\n", "c.txt": "z\n"})
    before = read_labelled(folder)
    original = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(sorted(original(self), reverse=True)))
    assert [p.name for p in folder.iterdir()] == ["c.txt", "c b.txt", "b.txt", "a.txt"]
    after = read_labelled(folder)
    assert after.label_names == before.label_names == ["a", "b", "c", "c b"]
    assert after.texts == before.texts
    assert after.labels.tolist() == before.labels.tolist()
    assert after.digest == before.digest


def test_digest_depends_on_examples_and_labels_not_on_the_path(tmp_path):
    base = {"a.txt": "x\ny\n", "b.txt": "z\n"}
    digest = read_labelled(write(tmp_path / "one", base)).digest
    assert read_labelled(write(tmp_path / "two", base)).digest == digest
    # Blank lines and surrounding whitespace are not examples.
    assert read_labelled(write(tmp_path / "blank", {"a.txt": "x\n\n y \n", "b.txt": "z"})).digest == digest
    changed = {
        "renamed label": {"a.txt": "x\ny\n", "c.txt": "z\n"},
        "moved example": {"a.txt": "x\n", "b.txt": "y\nz\n"},
        "changed text": {"a.txt": "x\nY\n", "b.txt": "z\n"},
        "reordered": {"a.txt": "y\nx\n", "b.txt": "z\n"},
        "added example": {"a.txt": "x\ny\n", "b.txt": "z\nz\n"},
        "split text": {"a.txt": "x\ny\n", "b.txt": "z\n", "c.txt": "w\n"},
    }
    digests = {
        name: read_labelled(write(tmp_path / name.replace(" ", "_"), files)).digest
        for name, files in changed.items()
    }
    for name, other in digests.items():
        assert other != digest, name
    assert len(set(digests.values())) == len(digests)


def test_digest_is_unambiguous_about_boundaries(tmp_path):
    one = read_labelled(write(tmp_path / "one", {"a.txt": "ab\tc\n", "b.txt": "d\n"}))
    two = read_labelled(write(tmp_path / "two", {"a.txt": "ab\n", "b.txt": "d\n", "c.txt": "c\n"}))
    assert one.digest != two.digest


# -- folder errors --------------------------------------------------------------------------


def test_missing_path_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as info:
        read_labelled(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message and "<label>.txt" in message and "TSV" in message


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no .txt files") as info:
        read_labelled(tmp_path / "empty")
    assert "empty" in str(info.value) and "<label>.txt" in str(info.value)


def test_folder_without_txt_files_names_what_it_has(tmp_path):
    folder = write(tmp_path / "d", {"Greek.csv": "x", "notes.md": "y"})
    with pytest.raises(DataError, match="has no .txt files") as info:
        read_labelled(folder)
    assert "Greek.csv" in str(info.value) and "notes.md" in str(info.value)


def test_folder_with_one_label_only(tmp_path):
    folder = write(tmp_path / "d", {"Greek.txt": "Pappas\n", "README": "x"})
    with pytest.raises(DataError, match="one label file only") as info:
        read_labelled(folder)
    assert "Greek.txt" in str(info.value) and "two labels" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n\t\n"], ids=["empty", "blank lines"])
def test_label_file_with_no_examples_is_named(tmp_path, content):
    folder = write(tmp_path / "d", {"Greek.txt": "Pappas\n", "Welsh.txt": content})
    with pytest.raises(DataError, match="no examples") as info:
        read_labelled(folder)
    assert "Welsh.txt" in str(info.value) and "'Welsh'" in str(info.value)


def test_non_utf8_label_file_named_with_byte_offset(tmp_path):
    folder = write(tmp_path / "d", {"Greek.txt": "Pappas\n", "French.txt": b"Martin\nFran\xe7ois\n"})
    with pytest.raises(DataError, match="not valid UTF-8: byte 0xe7 at offset 11") as info:
        read_labelled(folder)
    assert "French.txt" in str(info.value)


def test_binary_label_file_named(tmp_path):
    folder = write(tmp_path / "d", {"Greek.txt": "Pappas\n", "img.txt": b"\x89PNG\x00\x00"})
    with pytest.raises(DataError, match="binary file") as info:
        read_labelled(folder)
    assert "img.txt" in str(info.value)


# -- TSV ------------------------------------------------------------------------------------


def test_tsv_reads_pairs_in_file_order(tmp_path):
    path = tmp_path / "names.tsv"
    path.write_bytes("Nakamura\tJapanese\nMüller\tGerman\n\n  \nSato\tJapanese".encode())
    data = read_labelled(path)
    assert data.source == "tsv"
    assert data.label_names == ["German", "Japanese"]
    assert data.texts == ["Nakamura", "Müller", "Sato"]
    assert data.labels.tolist() == [1, 0, 1]
    assert data.blank_lines == 2
    assert data.ignored_files == []


def test_tsv_crlf_bom_and_whitespace_around_fields(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbf Abe \t A\r\nBo\tB \r\n\r\n")
    data = read_labelled(path)
    assert data.texts == ["Abe", "Bo"]
    assert data.label_names == ["A", "B"]
    assert data.blank_lines == 1


def test_tsv_digest_ignores_the_file_name_and_sees_the_labels(tmp_path):
    (tmp_path / "one.tsv").write_text("x\ta\ny\tb\n", encoding="utf-8")
    (tmp_path / "two.tsv").write_text("x\ta\r\ny\tb", encoding="utf-8")
    (tmp_path / "three.tsv").write_text("x\ta\ny\tc\n", encoding="utf-8")
    digests = [read_labelled(tmp_path / f"{n}.tsv").digest for n in ("one", "two", "three")]
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize(
    "line,match",
    [
        ("Sato Japanese", "line 3 has no tab"),
        ("Sato\tJapanese\tx", "line 3 has 2 tabs, not one"),
        ("\tJapanese", "line 3 has an empty text"),
        ("  \tJapanese", "line 3 has an empty text"),
        ("Sato\t", "line 3 has an empty label"),
        ("Sato\t  ", "line 3 has an empty label"),
    ],
)
def test_malformed_tsv_line_names_file_line_and_shows_it(tmp_path, line, match):
    path = tmp_path / "pairs.tsv"
    path.write_text(f"Abe\tA\n\n{line}\nBo\tB\n", encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        read_labelled(path)
    message = str(info.value)
    assert "pairs.tsv" in message and "text<TAB>label" in message
    assert repr(line) in message


def test_malformed_tsv_line_shown_truncated(tmp_path):
    path = tmp_path / "long.tsv"
    long_line = "x" * 500
    path.write_text(f"Abe\tA\n{long_line}\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 has no tab") as info:
        read_labelled(path)
    message = str(info.value)
    assert "..." in message and long_line not in message and "x" * 60 in message


def test_tsv_with_one_label(tmp_path):
    path = tmp_path / "one.tsv"
    path.write_text("a\tX\nb\tX\n", encoding="utf-8")
    with pytest.raises(DataError, match="one label only .'X'.") as info:
        read_labelled(path)
    assert "one.tsv" in str(info.value) and "two labels" in str(info.value)


def test_tsv_with_only_blank_lines(tmp_path):
    path = tmp_path / "blank.tsv"
    path.write_text("\n  \n\t\n", encoding="utf-8")
    with pytest.raises(DataError, match="no examples .only 3 blank lines.") as info:
        read_labelled(path)
    assert "blank.tsv" in str(info.value)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "is empty"),
        (b"ok\tA\ncaf\xe9\tB\n", "not valid UTF-8: byte 0xe9 at offset 8"),
        (b"ok\tA\x00\n", "binary file"),
    ],
)
def test_tsv_unreadable_file_named(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_labelled(path)
    assert "bad.tsv" in str(info.value)


# -- the real names data --------------------------------------------------------------------


def test_real_names_folder():
    names = SHARED_DATA / "names"
    if not names.is_dir():
        pytest.skip(
            f"the shared reference data is not here ({names}); "
            f"it is outside the repository, on the project's machines only"
        )
    data = read_labelled(names)
    assert NAMES_LABELS[0] <= len(data.label_names) <= NAMES_LABELS[1]
    assert NAMES_TOTAL[0] <= len(data) <= NAMES_TOTAL[1]
    assert data.label_names == sorted(p.stem for p in names.glob("*.txt"))
    assert (data.counts() > 0).all()
    assert all(t == t.strip() and t and "\n" not in t and "\r" not in t for t in data.texts)
    assert any(not t.isascii() for t in data.texts)
    # Korean.txt has 'Park ' with a trailing space: read as 'Park', under Korean.
    if "Korean" in data.label_names:
        korean = data.label_names.index("Korean")
        assert "Park" in [t for t, y in zip(data.texts, data.labels) if y == korean]
    assert read_labelled(names).digest == data.digest
    train, val, test = stratified_split(data.labels, 0.1, 0.1, seed=0)
    assert len(train) + len(val) + len(test) == len(data)
    counts = data.counts()
    assert np.array_equal(np.bincount(data.labels[train], minlength=len(counts)) > 0, counts > 0)


# -- stratified_split -----------------------------------------------------------------------


def imbalanced_labels(rng, sizes):
    """Labels with sizes[c] examples of label c, in a shuffled order."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return rng.permutation(labels)


def split_counts(labels, parts):
    C = int(labels.max()) + 1
    return [np.bincount(labels[p], minlength=C).tolist() for p in parts]


def test_stratified_counts_are_exact_per_label(rng):
    sizes = [100, 30, 7, 2, 1]
    labels = imbalanced_labels(rng, sizes)
    parts = stratified_split(labels, val_frac=0.1, test_frac=0.2, seed=7)
    train, val, test = split_counts(labels, parts)
    # test = round(n * 0.2), val = round(n * 0.1), train the rest (each label keeps >= 1).
    assert test == [20, 6, 1, 0, 0]
    assert val == [10, 3, 1, 0, 0]
    assert train == [70, 21, 5, 2, 1]


def test_rounding_is_half_up_despite_floating_point():
    # 10 * 0.35 is 3.4999999999999996 in floating point; 4 * 0.125 is exactly 0.5.
    labels = np.repeat([0, 1], [10, 4])
    train, val, test = split_counts(labels, stratified_split(labels, 0.125, 0.35, seed=0))
    assert test == [4, 1]
    assert val == [1, 1]
    assert train == [5, 2]


def test_tiny_labels_keep_one_in_train():
    labels = np.repeat([0, 1, 2, 3], [1, 2, 2, 3])
    # Label 1 and 2 (2 examples): exact 0.8 + 0.8 both round to 1; test gives back (tie).
    train, val, test = split_counts(labels, stratified_split(labels, 0.4, 0.4, seed=3))
    assert train == [1, 1, 1, 1]
    assert val == [0, 1, 1, 1]
    assert test == [0, 0, 0, 1]
    # Exact 0.6 (val) and 1.2 (test): val overshoots more, so val gives back.
    train, val, test = split_counts(labels, stratified_split(labels, 0.3, 0.6, seed=3))
    assert train == [1, 1, 1, 1]
    assert val == [0, 0, 0, 1]
    assert test == [0, 1, 1, 1]


def test_zero_fractions_give_empty_splits(rng):
    labels = imbalanced_labels(rng, [5, 5])
    train, val, test = stratified_split(labels, 0.0, 0.0, seed=1)
    assert np.array_equal(train, np.arange(10))
    assert val.dtype == test.dtype == np.int64
    assert val.size == 0 and test.size == 0
    train, val, test = stratified_split(labels, 0.2, 0.0, seed=1)
    assert len(val) == 2 and test.size == 0 and len(train) == 8


def test_split_covers_every_index_once_sorted_int64(rng):
    labels = imbalanced_labels(rng, [50, 20, 9, 3, 1, 1])
    parts = stratified_split(labels, 0.15, 0.15, seed=11)
    for part in parts:
        assert part.dtype == np.int64
        assert np.array_equal(part, np.sort(part))
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))
    train, val, test = (set(p.tolist()) for p in parts)
    assert not (train & val) and not (train & test) and not (val & test)


def test_same_seed_same_split_other_seed_other_split(rng):
    labels = imbalanced_labels(rng, [60, 40, 20])
    first = stratified_split(labels, 0.2, 0.2, seed=5)
    again = stratified_split(labels.copy(), 0.2, 0.2, seed=5)
    other = stratified_split(labels, 0.2, 0.2, seed=6)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[2], other[2])
    assert not np.array_equal(first[1], other[1])
    # Same sizes per label, though: the counts depend on the fractions only.
    assert split_counts(labels, first) == split_counts(labels, other)


def test_test_set_does_not_depend_on_val_frac(rng):
    labels = imbalanced_labels(rng, [60, 40, 20])
    _, val_a, test_a = stratified_split(labels, 0.1, 0.2, seed=9)
    _, val_b, test_b = stratified_split(labels, 0.3, 0.2, seed=9)
    assert np.array_equal(test_a, test_b)
    assert set(val_a.tolist()) < set(val_b.tolist())


def test_split_leaves_global_random_state_alone(rng):
    labels = imbalanced_labels(rng, [30, 30])
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    first = stratified_split(labels, 0.2, 0.2, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(999)
    second = stratified_split(labels, 0.2, 0.2, seed=1)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_label_ids_need_not_be_contiguous():
    labels = np.array([7, 7, 7, 7, 7, 2, 2, 2, 2, 2, 40, 40, 40, 40, 40])
    train, val, test = stratified_split(labels, 0.2, 0.2, seed=0)
    for part in (val, test):
        assert sorted(labels[part].tolist()) == [2, 7, 40]
    assert len(train) == 9


def test_empty_labels_give_empty_splits():
    parts = stratified_split(np.array([], dtype=np.int64), 0.1, 0.1, seed=0)
    assert all(p.size == 0 and p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize(
    "val,test,option",
    [
        (-0.1, 0.1, "--val-frac"),
        (0.1, 1.0, "--test-frac"),
        (float("nan"), 0.1, "--val-frac"),
        (0.1, float("inf"), "--test-frac"),
        ("0.1", 0.1, "--val-frac"),
        (True, 0.1, "--val-frac"),
    ],
)
def test_bad_fraction_names_the_option(val, test, option):
    with pytest.raises(ConfigError, match=option):
        stratified_split(np.array([0, 1, 0, 1]), val, test, seed=0)


@pytest.mark.parametrize("val,test", [(0.5, 0.5), (0.6, 0.7), (0.99, 0.01)])
def test_fractions_summing_to_one_or_more(val, test):
    with pytest.raises(ConfigError, match="--val-frac .* --test-frac .*add up to") as info:
        stratified_split(np.array([0, 1, 0, 1]), val, test, seed=0)
    assert "below 1" in str(info.value)


@pytest.mark.parametrize("seed", [-1, 1.5, None, "3"])
def test_bad_seed(seed):
    with pytest.raises(ConfigError, match="--seed"):
        stratified_split(np.array([0, 1, 0, 1]), 0.1, 0.1, seed=seed)


def test_labels_must_be_integer_ids():
    with pytest.raises(ValueError, match="integer label ids"):
        stratified_split(np.array([0.0, 1.0]), 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="integer label ids"):
        stratified_split(np.zeros((2, 2), dtype=np.int64), 0.1, 0.1, seed=0)
