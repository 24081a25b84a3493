"""Speed: numrnn against PyTorch on the same models, training and sampling, in one run.

What it measures. For each configuration below, and each cell it lists, a character-level
language model (embedding or one-hot -> stacked RNN(tanh)/GRU/LSTM -> linear head, vocab 65,
float32) is trained and sampled by numrnn and by the same architecture in PyTorch:

    config  cells            hidden x layers  batch x seq  input
    A       rnn              100 x 1          1 x 25       one-hot (min-char-rnn)
    B       rnn, gru, lstm   128 x 2          50 x 50      embedding 64
    C       rnn, gru, lstm   512 x 2          50 x 100     embedding 64
    D       lstm             1024 x 1         64 x 64      embedding 64

- Training step: forward over B x T characters, mean cross-entropy over all of them, BPTT,
  global-norm clip 5.0, Adam lr 2e-3, the hidden state carried from step to step (reset at the
  end of the text). numrnn runs exactly its product step (``Trainer._step``):
  ``Model.loss_and_grad`` -> ``clip_global_norm`` -> ``Optimizer("adam").update``. PyTorch runs
  nn.Embedding (one-hot for A) + nn.RNN/nn.GRU/nn.LSTM + nn.Linear + F.cross_entropy +
  clip_grad_norm_ + torch.optim.Adam, its defaults otherwise. Both read the same batches
  (``numrnn.data.TextStreams`` over ../shared/data/tinyshakespeare.txt when it exists and has 65
  distinct characters, random ids otherwise).
- Sampling: batch 1, one character at a time, temperature 1.0, 2,000 characters after a
  20-character prime. numrnn through ``Sampler(model, vocab).generate`` (its compiled loop);
  PyTorch in a ``torch.no_grad()`` Python loop with ``torch.multinomial``.
- Threads: 2 per side. numrnn's training children get OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
  NUMBA_NUM_THREADS = 2, set before numpy loads; its sampling children get
  OPENBLAS_NUM_THREADS=1, as ``numrnn sample`` sets it (batch-1 products are too small to share).
  PyTorch children call ``torch.set_num_threads(2)`` for both.

Every measurement runs in its own spawned process, so the two libraries' thread pools never
share a process; for each (config, cell) the numrnn and PyTorch children alternate, ``--repeats``
times (the order flips every repeat, since these machines' speed drifts). Each child warms up
(numba's compilation is done once beforehand, timed separately as "compile s", into a kernel
cache that is a fresh temporary folder unless --kernel-cache says otherwise), then times at
least ``--steps`` steps (and at least --min-seconds) or ``--sample-runs`` 2,000-character
generations. The table shows medians over all timed steps of all repeats, and:

- GFLOP/s: numrnn's training FLOPs (3 x the forward's dense matmul FLOPs; forward =
  2*T*B*(sum over layers of (D_l + H)*G) + 2*T*B*H*V, D_0 = embed width, 0 for one-hot input,
  which is a row lookup) over its median step time, and that as a share of the machine's float32
  GEMM peak (numpy 2048^3 matmul, 2 BLAS threads, median, measured at the start and the end of
  this run, the higher kept).
- The sampling bandwidth ceiling: a batch-1 step reads every weight once per character, so
  chars/s can be no more than the read bandwidth over a buffer of that many bytes (measured in
  each numrnn sampling child, a median: on 1 thread the best of numpy sum and the two
  orientations of a matrix-vector product; on 2 threads matrix-vector products over the two
  halves at once) divided by the bytes per character; numrnn's share of the 1-thread ceiling,
  the threads ``numrnn sample`` uses. (At A and B the weights fit in a near cache and the
  ceiling is only a reference.)
- Peak memory of each training child (ru_maxrss): after imports (the peak minus the peak once
  numpy/numba/numrnn or torch and the data are loaded) and raw.
- Start-up: cold and warm wall time of ``numrnn sample -c small.safetensors --length 200``
  (a 2 x 128 LSTM checkpoint made here; cold = NUMRNN_CACHE_DIR a fresh empty folder, warm = the
  next runs with the same folder) and of ``numrnn --help``, each a ``python -m numrnn_cli``
  subprocess.

Targets (numrnn / PyTorch) are printed next to each figure; nothing here asserts them.

Run it from the repository root (torch is optional; without it only numrnn's figures appear):

    python benchmarks/speed.py --quick --configs A,B     # a smoke run, about a minute
    python benchmarks/speed.py                           # everything, 3 repeats (about 11 min)
    python benchmarks/speed.py --configs C --cells lstm --models numrnn
    python benchmarks/speed.py --configs D --json results.json

Nothing is written outside temporary folders (the kernel cache included), unless you pass
--kernel-cache or --json PATH.
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from machine import BUSY_LOAD, cpu_name, load_average  # benchmarks/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere, numrnn not installed
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
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
GEMM_N = 2048
STARTUP_SAMPLE_LENGTH = 200
MAX_TRAIN_STEPS = 1000  # caps --min-seconds for tiny steps (config A)
MAX_SAMPLE_RUNS = 100
READS_PER_CALL = 8  # buffer reads per call of the threaded bandwidth probe
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

CONFIGS = {
    "A": dict(cells=("rnn",), hidden=100, layers=1, batch=1, seq_len=25, embed=0),
    "B": dict(cells=("rnn", "gru", "lstm"), hidden=128, layers=2, batch=50, seq_len=50, embed=64),
    "C": dict(cells=("rnn", "gru", "lstm"), hidden=512, layers=2, batch=50, seq_len=100, embed=64),
    "D": dict(cells=("lstm",), hidden=1024, layers=1, batch=64, seq_len=64, embed=64),
}
# numrnn / PyTorch chars/s ratios to reach; shares of the GEMM peak and of the bandwidth ceiling.
TRAIN_TARGETS = {("A", "rnn"): 10.0, ("B", "rnn"): 2.5, ("B", "gru"): 2.5, ("B", "lstm"): 1.5,
                 ("C", "rnn"): 1.3, ("C", "gru"): 1.3, ("C", "lstm"): 1.0, ("D", "lstm"): 1.0}
SAMPLE_TARGETS = {"A": 20.0, "B": 20.0, "C": 20.0, "D": 10.0}
GEMM_SHARE_TARGET = {"C": 0.65, "D": 0.65}
BANDWIDTH_SHARE_TARGET = {"C": 0.60, "D": 0.60}
STARTUP_TARGETS = {"help": 0.3, "sample": 1.0}  # warm wall seconds

DEFAULTS = dict(repeats=3, steps=20, warmup=3, sample_runs=3, min_seconds=1.0, gemm_runs=10,
                startup_runs=3)
QUICK = dict(repeats=1, steps=5, warmup=2, sample_runs=1, min_seconds=0.3, gemm_runs=5,
             startup_runs=1)


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
    """What one spawned child does: ``kind`` names a function of JOB_FUNCTIONS."""

    kind: str
    env: dict
    row: Optional[Row] = None
    rows: tuple = ()
    steps: int = 0
    warmup: int = 0
    runs: int = 0
    min_seconds: float = 0.0
    corpus: str = ""
    seed: int = 0
    path: str = ""


@dataclass
class Settings:
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
    quick: bool
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- arithmetic


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


def median(values):
    return float(statistics.median(values)) if values else float("nan")


def ratio(a, b):
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else float("nan")


# --------------------------------------------------------------------------- child helpers
# Everything below up to "orchestration" runs inside a spawned child. The child's first act is
# apply_env: the thread variables only count if they are set before numpy/numba/torch load.


def apply_env(env):
    loaded = [name for name in ("numpy", "numba", "torch", "scipy") if name in sys.modules]
    if loaded:
        raise RuntimeError(f"{', '.join(loaded)} loaded before the thread settings; "
                           f"the child must start clean")
    os.environ.update(env)


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


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


def time_calls(call, *, warmup, min_calls, min_seconds, max_calls):
    """(warm-up seconds per call, timed seconds per call): at least min_calls timed calls and
    at least min_seconds of them, at most max_calls."""
    warm, timed = [], []
    for _ in range(warmup):
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    begun = time.perf_counter()
    while len(timed) < min_calls or (time.perf_counter() - begun < min_seconds
                                     and len(timed) < max_calls):
        started = time.perf_counter()
        call()
        timed.append(time.perf_counter() - started)
    return warm, timed


class BatchCursor:
    """Trainer's walk over the streams: next batch, and whether the state must be reset."""

    def __init__(self, ids, row):
        from numrnn.data import TextStreams

        self.streams = TextStreams(ids, row.batch, row.seq_len)
        self.seq_len = row.seq_len
        self.pos = 0

    def next(self):
        tokens, targets = self.streams.batch_at(self.pos)
        self.pos += self.seq_len
        wrapped = self.pos + self.seq_len >= self.streams.stream_length
        if wrapped:
            self.pos = 0
        return tokens, targets, wrapped


def build_numrnn_model(row, seed):
    import numpy as np

    from numrnn.model import Model, ModelConfig

    config = ModelConfig(cell=row.cell, vocab_size=row.vocab, hidden=row.hidden,
                         layers=row.layers, embed=row.embed)
    return Model(config, dtype=np.float32).init_weights(np.random.default_rng(seed))


def numrnn_train_step(model, optimizer, cursor, rng, carry):
    """One product training step (Trainer._step without its divergence message)."""
    tokens, targets, wrapped = cursor.next()
    result = model.loss_and_grad(tokens, targets, carry["state"], train=True, rng=rng)
    model.kernels.clip_global_norm(model.grads, GRAD_CLIP)
    optimizer.update(model.params, model.grads, LR)
    carry["state"] = model.zero_state(cursor.streams.batch) if wrapped else result.state
    carry["losses"].append(result.loss)


def numrnn_threads():
    import numba

    return dict(numba=numba.get_num_threads(),
                openblas_env=os.environ.get("OPENBLAS_NUM_THREADS"))


def train_result(job, warm, timed, losses, rss_base, source, threads):
    rss_peak = peak_rss_mb()
    return dict(step_s=timed, warmup_s=warm, chars_per_step=job.row.chars_per_step,
                first_loss=losses[0], last_loss=losses[-1], rss_after_imports_mb=rss_base,
                rss_peak_mb=rss_peak, rss_growth_mb=rss_peak - rss_base, data=source,
                threads=threads)


def child_numrnn_train(job):
    import numpy as np

    import numrnn.kernels.cpu  # noqa: F401  (imported, not yet compiled or loaded)
    from numrnn.optim import Optimizer

    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed)
    optimizer = Optimizer("adam", model.layout.size, model.dtype, model.kernels)
    cursor, rng = BatchCursor(ids, job.row), np.random.default_rng(job.seed)
    carry = dict(state=model.zero_state(job.row.batch), losses=[])
    warm, timed = time_calls(lambda: numrnn_train_step(model, optimizer, cursor, rng, carry),
                             warmup=job.warmup, min_calls=job.steps,
                             min_seconds=job.min_seconds, max_calls=MAX_TRAIN_STEPS)
    return train_result(job, warm, timed, carry["losses"], rss_base, source, numrnn_threads())


def build_torch_model(torch, row):
    """nn.Embedding (one-hot without embed) -> nn.RNN(tanh)/GRU/LSTM -> nn.Linear, torch init."""
    nn = torch.nn
    cells = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

    class CharModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(row.vocab, row.embed) if row.embed else None
            kwargs = {"nonlinearity": "tanh"} if row.cell == "rnn" else {}
            self.rnn = cells[row.cell](row.embed or row.vocab, row.hidden,
                                       num_layers=row.layers, **kwargs)
            self.head = nn.Linear(row.hidden, row.vocab)

        def forward(self, tokens, state):
            # tokens (T, B) int64 -> logits (T, B, V), final state
            if self.embed is not None:
                x = self.embed(tokens)
            else:
                x = nn.functional.one_hot(tokens, row.vocab).float()
            out, state = self.rnn(x, state)
            return self.head(out), state

    return CharModel()


def torch_detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def torch_train_step(torch, model, optimizer, cursor, carry):
    tokens, targets, wrapped = cursor.next()
    logits, state = model(torch.from_numpy(tokens), carry["state"])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, model.head.out_features),
                                             torch.from_numpy(targets).reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    carry["state"] = None if wrapped else torch_detach(state)  # None: zeros
    carry["losses"].append(loss.item())


def child_torch_train(job):
    import torch

    torch.set_num_threads(THREADS)
    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    torch.manual_seed(job.seed)
    model = build_torch_model(torch, job.row)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    cursor, carry = BatchCursor(ids, job.row), dict(state=None, losses=[])
    warm, timed = time_calls(lambda: torch_train_step(torch, model, optimizer, cursor, carry),
                             warmup=job.warmup, min_calls=job.steps,
                             min_seconds=job.min_seconds, max_calls=MAX_TRAIN_STEPS)
    return train_result(job, warm, timed, carry["losses"], rss_base, source,
                        dict(torch=torch.get_num_threads()))


def read_bandwidth(nbytes, min_seconds):
    """Bytes/s reading a float32 buffer of ``nbytes`` over and over, a median per method.

    One thread (as ``numrnn sample`` runs its BLAS): the best of numpy sum, A @ x and x @ A
    (a batch-1 step's products, both orientations). THREADS threads: x @ A over each thread's
    share of the rows at the same time (numpy lets go of the GIL), READS_PER_CALL reads per
    call so that handing work to the threads costs little; never less than one thread.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    cols = 1024
    rows = max(THREADS, -(-nbytes // (FLOAT32_BYTES * cols)))
    buffer = np.full((rows, cols), 0.5, dtype=np.float32)
    x_cols, out_rows = np.ones(cols, np.float32), np.empty(rows, np.float32)
    x_rows, out_cols = np.ones(rows, np.float32), np.empty(cols, np.float32)
    shares = [(part, np.ones(part.shape[0], np.float32), np.empty(cols, np.float32))
              for part in np.array_split(buffer, THREADS)]

    def read_share(share):
        part, x, out = share
        for _ in range(READS_PER_CALL):
            np.matmul(x, part, out=out)

    def rate(call, reads=1):
        _, timed = time_calls(call, warmup=3, min_calls=20, min_seconds=min_seconds,
                              max_calls=5000)
        return reads * buffer.nbytes / median(timed)

    single = {"sum": rate(lambda: buffer.sum()),
              "A@x": rate(lambda: np.matmul(buffer, x_cols, out=out_rows)),
              "x@A": rate(lambda: np.matmul(x_rows, buffer, out=out_cols))}
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = rate(lambda: list(pool.map(read_share, shares)), READS_PER_CALL)
    best = max(single, key=single.get)
    return dict(bytes_per_s=single[best], method=best, rates=single,
                threaded_bytes_per_s=max(threaded, single[best]), threads=THREADS,
                buffer_bytes=int(buffer.nbytes))


def sample_result(job, warm, timed, rss_base, threads, extra=None):
    return dict(run_s=timed, warmup_s=warm, chars_per_run=SAMPLE_LENGTH, threads=threads,
                rss_after_imports_mb=rss_base, rss_peak_mb=peak_rss_mb(), **(extra or {}))


def child_numrnn_sample(job):
    import numpy as np

    import numrnn.kernels.cpu  # noqa: F401
    from numrnn.data import Vocab
    from numrnn.sampling import SampleConfig, Sampler

    ids, _ = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed)
    sampler = Sampler(model, Vocab(ARBITRARY_CHARS))
    prime = np.ascontiguousarray(ids[:PRIME_LENGTH])
    rng = np.random.default_rng(job.seed)

    def generate(length=SAMPLE_LENGTH):
        config = SampleConfig(length=length, temperature=SAMPLE_TEMPERATURE)
        text = "".join(sampler.generate(prime, config, rng))
        assert len(text) == length

    warm_started = time.perf_counter()
    generate(STARTUP_SAMPLE_LENGTH)  # loads the kernels
    first = time.perf_counter() - warm_started
    warm, timed = time_calls(generate, warmup=1, min_calls=job.runs,
                             min_seconds=job.min_seconds, max_calls=MAX_SAMPLE_RUNS)
    bandwidth = read_bandwidth(sample_weight_bytes(job.row), min(job.min_seconds, 0.25))
    return sample_result(job, [first, *warm], timed, rss_base, numrnn_threads(),
                         dict(bandwidth=bandwidth))


def torch_generate(torch, model, prime, length, generator):
    """Batch-1 sampling in a Python loop: feed the prime, then draw and feed back one id at a
    time (softmax at the temperature, torch.multinomial)."""
    with torch.no_grad():
        _, state = model(prime[:-1].view(-1, 1), None)
        token = prime[-1].view(1, 1)
        ids = []
        for _ in range(length):
            logits, state = model(token, state)
            probs = torch.softmax(logits[0, 0] / SAMPLE_TEMPERATURE, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            ids.append(int(token))
    return ids


def child_torch_sample(job):
    import torch

    torch.set_num_threads(THREADS)
    ids, _ = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    torch.manual_seed(job.seed)
    model = build_torch_model(torch, job.row).eval()
    prime = torch.from_numpy(ids[:PRIME_LENGTH].copy())
    generator = torch.Generator().manual_seed(job.seed)

    def generate(length=SAMPLE_LENGTH):
        assert len(torch_generate(torch, model, prime, length, generator)) == length

    warm, timed = time_calls(generate, warmup=1, min_calls=job.runs,
                             min_seconds=job.min_seconds, max_calls=MAX_SAMPLE_RUNS)
    return sample_result(job, warm, timed, rss_base, dict(torch=torch.get_num_threads()))


def child_gemm_peak(job):
    """float32 GFLOP/s of an n^3 numpy matmul with this process's BLAS threads (median)."""
    import numpy as np

    rng = np.random.default_rng(job.seed)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    warm, timed = time_calls(lambda: np.matmul(a, b, out=c), warmup=2, min_calls=job.runs,
                             min_seconds=0.0, max_calls=job.runs)
    flops = 2.0 * GEMM_N**3
    return dict(gflops=flops / median(timed) / 1e9, best_gflops=flops / min(timed) / 1e9,
                run_s=timed, n=GEMM_N, openblas_env=os.environ.get("OPENBLAS_NUM_THREADS"))


def child_compile(job):
    """Seconds of the first train step and first sample of a tiny model per row, in row order:
    numba compiles (or loads from the kernel cache) what that row needs and earlier rows did
    not."""
    import numpy as np

    import numrnn.kernels.cpu  # noqa: F401
    from numrnn.data import Vocab
    from numrnn.optim import Optimizer
    from numrnn.sampling import SampleConfig, Sampler

    rng = np.random.default_rng(job.seed)
    times = {}
    for row in job.rows:
        tiny = replace(row, hidden=8, batch=2, seq_len=3, embed=8 if row.embed else 0)
        model = build_numrnn_model(tiny, job.seed)
        optimizer = Optimizer("adam", model.layout.size, model.dtype, model.kernels)
        tokens = rng.integers(0, row.vocab, size=(tiny.seq_len, tiny.batch))
        started = time.perf_counter()
        result = model.loss_and_grad(tokens, tokens, model.zero_state(tiny.batch), train=True,
                                     rng=rng)
        model.kernels.clip_global_norm(model.grads, GRAD_CLIP)
        optimizer.update(model.params, model.grads, LR)
        assert math.isfinite(result.loss)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        sampler = Sampler(model, Vocab(ARBITRARY_CHARS))
        "".join(sampler.generate(tokens[:, 0], SampleConfig(length=10), rng))
        times[row.name] = dict(train_s=train_s, sample_s=time.perf_counter() - started)
    return times


def child_make_checkpoint(job):
    """Write a small random-weight checkpoint (the 2 x 128 LSTM of config B) to job.path."""
    from numrnn.checkpoint import save_checkpoint
    from numrnn.data import Vocab

    model = build_numrnn_model(job.row, job.seed)
    save_checkpoint(job.path, model, Vocab(ARBITRARY_CHARS))
    return dict(path=job.path, bytes=Path(job.path).stat().st_size)


JOB_FUNCTIONS = {
    "numrnn-train": child_numrnn_train,
    "torch-train": child_torch_train,
    "numrnn-sample": child_numrnn_sample,
    "torch-sample": child_torch_sample,
    "gemm": child_gemm_peak,
    "compile": child_compile,
    "checkpoint": child_make_checkpoint,
}


def run_job(job):
    apply_env(job.env)
    return JOB_FUNCTIONS[job.kind](job)


# --------------------------------------------------------------------------- orchestration


def run_in_own_process(job):
    """Run ``job`` in a fresh spawned process: (result, wall seconds); an exception in the
    child comes back as {"error": ...} so one failure does not lose the whole run."""
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    try:
        with context.Pool(processes=1) as pool:
            result = pool.apply(run_job, (job,))
    except Exception as exc:  # noqa: BLE001  (reported in the table and the notes)
        result = dict(error=f"{type(exc).__name__}: {exc}")
    return result, time.perf_counter() - started


def child_env(side, task, cache_dir):
    """Thread settings (and numrnn's kernel cache) for one child."""
    blas = "1" if (side, task) == ("numrnn", "sample") else str(THREADS)
    return {"OPENBLAS_NUM_THREADS": blas, "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS), "NUMBA_NUM_THREADS": str(THREADS),
            "NUMRNN_CACHE_DIR": cache_dir}


def say(message):
    print(message, file=sys.stderr, flush=True)


def measure_gemm(settings, when):
    job = Job("gemm", child_env("numrnn", "train", settings.kernel_cache),
              runs=settings.gemm_runs, seed=settings.seed)
    result, _ = run_in_own_process(job)
    if "error" not in result:
        say(f"GEMM peak ({when}): {result['gflops']:.0f} GFLOP/s "
            f"(float32 {GEMM_N}^3, {THREADS} threads, median of {settings.gemm_runs})")
    return result


def measure_compile(settings):
    job = Job("compile", child_env("numrnn", "train", settings.kernel_cache),
              rows=tuple(settings.rows), seed=settings.seed)
    say(f"compiling numrnn's kernels for {len(job.rows)} row(s) "
        f"(kernel cache {settings.kernel_cache})")
    result, wall = run_in_own_process(job)
    if "error" not in result:
        total = sum(t["train_s"] + t["sample_s"] for t in result.values())
        say(f"  compiled in {total:.1f} s ({wall:.1f} s with the process start)")
    return result


def describe_child(result, task):
    if "error" in result:
        return f"FAILED: {result['error']}"
    if task == "train":
        rate = result["chars_per_step"] / median(result["step_s"])
        return (f"{rate:,.0f} chars/s (median of {len(result['step_s'])} steps), "
                f"warm-up {sum(result['warmup_s']):.2f} s")
    rate = result["chars_per_run"] / median(result["run_s"])
    extra = ""
    if "bandwidth" in result:
        bandwidth = result["bandwidth"]
        extra = (f", reads {bandwidth['buffer_bytes'] / 1e6:.1f} MB at "
                 f"{bandwidth['bytes_per_s'] / 1e9:.0f} GB/s ({bandwidth['method']}), "
                 f"{bandwidth['threaded_bytes_per_s'] / 1e9:.0f} GB/s on {THREADS} threads")
    return f"{rate:,.0f} chars/s (median of {len(result['run_s'])} run(s)){extra}"


def measure_row(row, settings, counter):
    """Every repeat of every (side, task) of one row, the sides alternating."""
    runs = {f"{side}-{task}": [] for side in settings.sides for task in ("train", "sample")}
    for repeat in range(settings.repeats):
        order = settings.sides if repeat % 2 == 0 else list(reversed(settings.sides))
        for task in ("train", "sample"):
            for side in order:
                job = Job(f"{side}-{task}", child_env(side, task, settings.kernel_cache),
                          row=row, steps=settings.steps, warmup=settings.warmup,
                          runs=settings.sample_runs, min_seconds=settings.min_seconds,
                          corpus=settings.corpus, seed=settings.seed)
                load = load_average()
                result, wall = run_in_own_process(job)
                result.update(wall_s=wall, load_before=load)
                runs[job.kind].append(result)
                counter[0] += 1
                load_part = "" if load is None else f", load {load:.2f} before"
                say(f"[{counter[0]:>3}/{counter[1]}] {row.name:<7} repeat {repeat + 1}/"
                    f"{settings.repeats} {side:<6} {task:<6} {describe_child(result, task)}"
                    f" ({wall:.1f} s{load_part})")
    return runs


def pooled(results, key):
    return [value for r in results if "error" not in r for value in r[key]]


def good(results):
    return [r for r in results if "error" not in r]


def warmup_overhead(result):
    """What the warm-up steps took beyond as many steady steps: kernel loading, first touches,
    oneDNN primitive creation."""
    excess = sum(result["warmup_s"]) - len(result["warmup_s"]) * median(result["step_s"])
    return max(excess, 0.0)


def summarise_side(results, task, row):
    """Medians over every timed step (or generation) of every repeat of one side and task."""
    ok = good(results)
    if not ok:
        errors = [r["error"] for r in results]
        return dict(chars_per_s=float("nan"), errors=errors) if errors else None
    if task == "train":
        step = median(pooled(ok, "step_s"))
        summary = dict(chars_per_s=row.chars_per_step / step, median_step_s=step,
                       timed_steps=len(pooled(ok, "step_s")),
                       warmup_s=median([sum(r["warmup_s"]) for r in ok]),
                       warmup_overhead_s=median([warmup_overhead(r) for r in ok]),
                       rss_growth_mb=median([r["rss_growth_mb"] for r in ok]),
                       rss_peak_mb=median([r["rss_peak_mb"] for r in ok]),
                       per_repeat_chars_per_s=[row.chars_per_step / median(r["step_s"])
                                               for r in ok],
                       data=ok[0]["data"])
    else:
        run = median(pooled(ok, "run_s"))
        summary = dict(chars_per_s=SAMPLE_LENGTH / run, median_run_s=run,
                       timed_runs=len(pooled(ok, "run_s")),
                       per_repeat_chars_per_s=[SAMPLE_LENGTH / median(r["run_s"]) for r in ok])
        if "bandwidth" in ok[0]:
            summary.update(
                read_bytes_per_s=median([r["bandwidth"]["bytes_per_s"] for r in ok]),
                threaded_read_bytes_per_s=median([r["bandwidth"]["threaded_bytes_per_s"]
                                                  for r in ok]))
    summary["errors"] = [r["error"] for r in results if "error" in r]
    return summary


def summarise_row(row, runs, compile_times, gemm_peak):
    sides = {kind: summarise_side(results, kind.split("-")[1], row)
             for kind, results in runs.items()}
    get = lambda kind: (sides.get(kind) or {}).get("chars_per_s", float("nan"))  # noqa: E731
    summary = dict(row=asdict(row), sides=sides, runs=runs, compile=compile_times.get(row.name),
                   train_ratio=ratio(get("numrnn-train"), get("torch-train")),
                   sample_ratio=ratio(get("numrnn-sample"), get("torch-sample")),
                   train_target=TRAIN_TARGETS.get((row.config, row.cell)),
                   sample_target=SAMPLE_TARGETS.get(row.config),
                   train_flops=train_flops(row), sample_weight_bytes=sample_weight_bytes(row))
    numrnn_train = sides.get("numrnn-train") or {}
    if "median_step_s" in numrnn_train:
        gflops = train_flops(row) / numrnn_train["median_step_s"] / 1e9
        summary.update(gflops=gflops, gemm_share=ratio(gflops, gemm_peak))
    numrnn_sample = sides.get("numrnn-sample") or {}
    if "read_bytes_per_s" in numrnn_sample:
        ceiling = numrnn_sample["read_bytes_per_s"] / sample_weight_bytes(row)
        summary.update(bandwidth_ceiling_chars_per_s=ceiling,
                       bandwidth_ceiling_threads_chars_per_s=(
                           numrnn_sample["threaded_read_bytes_per_s"] / sample_weight_bytes(row)),
                       bandwidth_share=numrnn_sample["chars_per_s"] / ceiling)
    return summary


# --------------------------------------------------------------------------- start-up


def time_command(args, env, cwd):
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} exited with {done.returncode}: "
                           f"{done.stderr.strip()[-300:]}")
    return wall


def time_cold_and_warm(args, env, cwd, warm_runs):
    """The first run with a fresh NUMRNN_CACHE_DIR, then ``warm_runs`` more with the same."""
    cold = time_command(args, env, cwd)
    warm = [time_command(args, env, cwd) for _ in range(warm_runs)]
    return dict(cold_s=cold, warm_s=median(warm), warm_runs_s=warm)


def measure_startup(settings, tmp):
    checkpoint = Path(tmp) / "small.safetensors"
    small = Row("B", "lstm", **{k: v for k, v in CONFIGS["B"].items() if k != "cells"})
    made, _ = run_in_own_process(Job("checkpoint", child_env("numrnn", "sample",
                                                             settings.kernel_cache),
                                     row=small, seed=settings.seed, path=str(checkpoint)))
    if "error" in made:
        return dict(error=made["error"])
    commands = {
        "help": [sys.executable, "-m", "numrnn_cli", "--help"],
        "sample": [sys.executable, "-m", "numrnn_cli", "sample", "-c", str(checkpoint),
                   "--length", str(STARTUP_SAMPLE_LENGTH), "--seed", "1"],
    }
    results = dict(checkpoint_bytes=made["bytes"])
    for name, args in commands.items():
        env = dict(os.environ, NUMRNN_CACHE_DIR=tempfile.mkdtemp(prefix=f"cache-{name}-", dir=tmp))
        try:
            results[name] = time_cold_and_warm(args, env, str(REPO_ROOT), settings.startup_runs)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            results[name] = dict(error=str(exc))
        say(f"start-up {name}: {results[name]}")
    return results


# --------------------------------------------------------------------------- output


def fmt_rate(value):
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def fmt_ratio(value):
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def fmt_gflops(value):
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def verdict(value, target):
    """'>=2.5 ok' / '>=2.5 miss'; '-' without a target or a value."""
    if target is None:
        return "-"
    shown = f">={target:g}"
    if value is None or math.isnan(value):
        return shown
    return f"{shown} {'ok' if value >= target else 'miss'}"


def fmt_share(value, target):
    if value is None or math.isnan(value):
        return "-"
    mark = "" if target is None else (" ok" if value >= target else " miss")
    return f"{value:.0%}{mark}"


def fmt_ceilings(summary):
    one = summary.get("bandwidth_ceiling_chars_per_s")
    if one is None:
        return "-"
    return f"{fmt_rate(one)} / {fmt_rate(summary['bandwidth_ceiling_threads_chars_per_s'])}"


def fmt_memory(summary, key):
    parts = []
    for kind in ("numrnn-train", "torch-train"):
        side = summary["sides"].get(kind)
        parts.append("-" if not side or key not in side else f"{side[key]:.0f}")
    text = " / ".join(parts)
    if key == "rss_growth_mb" and "-" not in parts:
        text += " ok" if float(parts[0]) <= float(parts[1]) else " miss"
    return text


def fmt_compile(summary):
    times = summary["compile"]
    return "-" if not times else f"{times['train_s'] + times['sample_s']:.1f}"


def fmt_warmup(summary):
    parts = []
    for kind in ("numrnn-train", "torch-train"):
        side = summary["sides"].get(kind)
        parts.append("-" if not side or "warmup_overhead_s" not in side
                     else f"{side['warmup_overhead_s']:.2f}")
    return " / ".join(parts)


COLUMNS = ["model", "train c/s\nnumrnn", "train c/s\nPyTorch", "train\nratio", "train\ntarget",
           "sample c/s\nnumrnn", "sample c/s\nPyTorch", "sample\nratio", "sample\ntarget",
           "numrnn\nGFLOP/s", "% GEMM\npeak", f"bw ceiling c/s\n1 / {THREADS} threads",
           "share of\n1-thr. ceil.",
           "mem MB after\nimports nr/pt", "peak RSS MB\nnr / pt", "compile s\n(cold)",
           "warm-up +s\nnr / pt"]


def table_row(summary):
    row = Row(**summary["row"])
    rate = lambda kind: (summary["sides"].get(kind) or {}).get("chars_per_s")  # noqa: E731
    return [row.name,
            fmt_rate(rate("numrnn-train")), fmt_rate(rate("torch-train")),
            fmt_ratio(summary["train_ratio"]),
            verdict(summary["train_ratio"], summary["train_target"]),
            fmt_rate(rate("numrnn-sample")), fmt_rate(rate("torch-sample")),
            fmt_ratio(summary["sample_ratio"]),
            verdict(summary["sample_ratio"], summary["sample_target"]),
            fmt_gflops(summary.get("gflops")),
            fmt_share(summary.get("gemm_share"), GEMM_SHARE_TARGET.get(row.config)),
            fmt_ceilings(summary),
            fmt_share(summary.get("bandwidth_share"), BANDWIDTH_SHARE_TARGET.get(row.config)),
            fmt_memory(summary, "rss_growth_mb"), fmt_memory(summary, "rss_peak_mb"),
            fmt_compile(summary), fmt_warmup(summary)]


STARTUP_COLUMNS = ["command", "cold s", "warm s", "warm target", "ok"]


def startup_rows(startup):
    labels = {"help": "numrnn --help",
              "sample": f"numrnn sample -c small.safetensors --length {STARTUP_SAMPLE_LENGTH}"}
    rows = []
    for name, label in labels.items():
        result = startup.get(name) or dict(error=startup.get("error", "not run"))
        target = STARTUP_TARGETS[name]
        if "error" in result:
            rows.append([label, "error", "-", f"<={target:g}", "-"])
            continue
        ok = "ok" if result["warm_s"] <= target else "miss"
        rows.append([label, f"{result['cold_s']:.2f}", f"{result['warm_s']:.2f}",
                     f"<={target:g}", ok])
    return rows


def print_table(columns, rows, title, width):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        flat = [[c.replace("\n", " ") for c in columns], *rows]
        widths = [max(len(str(r[i])) for r in flat) for i in range(len(columns))]
        for r in flat:
            print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths))))
        return
    table = Table(title=title)
    table.add_column(columns[0], justify="left", no_wrap=True)
    for name in columns[1:]:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else width).print(table)


def versions():
    found = {}
    for name in ("numba", "numpy", "torch"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    from numrnn import __version__

    found["numrnn"] = __version__
    return found




def header_lines(report):
    v, s, gemm = report["versions"], report["settings"], report["gemm"]
    peaks = ", ".join(f"{when} {g['gflops']:.0f}" for when, g in gemm.items() if "gflops" in g)
    loads = ", ".join(f"{when} {load:.2f}" for when, load in report["load"].items()
                      if load is not None)
    torch_part = f"torch {v['torch']}" if v["torch"] else "torch not installed"
    data = next((side["data"] for row in report["rows"] for side in row["sides"].values()
                 if side and "data" in side), "-")
    return [
        f"{report['cpu']} | {report['cpus']} CPUs | load {loads} | {report['date']}",
        f"numrnn {v['numrnn']}, numba {v['numba']}, numpy {v['numpy']}, {torch_part} | "
        f"{THREADS} threads a side | float32 GEMM peak {report['gemm_peak']:.0f} GFLOP/s "
        f"({GEMM_N}^3 numpy matmul, {THREADS} threads; {peaks})",
        f"{s['repeats']} repeat(s) x >= {s['steps']} timed steps (>= {s['min_seconds']:g} s) after "
        f"{s['warmup']} warm-up, >= {s['sample_runs']} sample run(s) of {SAMPLE_LENGTH:,} chars | "
        f"train data: {data} | Adam {LR:g}, clip {GRAD_CLIP:g}, temperature "
        f"{SAMPLE_TEMPERATURE:g}",
    ]


def notes(report):
    s = report["settings"]
    lines = list(s["notes"])
    lines += [
        "train/sample c/s: chars per second, median over every timed step (generation) of every "
        "repeat; ratio = numrnn / PyTorch; target = the issue's numrnn/PyTorch target.",
        "GFLOP/s: 3 x the forward's dense matmul FLOPs (one-hot input of A counted as a lookup, "
        "0 FLOPs) / numrnn's median step; % GEMM peak: of the peak above (target 65% at C, D).",
        "bandwidth ceiling: read bandwidth over a buffer the size of the weights one batch-1 step "
        "reads (1 thread: best of numpy sum, A @ x, x @ A; 2 threads: x @ A on halves at once; "
        "measured in the numrnn sampling child) / those bytes; share: numrnn's sample c/s of the "
        "1-thread ceiling (target 60% at C, D; at A and B the weights sit in a "
        "near cache where per-step overheads, not reading, bound a step, so the share there is "
        "only a reference and can pass 100%). numrnn samples with OPENBLAS_NUM_THREADS=1, as "
        "`numrnn sample` does; PyTorch with set_num_threads(2).",
        "mem: training child's peak RSS (ru_maxrss) minus its peak after imports + data "
        "(target: numrnn <= PyTorch), and the raw peak. compile: first train step + first sample "
        "of a tiny model with a cold kernel cache, new compilation only (rows share kernels, so "
        "later rows mostly load earlier rows' code). warm-up: what the timed training children's "
        "warm-up steps took beyond as many steady steps (kernel cache load, first touches).",
    ]
    if s.get("kernel_cache_given"):
        lines.append(f"kernel cache: {s['kernel_cache']} (given; compile s may be a cache load).")
    for row in report["rows"]:
        for kind, side in row["sides"].items():
            if side and side.get("errors"):
                lines.append(f"{Row(**row['row']).name} {kind} failed: {side['errors'][0]}")
    # The start only: by the end the 1-minute load counts this run's own two threads.
    load = report["load"]["start"]
    if load is not None and load > BUSY_LOAD:
        lines.append(f"note: the machine was busy (1-minute load {load:.2f}) when this started; "
                     f"other work skews the speed columns of both sides.")
    lines.append(f"wall time of this run: {report['wall_s']:.0f} s.")
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train and sample speed of numrnn vs PyTorch (configs A-D), its share of "
                    "the GEMM peak and of the memory bandwidth, peak memory, start-up time.",
        epilog="Example: python benchmarks/speed.py --quick --configs A,B")
    parser.add_argument("--quick", action="store_true",
                        help="short run: 1 repeat, 5 timed steps, 1 sample run (options given "
                             "explicitly still win)")
    parser.add_argument("--configs", default="A,B,C,D",
                        help="configurations to run, comma-separated (default: %(default)s)")
    parser.add_argument("--cells", default="rnn,gru,lstm",
                        help="cells to run where a configuration has them (default: %(default)s)")
    parser.add_argument("--models", default="numrnn,torch",
                        help="sides to run: numrnn, torch or both (default: %(default)s)")
    parser.add_argument("--repeats", type=int,
                        help=f"alternating numrnn/PyTorch repeats ({DEFAULTS['repeats']}; quick 1)")
    parser.add_argument("--steps", type=int,
                        help=f"timed training steps per child, at least ({DEFAULTS['steps']}; "
                             f"quick {QUICK['steps']})")
    parser.add_argument("--warmup", type=int,
                        help=f"untimed steps first ({DEFAULTS['warmup']}; quick {QUICK['warmup']})")
    parser.add_argument("--sample-runs", type=int,
                        help=f"timed {SAMPLE_LENGTH}-char generations per child, at least "
                             f"({DEFAULTS['sample_runs']}; quick {QUICK['sample_runs']})")
    parser.add_argument("--min-seconds", type=float,
                        help=f"keep timing until this long, up to {MAX_TRAIN_STEPS} steps or "
                             f"{MAX_SAMPLE_RUNS} generations ({DEFAULTS['min_seconds']:g}; "
                             f"quick {QUICK['min_seconds']:g})")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up table")
    parser.add_argument("--kernel-cache", metavar="DIR",
                        help="numrnn's kernel cache for the run (default: a fresh temporary "
                             "folder, so compile s is a cold compile)")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS),
                        help="text to train on; random ids when missing or not 65 distinct "
                             "characters (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data (0)")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write every raw result as JSON to PATH (no PATH: to stdout, "
                             "after the tables)")
    return parser.parse_args(argv)


def split_list(text, allowed, what):
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"error: {what} must be a comma-separated subset of "
                         f"{','.join(allowed)}, not {text!r}")
    return chosen


def settings_from(args, kernel_cache):
    base = QUICK if args.quick else DEFAULTS
    chosen = {key: getattr(args, key) if getattr(args, key, None) is not None else default
              for key, default in base.items()}
    for key in ("repeats", "steps", "sample_runs", "gemm_runs", "startup_runs"):
        if chosen[key] < 1:
            raise SystemExit(f"error: --{key.replace('_', '-')} must be at least 1")
    if chosen["warmup"] < 0 or chosen["min_seconds"] < 0:
        raise SystemExit("error: --warmup and --min-seconds must be 0 or more")
    configs = split_list(args.configs.upper(), list(CONFIGS), "--configs")
    cells = split_list(args.cells.lower(), list(GATES), "--cells")
    sides = split_list(args.models.lower(), ["numrnn", "torch"], "--models")
    sides = [side for side in ("numrnn", "torch") if side in sides]
    notes = []
    if "torch" in sides and importlib.util.find_spec("torch") is None:
        sides.remove("torch")
        notes.append("PyTorch columns empty: torch is not installed (pip install torch).")
        if not sides:
            raise SystemExit("error: --models torch, but torch is not installed")
    rows = [Row(config, cell, **{k: v for k, v in CONFIGS[config].items() if k != "cells"})
            for config in configs for cell in CONFIGS[config]["cells"] if cell in cells]
    if not rows:
        raise SystemExit(f"error: no row left: configs {','.join(configs)} have none of the "
                         f"cells {','.join(cells)}")
    return Settings(rows=rows, sides=sides, corpus=str(Path(args.corpus).resolve()),
                    seed=args.seed, kernel_cache=kernel_cache, startup=not args.no_startup,
                    quick=args.quick, notes=notes, **chosen)


def run_benchmark(settings, tmp):
    started = time.perf_counter()
    report = dict(cpu=cpu_name(), cpus=os.cpu_count(), versions=versions(),
                  date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  load=dict(start=load_average()), gemm={})
    report["gemm"]["start"] = measure_gemm(settings, "start")
    compile_times = measure_compile(settings) if "numrnn" in settings.sides else {}
    if "error" in compile_times:
        settings.notes.append(f"compiling failed: {compile_times['error']}")
        compile_times = {}
    counter = [0, len(settings.rows) * settings.repeats * len(settings.sides) * 2]
    all_runs = [(row, measure_row(row, settings, counter)) for row in settings.rows]
    report["gemm"]["end"] = measure_gemm(settings, "end")
    peaks = [g["gflops"] for g in report["gemm"].values() if "gflops" in g]
    report["gemm_peak"] = max(peaks) if peaks else float("nan")
    report["rows"] = [summarise_row(row, runs, compile_times, report["gemm_peak"])
                      for row, runs in all_runs]
    report["compile"] = compile_times
    report["startup"] = measure_startup(settings, tmp) if settings.startup else None
    report["load"]["end"] = load_average()
    report["wall_s"] = time.perf_counter() - started
    return report


def print_report(report, settings):
    for line in header_lines(report):
        print(line)
    rows = [table_row(summary) for summary in report["rows"]]
    print_table(COLUMNS, rows, "numrnn vs PyTorch: train and sample speed, float32, "
                f"{THREADS} threads each", width=230)
    if report["startup"] is not None:
        print_table(STARTUP_COLUMNS, startup_rows(report["startup"]),
                    "start-up (python -m numrnn_cli; wall seconds, warm = median after the "
                    "cold run)", width=110)
    for line in notes(report):
        print(line)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="numrnn-speed-") as tmp:
        kernel_cache = args.kernel_cache or str(Path(tmp) / "kernel-cache")
        settings = settings_from(args, str(Path(kernel_cache).resolve()))
        report = run_benchmark(settings, tmp)
    report["settings"] = dict(asdict(settings), rows=[asdict(r) for r in settings.rows],
                              kernel_cache_given=bool(args.kernel_cache))
    print_report(report, settings)
    if args.json == "-":
        print(json.dumps(report, default=str))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
