"""What every part of speed.py works from: its constants, the configurations and their rows
(one model each) with their FLOP and byte counts, the run's settings, the job and thread
environment of a spawned child, and the numrnn model, PyTorch twin and data a child builds, on
the CPU or the GPU.

Standard library only at import: speed.py's spawned children import this before they set their
thread variables.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from machine import openblas_kernels

VOCAB_SIZE = 65
# Any 65 distinct characters do for sampling: the text itself is thrown away.
ARBITRARY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .\n"
LR = 2e-3
GRAD_CLIP = 5.0
THREADS = 2
SAMPLE_LENGTH = 2000
SAMPLE_TEMPERATURE = 1.0
PRIME_LENGTH = 20
FLOAT32_BYTES = 4
STARTUP_SAMPLE_LENGTH = 200
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DEVICES = ("cpu", "cuda")

CONFIGS = {
    "A": dict(cells=("rnn",), hidden=100, layers=1, batch=1, seq_len=25, embed=0),
    "B": dict(cells=("rnn", "gru", "lstm"), hidden=128, layers=2, batch=50, seq_len=50, embed=64),
    "C": dict(cells=("rnn", "gru", "lstm"), hidden=512, layers=2, batch=50, seq_len=100, embed=64),
    "D": dict(cells=("lstm",), hidden=1024, layers=1, batch=64, seq_len=64, embed=64),
}


@dataclass(frozen=True)
class Row:
    """One model to measure: a configuration letter and a cell."""

    config: str
    cell: str
    hidden: int
    layers: int
    batch: int
    seq_len: int
    embed: int
    vocab: int = VOCAB_SIZE

    @classmethod
    def of(cls, config, cell):
        """The row of a configuration (a letter of CONFIGS) and a cell."""
        return cls(config, cell, **{k: v for k, v in CONFIGS[config].items() if k != "cells"})

    @property
    def name(self):
        return f"{self.config} {self.cell}"

    @property
    def gate_width(self):
        return GATES[self.cell] * self.hidden

    @property
    def chars_per_step(self):
        return self.batch * self.seq_len


@dataclass(frozen=True)
class Job:
    """What one spawned child measures: the fields its function reads."""

    row: Row | None = None
    rows: tuple = ()
    steps: int = 0
    warmup: int = 0
    runs: int = 0
    min_seconds: float = 0.0
    corpus: str = ""
    seed: int = 0
    path: str = ""
    device: str = "cpu"  # where both sides' models, batches and optimizer state live
    weights: str = "float32"  # what numrnn's sampler reads (``Sampler(weights=...)``)


def settings_job(settings, row, **fields):
    """The Job a child measuring ``row`` gets from the run's settings, ``fields`` on top."""
    return Job(
        row=row,
        steps=settings.steps,
        warmup=settings.warmup,
        runs=settings.sample_runs,
        min_seconds=settings.min_seconds,
        corpus=settings.corpus,
        seed=settings.seed,
        device=settings.device,
        **fields,
    )


@dataclass
class Settings:
    """What the command line asked for, with the defaults filled in."""

    rows: list
    sides: list
    repeats: int
    steps: int
    warmup: int
    sample_runs: int
    min_seconds: float
    gemm_runs: int
    startup_runs: int
    corpus: str
    seed: int
    kernel_cache: str
    startup: bool
    under_load: bool
    quick: bool
    notes: list = field(default_factory=list)
    device: str = "cpu"


def forward_flops(row):
    """Dense matmul FLOPs of one forward pass over B x T characters (the one-hot input of
    layer 0 is a row lookup: 0)."""
    per_char = 0
    for layer in range(row.layers):
        width = row.embed if layer == 0 else row.hidden
        per_char += (width + row.hidden) * row.gate_width
    per_char += row.hidden * row.vocab
    return 2 * row.chars_per_step * per_char


def train_flops(row):
    """The forward's dense FLOPs three times: forward, input gradients, weight gradients."""
    return 3 * forward_flops(row)


def step_product_flops(row):
    """The part of train_flops that runs as one small product a time step: each layer's
    recurrent product ``h_{t-1} @ W_hh`` (B x H by H x G) forward, and ``W_hh @ dgates.T``
    backward; the weight gradients and input projections are single large products."""
    return 2 * row.layers * 2 * row.chars_per_step * row.hidden * row.gate_width


def sample_weight_bytes(row):
    """The weight bytes one batch-1 step reads: an embedding row (or Wx row for one-hot), every
    layer's matrices and biases, the head."""
    G = row.gate_width
    floats = 0
    for layer in range(row.layers):
        if layer == 0 and not row.embed:
            floats += G  # one-hot: one row of Wx
        elif layer == 0:
            floats += row.embed + row.embed * G  # one embedding row, then Wx
        else:
            floats += row.hidden * G
        floats += row.hidden * G + 2 * G
    floats += row.hidden * row.vocab + row.vocab
    return FLOAT32_BYTES * floats


def load_ids(corpus, seed):
    """(ids, source): the corpus when it has exactly VOCAB_SIZE characters, else random ids."""
    import numpy as np

    from numrnn.data import Vocab, read_text

    if corpus and Path(corpus).is_file():
        text = read_text(corpus)
        vocab = Vocab.from_text(text)
        if len(vocab) == VOCAB_SIZE:
            ids, _ = vocab.encode(text)
            return np.asarray(ids, dtype=np.int64), Path(corpus).name
    ids = np.random.default_rng(seed).integers(0, VOCAB_SIZE, size=400_000, dtype=np.int64)
    return ids, "random ids"


def build_numrnn_model(row, seed, device="cpu"):
    """The row's numrnn model, float32, initialised from default_rng(seed) (drawn on the host,
    so the same weights on either device)."""
    import numpy as np

    from numrnn.model import Model, ModelConfig

    config = ModelConfig(
        cell=row.cell, vocab_size=row.vocab, hidden=row.hidden, layers=row.layers, embed=row.embed
    )
    return Model(config, dtype=np.float32, device=device).init_weights(np.random.default_rng(seed))


def build_torch_model(row, device="cpu"):
    """The row's PyTorch twin, with torch's own initialisation (torch's children only), on
    ``device`` (initialised on the CPU, then moved: the same weights on either device)."""
    from twins import CharLM

    return CharLM(row.cell, row.vocab, row.hidden, row.layers, row.embed).to(device)


def load_numrnn_backend(device):
    """Import numrnn's kernels for ``device`` (not yet compiled or loaded)."""
    if device == "cpu":
        import numrnn.kernels.cpu  # noqa: F401
    else:
        from numrnn.kernels import get_backend

        get_backend(device)


def numrnn_gpu_name():
    """The GPU a numrnn CUDA child runs on, for the header (numba's simulator has none)."""
    import numba

    if numba.config.ENABLE_CUDASIM:
        return "numba CUDA simulator (no GPU)"
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def numrnn_threads():
    """The threads numrnn's child runs with, and the OpenBLAS kernels its products ran on."""
    import numba

    return dict(
        numba=numba.get_num_threads(),
        openblas_env=os.environ.get("OPENBLAS_NUM_THREADS"),
        openblas_kernels=openblas_kernels(),
    )


def numrnn_about(device):
    """What a numrnn child's raw results say of where it ran: its threads on the CPU, its GPU's
    name on cuda (the host's threads do not bound a GPU run)."""
    return dict(threads=numrnn_threads()) if device == "cpu" else dict(gpu=numrnn_gpu_name())


def torch_about(torch, device):
    """``numrnn_about`` for a PyTorch child."""
    if device == "cpu":
        return dict(threads=dict(torch=torch.get_num_threads()))
    return dict(gpu=torch.cuda.get_device_name())


def child_env(side, task, cache_dir):
    """Thread settings (and numrnn's kernel cache) for one child."""
    blas = "1" if (side, task) == ("numrnn", "sample") else str(THREADS)
    return {
        "OPENBLAS_NUM_THREADS": blas,
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        "NUMBA_NUM_THREADS": str(THREADS),
        "NUMRNN_CACHE_DIR": cache_dir,
    }


def say(message):
    """A progress line on stderr, so stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)
