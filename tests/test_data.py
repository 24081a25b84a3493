"""data.py: checked reading of user files, the vocabulary and the split."""

import numpy as np
import pytest

from numrnn.data import Vocab, describe_char, read_text, split_by_position
from numrnn.errors import ConfigError, DataError


def test_reads_utf8_in_any_script_and_drops_a_bom(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffПривет, 世界! é\n".encode("utf-8"))
    assert read_text(path) == "Привет, 世界! é\n"


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "only a byte-order mark"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file .a NUL byte at offset 8"),
        (b"caf\xe9 au lait", "not valid UTF-8: byte 0xe9 at offset 3"),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path, content, match):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_text(path)
    assert "corpus.txt" in str(info.value)


def test_a_folder_is_not_a_corpus(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_text(tmp_path)


def test_vocab_round_trip_and_order():
    text = "hello, wörld"
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text))
    ids, dropped = vocab.encode(text)
    assert ids.dtype == np.int64 and dropped == 0
    assert vocab.decode(ids) == text
    assert len(vocab) == len(set(text)) and "w" in vocab and "z" not in vocab


def test_unknown_character_is_named_with_its_position():
    vocab = Vocab.from_text("abc ")
    with pytest.raises(
        DataError, match=r"'é' \(U\+00E9 LATIN SMALL LETTER E WITH ACUTE\) at position 2"
    ) as info:
        vocab.encode("abé c", what="the prime text")
    assert "--drop-unknown" in str(info.value) and "the prime text" in str(info.value)
    ids, dropped = vocab.encode("abé c", drop_unknown=True)
    assert vocab.decode(ids) == "ab c" and dropped == 1


def test_describe_control_characters():
    assert describe_char("\t") == "'\\t' (U+0009)"
    assert describe_char(" ").startswith("' ' (U+0020 SPACE)")


def test_vocab_rejects_duplicates():
    with pytest.raises(DataError, match="twice"):
        Vocab(["a", "a"])


def test_split_by_position():
    ids = np.arange(100)
    train, val = split_by_position(ids, 0.05)
    np.testing.assert_array_equal(train, np.arange(95))
    np.testing.assert_array_equal(val, np.arange(95, 100))
    with pytest.raises(ConfigError, match="val_frac"):
        split_by_position(ids, 1.0)
    with pytest.raises(DataError, match="too short"):
        split_by_position(np.arange(1), 0.5)
