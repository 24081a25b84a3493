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


def test_long_texts_encode_chunk_by_chunk_as_one_piece(monkeypatch):
    """Chunks of 7 characters (patched): every id, the compact type, an unknown character's
    position in a later chunk, dropping across chunks, and code points past the vocabulary's
    all give what a plain per-character lookup gives."""
    import numrnn.data as data

    monkeypatch.setattr(data, "_CHUNK_CHARS", 7)
    rng = np.random.default_rng(0)
    alphabet = list("abc é世\U0001f600\n")
    text = "".join(rng.choice(alphabet, 200))
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text))
    expected = np.array([vocab.index[char] for char in text])
    for compact, dtype in ((False, np.int64), (True, np.uint8)):
        ids, dropped = vocab.encode(text, compact=compact)
        assert ids.dtype == dtype and dropped == 0
        np.testing.assert_array_equal(ids, expected)
    noisy = text[:150] + "Z" + text[150:170] + "\U0010ffff\udc80" + text[170:]
    with pytest.raises(DataError, match=r"'Z' \(U\+005A LATIN CAPITAL LETTER Z\) at position 150"):
        vocab.encode(noisy)
    ids, dropped = vocab.encode(noisy, drop_unknown=True, compact=True)
    assert dropped == 3 and vocab.decode(ids) == text
    assert vocab.unknown_chars(noisy) == ["Z", "\udc80", "\U0010ffff"]
    assert Vocab([chr(i) for i in range(300)]).compact_dtype == np.uint16


def test_the_corpus_digest_is_the_int64_bytes_hash_in_pieces(monkeypatch):
    """ids_digest hashes int64 ids a piece at a time: the digest checkpoints have always
    recorded (a sha256 of the ids as int64), from ids of any integer type."""
    import hashlib

    from numrnn.tasks import lm

    monkeypatch.setattr(lm, "DIGEST_CHUNK", 5)
    ids = np.random.default_rng(1).integers(0, 65, 23)
    whole = hashlib.sha256(ids.astype(np.int64).tobytes()).hexdigest()[:16]
    assert lm.ids_digest(ids) == lm.ids_digest(ids.astype(np.uint8)) == whole


def test_text_streams_keep_compact_ids_and_batch_them_as_intp():
    from numrnn.data import TextStreams

    ids = np.arange(50) % 7
    small = ids.astype(np.uint8)
    wide, compact = TextStreams(ids, 3, 4), TextStreams(small, 3, 4)
    assert compact.streams.dtype == np.uint8 and np.shares_memory(compact.streams, small)  # no copy
    for got, expected in zip(compact.batch_at(4), wide.batch_at(4)):
        assert got.dtype == np.intp
        np.testing.assert_array_equal(got, expected)


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
