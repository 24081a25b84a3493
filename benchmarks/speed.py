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
  NUMBA_NUM_THREADS = 2, set before numpy loads (numrnn itself then keeps OpenBLAS at one thread
  and shares its products out on numba's two: one thread pool); its sampling children get
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
- What the per-step products allow: a recurrence multiplies by W_hh once a time step (B x H by
  H x G forward, dgates @ W_hh.T backward), small products numrnn runs on W_hh's panels packed
  once per call (kernels/microkernel.py), split into parts of the units. A child times them
  alone at each row's shapes, as the recurrences run them (numrnn's threads, the fastest of
  many calls); "step allows" is the share of the peak a training step would reach if those
  products ran at that rate, its other products at the peak and nothing else took time. A
  target that needs more is marked "beyond": it asks for faster per-step products than
  numrnn's reach (they can pass 100%: the peak is OpenBLAS's, which repacks at every call).
- The sampling bandwidth ceiling: a batch-1 step reads every weight once per character, so
  chars/s can be no more than the read bandwidth over a buffer of that many bytes (measured in
  each numrnn sampling child, a median: on 1 thread the best of numpy sum and the two
  orientations of a matrix-vector product; on 2 threads matrix-vector products over the two
  halves at once) divided by the bytes per character; numrnn's share of the 1-thread ceiling,
  the threads ``numrnn sample`` uses. (At A and B the weights fit in a near cache and the
  ceiling is only a reference.)
- Peak memory of each training child (ru_maxrss): after imports (the peak minus the peak once
  numpy/numba/numrnn or torch and the data are loaded) and raw.
- Sampling from bf16 and int8 weights (on the CPU): numrnn's sampling child again with
  ``Sampler(weights="bf16")`` and ``"int8"`` (``numrnn sample --weights``), its chars/s over
  numrnn's float32 sampling in the same run (targets 1.8x and 3x at C and D), in a table of
  its own.
- Under load (on the CPU, speed_load.py; --no-load skips it): the default ``numrnn train``
  model trained while a side process keeps one core busy, numrnn's default threads (they
  follow the free cores) against --threads 1, a fixed 2 and PyTorch; and sampling that model
  from int8 weights (two threads by default) the same way. Target: the default no slower than
  one thread.
- Start-up: cold and warm wall time of ``numrnn sample -c small.safetensors --length 200``
  (a 2 x 128 LSTM checkpoint made here; cold = NUMRNN_CACHE_DIR a fresh empty folder, warm = the
  next runs with the same folder) and of ``numrnn --help``, each a ``python -m numrnn_cli``
  subprocess.

Targets (numrnn / PyTorch) are printed next to each figure; nothing here asserts them.

Run it from the repository root (torch is optional; without it only numrnn's figures appear):

    python benchmarks/speed.py --quick --configs A,B     # a smoke run, about a minute
    python benchmarks/speed.py                           # everything, 3 repeats (about 16 min)
    python benchmarks/speed.py --configs C --cells lstm --models numrnn
    python benchmarks/speed.py --configs D --json results.json

Nothing is written outside temporary folders (the kernel cache included), unless you pass
--kernel-cache or --json PATH.

On an NVIDIA GPU (numrnn's CUDA backend needs numba-cuda and CuPy; PyTorch a CUDA build):

    pip install -e '.[cuda]'
    python benchmarks/speed.py --device cuda
    python benchmarks/speed.py --device cuda --configs C,D --json gpu.json

--device cuda runs the same rows, batches, steps and sampling on the GPU: numrnn's models are
built with ``Model(config, device="cuda")`` (parameters, gradients, Adam's state and workspaces
in GPU memory, the same initial weights as on the CPU), and its product step and
``Sampler.generate`` run there (a step's loss comes back to the host as a float, which
synchronises; so do the generated ids). PyTorch's twin and every batch move to "cuda", and
each timed step or generation ends with torch.cuda.synchronize(). The table keeps both sides'
chars/s and their ratio, numrnn's GFLOP/s, each side's first and last training loss, compile s
(numba-cuda's JIT compilation, which has no disk cache: every child compiles again in its
warm-up, so keep --warmup at 1 or more) and the warm-up overhead. Left out, since they
describe the CPU and would mislead about a GPU run: the GEMM peak and numrnn's share of it, the
read-bandwidth ceiling and share, threads, peak RSS (host memory) and the start-up table; and
the targets, which are the CPU's. Without a usable GPU for numrnn the run stops with one
`error:` line; with a torch that has no CUDA, only numrnn's figures appear. Under numba's
simulator (NUMBA_ENABLE_CUDASIM=1, no GPU) the CUDA path runs on the CPU, very slowly, which
checks the plumbing only.

The parts, beside this script: speed_setup.py (configurations, rows, settings, a child's job),
speed_train.py and speed_sample.py (the timed children), speed_load.py (under load),
speed_ceilings.py (GEMM peak, read bandwidth), speed_startup.py (cold compile, CLI start-up),
speed_report.py (summaries, tables, notes); the PyTorch models in twins.py, the process
harness in harness.py.
"""

import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

# Siblings beside this script (its folder is on sys.path); harness puts the repository there too.
from harness import DEFAULT_CORPUS, median, run_in_own_process_or_error
from machine import cpu_name, load_average, openblas_environment, package_version
from speed_ceilings import measure_gemm, measure_step_products
from speed_load import measure_load, summarise_load
from speed_report import print_report, summarise_row
from speed_sample import MAX_SAMPLE_RUNS, child_numrnn_sample, child_torch_sample
from speed_setup import (
    CONFIGS,
    DEVICES,
    GATES,
    SAMPLE_LENGTH,
    THREADS,
    Row,
    Settings,
    child_env,
    say,
    settings_job,
)
from speed_startup import measure_compile, measure_startup
from speed_train import MAX_TRAIN_STEPS, child_numrnn_train, child_torch_train

DEFAULTS = dict(repeats=3, steps=20, warmup=3, sample_runs=3, min_seconds=1.0, gemm_runs=10, startup_runs=3)
QUICK = dict(repeats=1, steps=5, warmup=2, sample_runs=1, min_seconds=0.3, gemm_runs=5, startup_runs=1)
# The child that measures each side and task of a row; its name keys the raw results.
ROW_CHILDREN = {
    "numrnn-train": child_numrnn_train,
    "torch-train": child_torch_train,
    "numrnn-sample": child_numrnn_sample,
    "torch-sample": child_torch_sample,
    "numrnn-sample-bf16": child_numrnn_sample,
    "numrnn-sample-int8": child_numrnn_sample,
}
PACKED_WEIGHTS = ("bf16", "int8")  # numrnn's sampler reads these on the CPU as well as float32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train and sample speed of numrnn vs PyTorch (configs A-D), its share of "
        "the GEMM peak and of the memory bandwidth, peak memory, start-up time; or, with "
        "--device cuda, the train and sample speed of both on the GPU.",
        epilog="Examples: python benchmarks/speed.py --quick --configs A,B; "
        "python benchmarks/speed.py --device cuda (after pip install -e '.[cuda]')",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where both sides run (default: %(default)s). cuda: numrnn's CUDA backend against "
        "PyTorch on cuda, same rows; the CPU-only columns (GEMM peak, bandwidth ceiling, "
        "memory, threads) and the start-up table are left out",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: 1 repeat, 5 timed steps, 1 sample run (options given explicitly still win)",
    )
    parser.add_argument(
        "--configs", default="A,B,C,D", help="configurations to run, comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--cells",
        default="rnn,gru,lstm",
        help="cells to run where a configuration has them (default: %(default)s)",
    )
    parser.add_argument(
        "--models", default="numrnn,torch", help="sides to run: numrnn, torch or both (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"alternating numrnn/PyTorch repeats ({DEFAULTS['repeats']}; quick 1)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"timed training steps per child, at least ({DEFAULTS['steps']}; quick {QUICK['steps']})",
    )
    parser.add_argument(
        "--warmup", type=int, help=f"untimed steps first ({DEFAULTS['warmup']}; quick {QUICK['warmup']})"
    )
    parser.add_argument(
        "--sample-runs",
        type=int,
        help=f"timed {SAMPLE_LENGTH}-char generations per child, at least "
        f"({DEFAULTS['sample_runs']}; quick {QUICK['sample_runs']})",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        help=f"keep timing until this long, up to {MAX_TRAIN_STEPS} steps or "
        f"{MAX_SAMPLE_RUNS} generations ({DEFAULTS['min_seconds']:g}; "
        f"quick {QUICK['min_seconds']:g})",
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up table")
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="skip the under-load table (the default model trained with one core kept busy)",
    )
    parser.add_argument(
        "--kernel-cache",
        metavar="DIR",
        help="numrnn's kernel cache for the run (default: a fresh temporary "
        "folder, so compile s is a cold compile)",
    )
    parser.add_argument(
        "--corpus",
        default=str(DEFAULT_CORPUS),
        help="text to train on; random ids when missing or not 65 distinct characters (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data (0)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write every raw result as JSON to PATH (no PATH: to stdout, after the tables)",
    )
    return parser.parse_args(argv)


def split_list(text, allowed, what):
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise SystemExit(
            f"error: {what} must be a comma-separated subset of {','.join(allowed)}, not {text!r}"
        )
    return chosen


def settings_from(args, kernel_cache):
    base = QUICK if args.quick else DEFAULTS
    chosen = {
        key: getattr(args, key) if getattr(args, key, None) is not None else default
        for key, default in base.items()
    }
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
    if args.device != "cpu":
        check_device(args.device, sides, notes)
    rows = [Row.of(config, cell) for config in configs for cell in CONFIGS[config]["cells"] if cell in cells]
    if not rows:
        raise SystemExit(
            f"error: no row left: configs {','.join(configs)} have none of the cells {','.join(cells)}"
        )
    return Settings(
        rows=rows,
        sides=sides,
        corpus=str(Path(args.corpus).resolve()),
        seed=args.seed,
        kernel_cache=kernel_cache,
        startup=not args.no_startup and args.device == "cpu",  # the CLI's start-up is the CPU's
        under_load=not args.no_load and args.device == "cpu",  # the CPU's cores
        quick=args.quick,
        notes=notes,
        device=args.device,
        **chosen,
    )


def check_device(device, sides, notes):
    """Before any child starts: numrnn's backend for ``device`` must load (else one error line,
    its reason); a torch without CUDA drops the PyTorch side with a note, as a missing torch does."""
    if "numrnn" in sides:
        from numrnn.errors import DeviceError
        from numrnn.kernels import get_backend

        try:
            get_backend(device)
        except DeviceError as error:
            raise SystemExit(f"error: {error}") from None
    if "torch" in sides:
        import torch  # only to ask; each child loads its own

        if not torch.cuda.is_available():
            sides.remove("torch")
            notes.append(
                f"PyTorch columns empty: torch {torch.__version__} has no usable CUDA "
                "(torch.cuda.is_available() is false); numrnn's figures only."
            )
            if not sides:
                raise SystemExit(f"error: --models torch --device {device}, but torch has no usable CUDA")


def describe_child(result, task):
    """The progress line's account of one child's result."""
    if "error" in result:
        return f"FAILED: {result['error']}"
    if task == "train":
        rate = result["chars_per_step"] / median(result["step_s"])
        return (
            f"{rate:,.0f} chars/s (median of {len(result['step_s'])} steps), "
            f"warm-up {sum(result['warmup_s']):.2f} s"
        )
    rate = result["chars_per_run"] / median(result["run_s"])
    extra = ""
    if "bandwidth" in result:
        bandwidth = result["bandwidth"]
        extra = (
            f", reads {bandwidth['buffer_bytes'] / 1e6:.1f} MB at "
            f"{bandwidth['bytes_per_s'] / 1e9:.0f} GB/s ({bandwidth['method']}), "
            f"{bandwidth['threaded_bytes_per_s'] / 1e9:.0f} GB/s on {THREADS} threads"
        )
    return f"{rate:,.0f} chars/s (median of {len(result['run_s'])} run(s)){extra}"


def row_kinds(settings, order):
    """(kind, side, task, weights) of every child of one repeat of a row, in running order:
    training, then sampling; on the CPU numrnn also samples from bf16 and int8 weights."""
    kinds = [(f"{side}-train", side, "train", "float32") for side in order]
    kinds += [(f"{side}-sample", side, "sample", "float32") for side in order]
    if settings.device == "cpu" and "numrnn" in settings.sides:
        kinds += [(f"numrnn-sample-{weights}", "numrnn", "sample", weights) for weights in PACKED_WEIGHTS]
    return kinds


def task_label(task, weights):
    return task if weights == "float32" else f"{task} {weights}"


def measure_row(row, settings, counter):
    """Every repeat of every (side, task) of one row, the sides alternating."""
    runs = {kind: [] for kind, *_ in row_kinds(settings, settings.sides)}
    for repeat in range(settings.repeats):
        order = settings.sides if repeat % 2 == 0 else list(reversed(settings.sides))
        for kind, side, task, weights in row_kinds(settings, order):
            job = settings_job(settings, row, weights=weights)
            load = load_average()
            result, wall = run_in_own_process_or_error(
                ROW_CHILDREN[kind], job, env=child_env(side, task, settings.kernel_cache)
            )
            result.update(wall_s=wall, load_before=load)
            runs[kind].append(result)
            counter[0] += 1
            load_part = "" if load is None else f", load {load:.2f} before"
            say(
                f"[{counter[0]:>3}/{counter[1]}] {row.name:<7} repeat {repeat + 1}/"
                f"{settings.repeats} {side:<6} {task_label(task, weights):<11} "
                f"{describe_child(result, task)}"
                f" ({wall:.1f} s{load_part})"
            )
    return runs


def versions(device):
    """The versions the header names: numba, numpy, torch (None when absent), numrnn; on the
    GPU numba-cuda and CuPy too (the cuda extra's CuPy wheel, or a plain cupy)."""
    found = {name: package_version(name) for name in ("numba", "numpy", "torch")}
    if device != "cpu":
        found["numba-cuda"] = package_version("numba-cuda")
        found["cupy"] = package_version("cupy-cuda13x") or package_version("cupy")
    from numrnn import __version__

    found["numrnn"] = __version__
    return found


def run_benchmark(settings, tmp):
    """Every measurement, in order: GEMM peak, compile, the rows, GEMM peak again, start-up (on
    the GPU the rows and compile only: the CPU's ceilings and CLI start-up say nothing of it)."""
    cpu = settings.device == "cpu"
    started = time.perf_counter()
    report = dict(
        cpu=cpu_name(),
        cpus=os.cpu_count(),
        versions=versions(settings.device),
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        load=dict(start=load_average()),
        gemm={},
        openblas_environment=openblas_environment(),
    )
    if cpu:
        report["gemm"]["start"] = measure_gemm(settings, "start")
    report["step_products"] = measure_step_products(settings) if cpu and "numrnn" in settings.sides else {}
    if "error" in report["step_products"]:
        settings.notes.append(f"timing the per-step products failed: {report['step_products']['error']}")
    compile_times = measure_compile(settings) if "numrnn" in settings.sides else {}
    if "error" in compile_times:
        settings.notes.append(f"compiling failed: {compile_times['error']}")
        compile_times = {}
    counter = [0, len(settings.rows) * settings.repeats * len(row_kinds(settings, settings.sides))]
    all_runs = [(row, measure_row(row, settings, counter)) for row in settings.rows]
    if cpu:
        report["gemm"]["end"] = measure_gemm(settings, "end")
        peaks = [g["gflops"] for g in report["gemm"].values() if "gflops" in g]
        report["gemm_peak"] = max(peaks) if peaks else float("nan")
    else:
        report["gemm_peak"] = None  # the CPU's peak bounds no GPU step
    report["rows"] = [
        summarise_row(row, runs, compile_times, report["gemm_peak"], settings.device, report["step_products"])
        for row, runs in all_runs
    ]
    report["compile"] = compile_times
    report["startup"] = measure_startup(settings, tmp) if settings.startup else None
    report["under_load"] = None
    if settings.under_load:
        raw = measure_load(settings)
        report["under_load"] = dict(summarise_load(raw), runs=raw)
    report["load"]["end"] = load_average()
    report["wall_s"] = time.perf_counter() - started
    return report


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="numrnn-speed-") as tmp:
        kernel_cache = args.kernel_cache or str(Path(tmp) / "kernel-cache")
        settings = settings_from(args, str(Path(kernel_cache).resolve()))
        report = run_benchmark(settings, tmp)
    report["settings"] = dict(
        asdict(settings), rows=[asdict(r) for r in settings.rows], kernel_cache_given=bool(args.kernel_cache)
    )
    if settings.device == "cpu":
        del report["settings"]["device"]  # a CPU run's JSON as it was before --device
    print_report(report)
    if args.json == "-":
        print(json.dumps(report, default=str))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
