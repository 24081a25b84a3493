"""Checkpoints: one ``.safetensors`` file with weights, optimizer state and metadata.

Layout of a file (DESIGN.md section 5):

- model weights under PyTorch's state_dict names and shapes (``embed.weight`` (V, E),
  ``rnn.weight_ih_l{k}`` (G, D), ``rnn.weight_hh_l{k}`` (G, H), ``rnn.bias_ih_l{k}``,
  ``rnn.bias_hh_l{k}``, ``head.weight`` (K, H), ``head.bias``), so torch modules load them;
- optimizer state under ``optim.<name>`` (flat, in the order of the parameter buffer);
- the training streams' carried state under ``state.h`` and ``state.c`` (L, B, H);
- in the header metadata, under the key ``numrnn``, a JSON document: format and version,
  numrnn's version, the task (``numrnn.tasks``), the configs, the vocabulary (index = token
  id), the labels of a classifier or a generator, training progress, the RNG state and the
  best validation loss; since format 2 also a SHA-256 digest of every tensor's bytes
  (``tensors``), and under ``numrnn.sha256`` the digest of the document itself.

Files are written atomically (a temp file in the same folder, fsync, rename), so a crash
mid-write leaves the previous checkpoint whole. Loading checks the format, its version,
every tensor's name and shape, and the digests, so a damaged byte anywhere is found, and
turns every problem into a ``CheckpointError``. Format-1 files (no task, no digests; always
language models) still load.
"""

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from numrnn import __version__
from numrnn.cells import CELL_TABLE
from numrnn.data import Vocab
from numrnn.errors import CheckpointError, ConfigError, DataError
from numrnn.params import to_torch, torch_shapes

FORMAT = "numrnn-checkpoint"
FORMAT_VERSION = 2
META_KEY = "numrnn"
DIGEST_KEY = "numrnn.sha256"
DIGEST_CHARS = 16  # of a tensor's SHA-256 hex digest: 64 bits, far past any chance collision
_DTYPES = {"float32": np.float32, "float64": np.float64}
_HEADER_LIMIT = 100_000_000  # safetensors' own cap on the JSON header


@dataclasses.dataclass
class Checkpoint:
    """What a checkpoint file holds, checked. ``meta`` is the JSON document."""

    meta: dict
    weights: dict  # PyTorch layout, by state_dict name
    optim: dict  # optimizer state, names without the "optim." prefix
    state: dict  # carried state of the training streams: "h" (and "c"), or empty
    path: Path = None

    @property
    def task(self):
        from numrnn.tasks import DEFAULT_TASK

        return self.meta.get("task") or DEFAULT_TASK

    @property
    def labels(self):
        """A classifier's class names (index = class id), else None."""
        return self.meta.get("labels")

    @property
    def model_config(self):
        from numrnn.model import ModelConfig

        return ModelConfig(**self.meta["model"])

    @property
    def vocab(self):
        """The input characters (a translator's: its source's)."""
        return Vocab(self.meta["vocab"])

    @property
    def target_vocab(self):
        """A translator's target characters (END among them, START last), else None."""
        doc = self.meta.get("translate")
        return Vocab(doc["target_vocab"]) if doc else None

    @property
    def dtype(self):
        return np.dtype(_DTYPES[self.meta["dtype"]])

    @property
    def parameter_count(self):
        return int(sum(value.size for value in self.weights.values()))

    def build_model(self, device="cpu"):
        """The task's network with this checkpoint's architecture, dtype and weights, on
        ``device`` (checkpoints are the same whichever device wrote them)."""
        from numrnn.tasks import network_class

        model = network_class(self.task)(self.model_config, dtype=self.dtype, device=device)
        return model.load_torch_weights(self.weights)


# --------------------------------------------------------------------------- saving


def save_checkpoint(path, model, vocab, *, meta=None, optim=None, state=None):
    """Write ``model``'s weights (and optimizer state, carried state, metadata) atomically.

    meta: extra JSON-serialisable fields for the document (train config, progress, rng...).
    optim: name -> flat array. state: a numrnn.model.State of the training streams. Arrays
    on a device are copied to the host here (``model.kernels.to_host``).
    """
    path = Path(path)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "numrnn_version": __version__,
        "model": dataclasses.asdict(model.config),
        "dtype": model.dtype.name,
        "vocab": list(vocab.chars),
        **(meta or {}),
    }
    host = model.kernels.to_host
    tensors = to_torch(model.host_weights())
    for name, value in (optim or {}).items():
        tensors[f"optim.{name}"] = np.ascontiguousarray(host(value))
    if state is not None:
        tensors["state.h"] = np.ascontiguousarray(host(state.h))
        if state.c is not None:
            tensors["state.c"] = np.ascontiguousarray(host(state.c))
    document["tensors"] = {name: tensor_digest(value) for name, value in tensors.items()}
    import safetensors.numpy

    text = json.dumps(document)
    payload = safetensors.numpy.save(tensors, metadata={META_KEY: text, DIGEST_KEY: text_digest(text)})
    write_atomically(path, payload)


def tensor_digest(array):
    """The first DIGEST_CHARS hex digits of the SHA-256 of a tensor's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()[:DIGEST_CHARS]


def text_digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_atomically(path, payload):
    """Replace ``path`` with ``payload`` so that a reader sees the old file or the new one whole."""
    path = Path(path)
    folder = path.parent
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CheckpointError(f"cannot write a checkpoint in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path):
    """Fail now, not after hours of training, if ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a file name, e.g. {path / 'model.safetensors'}")
    folder = path.parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot write {path}: the folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK):
        raise CheckpointError(f"cannot write {path}: the file is read-only")


def best_path(path):
    """Where the best-by-validation checkpoint goes: FILE.best.safetensors beside FILE."""
    path = Path(path)
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    return path.with_name(f"{stem}.best.safetensors")


# --------------------------------------------------------------------------- loading


def load_checkpoint(path):
    """Read and check a checkpoint; every problem is a CheckpointError saying what and why."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = _read_header(path, raw)
    document = _read_document(path, header)
    try:
        import safetensors.numpy

        tensors = safetensors.numpy.load(raw)
    except Exception as exc:  # safetensors raises its own error type for every defect
        raise CheckpointError(f"{path} is damaged (truncated or corrupt): {exc}") from None
    return _check(path, document, tensors)


def _read_header(path, raw):
    not_safetensors = f"{path} is not a safetensors checkpoint"
    if len(raw) < 8:
        raise CheckpointError(f"{not_safetensors} (only {len(raw)} bytes)")
    (length,) = struct.unpack("<Q", raw[:8])
    if length > _HEADER_LIMIT or length < 2:
        raise CheckpointError(f"{not_safetensors} (its first bytes are not a safetensors header)")
    if 8 + length > len(raw):
        raise CheckpointError(
            f"{path} is truncated: its header needs {8 + length} bytes, the file has {len(raw)}"
        )
    try:
        header = json.loads(raw[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{not_safetensors} (its header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{not_safetensors} (its header is not a JSON object)")
    return header


def _read_document(path, header):
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or META_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a numrnn checkpoint "
            f"(its metadata has no {META_KEY!r} entry)"
        )
    try:
        document = json.loads(metadata[META_KEY])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: its numrnn metadata is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a numrnn checkpoint (unknown format)")
    version = document.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: its format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer numrnn ({document.get('numrnn_version', '?')}, "
            f"checkpoint format {version}); this numrnn {__version__} reads format "
            f"{FORMAT_VERSION}; upgrade numrnn: pip install -U numrnn"
        )
    if version >= 2 and metadata.get(DIGEST_KEY) != text_digest(metadata[META_KEY]):
        raise CheckpointError(
            f"{path} is damaged: its metadata does not match the digest written "
            f"with it; use another checkpoint (e.g. the .best one) or retrain"
        )
    return document


def _check(path, document, tensors):
    from numrnn.model import ModelConfig
    from numrnn.tasks import DEFAULT_TASK, TASKS, layout_of

    def bad(what):
        return CheckpointError(f"{path} is inconsistent: {what}")

    task = document.get("task") or DEFAULT_TASK
    if task not in TASKS:
        raise CheckpointError(
            f"{path} holds a model for the task {task!r}, which this numrnn "
            f"{__version__} does not know; upgrade numrnn: pip install -U numrnn"
        )

    fields = {field.name for field in dataclasses.fields(ModelConfig)}
    model_doc = document.get("model")
    if not isinstance(model_doc, dict) or set(model_doc) - fields:
        raise bad("its model configuration is missing or has unknown fields")
    try:
        config = ModelConfig(**model_doc).validate()
    except (ConfigError, TypeError) as exc:
        raise bad(f"model configuration: {exc}") from None
    if document.get("dtype") not in _DTYPES:
        raise bad(f"dtype {document.get('dtype')!r} is not float32 or float64")
    dtype = np.dtype(_DTYPES[document["dtype"]])
    vocab = document.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(c, str) and len(c) == 1 for c in vocab):
        raise bad("its vocabulary is not a list of characters")
    try:
        Vocab(vocab)
    except DataError:
        raise bad("its vocabulary lists a character twice") from None
    if len(vocab) != config.vocab_size:
        raise bad(f"{len(vocab)} characters in the vocabulary, but vocab_size {config.vocab_size}")
    labels = document.get("labels")
    if task in ("classify", "generate"):
        if (
            not isinstance(labels, list)
            or not all(isinstance(label, str) for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise bad("its labels are not a list of distinct names")
    if task == "classify" and len(labels) != config.output_size:
        raise bad(f"{len(labels)} labels, but the classifier has {config.output_size} outputs")
    if task != "generate" and config.condition != "none":
        raise bad(f"{task} models are not conditioned on a label (condition {config.condition})")
    if task == "generate":
        if config.condition == "none":
            raise bad("a generator's model must be conditioned on its labels (condition none)")
        if len(labels) != config.condition_classes:
            raise bad(f"{len(labels)} labels, but the model is conditioned on {config.condition_classes}")

    if task != "translate" and (config.attention != "none" or config.decoder_hidden):
        raise bad(f"{task} models have no attention or decoder (attention {config.attention})")
    if task == "translate":
        _check_target_vocab(bad, document.get("translate"), config)
    try:
        layout = layout_of(task, config)
    except (ConfigError, ValueError) as exc:
        raise bad(f"model configuration: {exc}") from None
    expected = torch_shapes(layout)
    weights, optim, state = {}, {}, {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            optim[name[len("optim.") :]] = value
        elif name.startswith("state."):
            state[name[len("state.") :]] = value
        elif name in expected:
            weights[name] = value
        else:
            raise bad(f"unexpected tensor {name!r}")
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise bad(f"missing tensor(s) {', '.join(missing)}")
    for name, value in weights.items():
        if tuple(value.shape) != tuple(expected[name]):
            raise bad(f"{name} has shape {tuple(value.shape)}, the model needs {tuple(expected[name])}")
    for group in (weights, optim, state):
        for name, value in group.items():
            if value.dtype != dtype:
                raise bad(f"{name} is {value.dtype}, the checkpoint says {dtype}")
    for name, value in optim.items():
        if value.shape != (layout.size,):
            raise bad(f"optim.{name} has shape {value.shape}, expected ({layout.size},)")
    state_names = set(CELL_TABLE[config.cell].states)
    if state and set(state) != state_names:
        raise bad(f"state tensors {sorted(state)} do not fit a {config.cell} model")
    for name, value in state.items():
        if value.ndim != 3 or value.shape[0] != config.layers or value.shape[2] != config.hidden:
            raise bad(f"state.{name} has shape {value.shape}, expected (layers, batch, hidden)")
    if document["format_version"] >= 2:
        _check_digests(path, document.get("tensors"), tensors)
    return Checkpoint(meta=document, weights=weights, optim=optim, state=state, path=path)


def _check_target_vocab(bad, doc, config):
    # A translator's target characters: output_size of them, then START (an input only).
    from numrnn.tasks.generate import END, START

    chars = doc.get("target_vocab") if isinstance(doc, dict) else None
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise bad("its target vocabulary is not a list of characters")
    if len(set(chars)) != len(chars) or not chars or chars[-1] != START or END not in chars:
        raise bad("its target vocabulary must list each character once, END among them and START last")
    if len(chars) != config.outputs + 1:
        raise bad(f"{len(chars)} target characters, but the decoder has {config.outputs} outputs and START")


def _check_digests(path, digests, tensors):
    if not isinstance(digests, dict) or set(digests) != set(tensors):
        raise CheckpointError(
            f"{path} is damaged: the tensors it holds are not the ones written "
            f"(their list of digests differs); use another checkpoint or retrain"
        )
    for name, value in tensors.items():
        if tensor_digest(value) != digests[name]:
            raise CheckpointError(
                f"{path} is damaged: the bytes of tensor {name!r} differ from "
                f"those written (digest mismatch); use another checkpoint "
                f"(e.g. the .best one) or retrain"
            )
