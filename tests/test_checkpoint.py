"""Checkpoints: round trip, PyTorch names and shapes, atomic writes, every kind of bad file."""

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.numpy

from numrnn.checkpoint import (
    DIGEST_KEY,
    FORMAT_VERSION,
    best_path,
    check_writable,
    load_checkpoint,
    save_checkpoint,
    text_digest,
    write_atomically,
)
from numrnn.data import Vocab
from numrnn.errors import CheckpointError
from numrnn.model import Model, ModelConfig, State
from numrnn.params import to_torch

VOCAB = Vocab(list("abcdé\n"))


def make_model(rng, cell="lstm", layers=2, embed=4, dtype=np.float32):
    config = ModelConfig(cell=cell, vocab_size=len(VOCAB), hidden=5, layers=layers, embed=embed)
    return Model(config, dtype=dtype).init_weights(rng)


def save_sample(path, model, **extra):
    size = model.layout.size
    optim = {"exp_avg": np.arange(size, dtype=model.dtype), "exp_avg_sq": np.ones(size, model.dtype)}
    L, H = model.config.layers, model.config.hidden
    state = State(
        np.full((L, 3, H), 0.5, model.dtype),
        np.full((L, 3, H), -0.5, model.dtype) if model.config.cell == "lstm" else None,
    )
    save_checkpoint(path, model, VOCAB, meta={"progress": {"step": 7}, **extra}, optim=optim, state=state)
    return optim, state


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embed", [0, 4])
def test_round_trip_keeps_everything(tmp_path, rng, cell, embed):
    model = make_model(rng, cell=cell, embed=embed, dtype=np.float64)
    path = tmp_path / "m.safetensors"
    optim, state = save_sample(path, model)
    loaded = load_checkpoint(path)
    assert loaded.model_config == model.config
    assert loaded.vocab.chars == VOCAB.chars
    assert loaded.dtype == np.float64
    assert loaded.meta["progress"] == {"step": 7}
    assert loaded.meta["format_version"] == FORMAT_VERSION
    rebuilt = loaded.build_model()
    np.testing.assert_array_equal(rebuilt.params, model.params)
    for name, value in optim.items():
        np.testing.assert_array_equal(loaded.optim[name], value)
    np.testing.assert_array_equal(loaded.state["h"], state.h)
    if cell == "lstm":
        np.testing.assert_array_equal(loaded.state["c"], state.c)
    assert loaded.parameter_count == model.layout.size


def test_tensors_have_pytorch_names_and_shapes(tmp_path, rng):
    model = make_model(rng, cell="gru", layers=2, embed=4)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, VOCAB)
    tensors = safetensors.numpy.load_file(path)
    V, E, H, G = 6, 4, 5, 15
    expected = {"embed.weight": (V, E), "head.weight": (V, H), "head.bias": (V,)}
    for layer, width in ((0, E), (1, H)):
        expected |= {
            f"rnn.weight_ih_l{layer}": (G, width),
            f"rnn.weight_hh_l{layer}": (G, H),
            f"rnn.bias_ih_l{layer}": (G,),
            f"rnn.bias_hh_l{layer}": (G,),
        }
    assert {name: tensor.shape for name, tensor in tensors.items()} == expected
    np.testing.assert_array_equal(tensors["rnn.weight_hh_l1"], model.weights["rnn.weight_hh_l1"].T)


def test_metadata_document_is_plain_json(tmp_path, rng):
    model = make_model(rng)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, VOCAB, meta={"best_val_loss": 1.5})
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + length])
    document = json.loads(header["__metadata__"]["numrnn"])
    assert document["format"] == "numrnn-checkpoint"
    assert document["vocab"] == VOCAB.chars
    assert document["model"]["cell"] == "lstm"
    assert document["best_val_loss"] == 1.5


def test_best_path_sits_beside_the_file(tmp_path):
    assert best_path(tmp_path / "run.safetensors") == tmp_path / "run.best.safetensors"
    assert best_path(tmp_path / "run") == tmp_path / "run.best.safetensors"


# --------------------------------------------------------------------------- atomic writes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old checkpoint")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="No space left"):
        write_atomically(path, b"new checkpoint")
    assert path.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_crash_mid_write_leaves_the_old_checkpoint_intact(tmp_path, rng):
    """A real crash: the writing process is killed after the temp file's data, before the rename."""
    model = make_model(rng)
    path = tmp_path / "m.safetensors"
    save_sample(path, model)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from numrnn.checkpoint import load_checkpoint, save_checkpoint
        loaded = load_checkpoint({str(path)!r})
        model = loaded.build_model()
        model.params[...] += 1.0
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        save_checkpoint({str(path)!r}, model, loaded.vocab)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    assert path.read_bytes() == before
    load_checkpoint(path)  # still whole
    leftovers = [name for name in os.listdir(tmp_path) if name != "m.safetensors"]
    assert leftovers and all(name.startswith(".m.safetensors.") for name in leftovers)


def test_check_writable_finds_problems_before_training(tmp_path):
    check_writable(tmp_path / "ok.safetensors")
    assert os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        check_writable(tmp_path / "missing" / "m.safetensors")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="cannot write"):
            check_writable(folder / "m.safetensors")
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def good_file(tmp_path, rng):
    path = tmp_path / "good.safetensors"
    save_sample(path, make_model(rng))
    return path


def rewrite_document(path, change):
    """Write a copy of ``path`` whose numrnn metadata went through ``change(document)``."""
    tensors = safetensors.numpy.load_file(path)
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    document = json.loads(json.loads(path.read_bytes()[8 : 8 + length])["__metadata__"]["numrnn"])
    change(document)
    out = path.with_name("changed.safetensors")
    text = json.dumps(document)
    # Sealed with a fresh digest, so the check under test is the one that answers.
    out.write_bytes(safetensors.numpy.save(tensors, metadata={"numrnn": text, DIGEST_KEY: text_digest(text)}))
    return out


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file(good_file, keep):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        load_checkpoint(good_file)


def test_truncated_inside_the_header(good_file):
    good_file.write_bytes(good_file.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(good_file)


def test_corrupt_header(good_file):
    data = bytearray(good_file.read_bytes())
    data[8:20] = b"\xff" * 12
    good_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(good_file)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("To be, or not to be, that is the question.\n" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    path.write_bytes(safetensors.numpy.save({"weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="not a numrnn checkpoint"):
        load_checkpoint(path)


def test_newer_format_version(good_file):
    newer = rewrite_document(
        good_file, lambda doc: doc.update(format_version=FORMAT_VERSION + 1, numrnn_version="9.0")
    )
    with pytest.raises(CheckpointError, match="newer numrnn .*upgrade"):
        load_checkpoint(newer)


def test_wrong_tensor_shape(good_file):
    tensors = safetensors.numpy.load_file(good_file)
    tensors["rnn.weight_hh_l0"] = np.zeros((3, 3), np.float32)
    (length,) = struct.unpack("<Q", good_file.read_bytes()[:8])
    metadata = json.loads(good_file.read_bytes()[8 : 8 + length])["__metadata__"]
    good_file.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match=r"rnn.weight_hh_l0 has shape \(3, 3\)"):
        load_checkpoint(good_file)


def test_missing_tensor(good_file):
    tensors = safetensors.numpy.load_file(good_file)
    del tensors["head.bias"]
    (length,) = struct.unpack("<Q", good_file.read_bytes()[:8])
    metadata = json.loads(good_file.read_bytes()[8 : 8 + length])["__metadata__"]
    good_file.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="missing tensor.*head.bias"):
        load_checkpoint(good_file)


def test_vocabulary_that_does_not_fit_the_model(good_file):
    changed = rewrite_document(good_file, lambda doc: doc.update(vocab=["a", "b"]))
    with pytest.raises(CheckpointError, match="2 characters in the vocabulary"):
        load_checkpoint(changed)


def test_unknown_model_field(good_file):
    changed = rewrite_document(good_file, lambda doc: doc["model"].update(peephole=True))
    with pytest.raises(CheckpointError, match="unknown fields"):
        load_checkpoint(changed)


# --------------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embed", [0, 4])
def test_torch_modules_loaded_from_a_checkpoint_compute_the_same_loss(tmp_path, rng, cell, embed):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    model = make_model(rng, cell=cell, embed=embed, dtype=np.float64)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, VOCAB)
    tensors = {name: torch.from_numpy(value) for name, value in safetensors.numpy.load_file(path).items()}
    V, H, L = len(VOCAB), model.config.hidden, model.config.layers
    width = embed or V
    rnn_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = rnn_class(width, H, num_layers=L, batch_first=False).double()
    head = torch.nn.Linear(H, V).double()
    rnn.load_state_dict({k[len("rnn.") :]: v for k, v in tensors.items() if k.startswith("rnn.")})
    head.load_state_dict({k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")})
    tokens = rng.integers(0, V, size=(7, 3))
    targets = rng.integers(0, V, size=(7, 3))
    with torch.no_grad():
        ids = torch.from_numpy(tokens)
        if embed:
            embedding = torch.nn.Embedding(V, embed).double()
            embedding.load_state_dict({"weight": tensors["embed.weight"]})
            x = embedding(ids)
        else:
            x = torch.nn.functional.one_hot(ids, V).double()
        out, _ = rnn(x)
        logits = head(out).reshape(-1, V)
        torch_loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(targets).reshape(-1))
    ours = load_checkpoint(path).build_model().loss(tokens, targets).loss
    assert ours == pytest.approx(float(torch_loss), rel=1e-12)


def test_to_torch_matches_saved_tensors(tmp_path, rng):
    model = make_model(rng)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, VOCAB)
    saved = safetensors.numpy.load_file(path)
    for name, value in to_torch(model.weights).items():
        np.testing.assert_array_equal(saved[name], value)


# --------------------------------------------------------------------------- digests (format 2)


def test_every_flipped_bit_position_is_refused(tmp_path, rng):
    """A bit flipped in any byte of the file (header, metadata or tensor data) is an error."""
    model = make_model(rng, layers=1, embed=0)
    path = tmp_path / "m.safetensors"
    save_sample(path, model)
    raw = bytearray(path.read_bytes())
    damaged = tmp_path / "damaged.safetensors"
    loaded = []
    for offset in range(len(raw)):
        flipped = bytearray(raw)
        flipped[offset] ^= 1 << (offset % 8)
        damaged.write_bytes(flipped)
        try:
            load_checkpoint(damaged)
        except CheckpointError:
            continue
        loaded.append(offset)
    assert loaded == [], f"{len(loaded)} of {len(raw)} damaged files loaded, e.g. at offsets {loaded[:5]}"


def test_a_damaged_tensor_is_named(good_file):
    raw = bytearray(good_file.read_bytes())
    raw[-3] ^= 0x10  # inside the last tensor's data
    good_file.write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"damaged: the bytes of tensor '.+' differ"):
        load_checkpoint(good_file)


def test_metadata_changed_after_writing_is_refused(good_file):
    tensors = safetensors.numpy.load_file(good_file)
    (length,) = struct.unpack("<Q", good_file.read_bytes()[:8])
    metadata = json.loads(good_file.read_bytes()[8 : 8 + length])["__metadata__"]
    metadata["numrnn"] = metadata["numrnn"].replace('"step": 7', '"step": 8')
    good_file.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="metadata does not match the digest"):
        load_checkpoint(good_file)


def test_a_checkpoint_of_an_unknown_task_names_it(good_file):
    changed = rewrite_document(good_file, lambda doc: doc.update(task="summarise"))
    with pytest.raises(CheckpointError, match="task 'summarise'.*upgrade numrnn"):
        load_checkpoint(changed)
