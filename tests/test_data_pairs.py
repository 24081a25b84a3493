"""Sentence pairs for the encoder-decoder: read_pairs and shuffled_split."""

import numpy as np
import pytest

from numrnn.data import read_pairs, shuffled_split
from numrnn.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA


def write(tmp_path, text, name="pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_pairs_are_read_stripped_with_extra_columns_ignored(tmp_path):
    path = write(tmp_path, "Go.\tVa !\tCC-BY 2.0\r\n\n  Hi. \t Salut. \n   \nRun!\tCours !")
    data = read_pairs(path)
    assert data.sources == ["Go.", "Hi.", "Run!"]
    assert data.targets == ["Va !", "Salut.", "Cours !"]
    assert data.blank_lines == 2 and len(data) == 3 and not data.reverse


def test_reverse_swaps_the_columns_and_the_digest(tmp_path):
    path = write(tmp_path, "Go.\tVa !\nHi.\tSalut.\n")
    forward, backward = read_pairs(path), read_pairs(path, reverse=True)
    assert backward.sources == forward.targets and backward.targets == forward.sources
    assert backward.reverse and forward.digest != backward.digest
    assert read_pairs(path).digest == forward.digest  # the same file, the same fingerprint


@pytest.mark.parametrize(
    "text, message",
    [
        ("Go.\tVa !\nHello there\n", r"line 2 has no tab: 'Hello there'"),
        ("Go.\tVa !\n\tSalut.\n", r"line 2 has an empty source"),
        ("Go.\t  \tCC-BY\n", r"line 1 has an empty target"),
        ("\n  \n", r"has no pairs \(only 2 blank lines\)"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message) as caught:
        read_pairs(path)
    assert str(path) in str(caught.value)


def test_missing_folder_and_non_utf8_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_pairs(tmp_path / "absent.tsv")
    with pytest.raises(DataError, match="is a folder"):
        read_pairs(tmp_path)
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("Café\tCafé\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        read_pairs(bad)


def test_shuffled_split_is_a_seeded_partition():
    train, val, test = shuffled_split(101, 0.05, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (86, 5, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(101))
    again = shuffled_split(101, 0.05, 0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(shuffled_split(101, 0.05, 0.1, seed=4)[2], test)
    with pytest.raises(ConfigError, match="nothing to train on"):
        shuffled_split(10, 0.5, 0.5, seed=0)


def test_the_shared_english_french_pairs():
    path = SHARED_DATA / "eng-fra.txt"
    if not path.exists():
        pytest.skip(f"the shared data is not here ({path})")
    data = read_pairs(path)
    assert len(data) == 5000 and data.sources[0] == "Go." and data.targets[0] == "Va !"
    train, val, test = shuffled_split(len(data), 0.05, 0.05, seed=0)
    assert (len(train), len(val), len(test)) == (4500, 250, 250)
