"""speed.py's training and sampling under load: the default ``numrnn train`` model trained, then
sampled from, while a side process keeps one core busy, numrnn's default threads against fixed
ones (and, training, PyTorch).

BLAS threads wait for each other at every product, so with one of two cores taken a second
thread makes a step slower than one thread does; numrnn's default (no --threads) follows the
free cores with ``numrnn.threads.ThreadGovernor``. The target: the default is not slower than
--threads 1 when a core is busy.

Four sides train LOAD_ROW (2 x 256 LSTM, embedding 64, batch 32 x 128: ``numrnn train``'s
defaults) on the same batches, each in a spawned child of its own, with a spinner (``python -c
"while True: pass"``) started before the child and killed after it:

- numrnn default: 2 threads to start (speed.py's thread variables), ``ThreadGovernor.check()``
  before every step, as ``numrnn train`` calls it without --threads;
- numrnn --threads 1: every thread variable 1, as ``numrnn train --threads 1`` sets them;
- numrnn --threads 2: speed.py's fixed 2 threads (the default before the governor);
- PyTorch: ``torch.set_num_threads(2)``, as speed.py's training children.

Three sides then sample batch 1 from the same model's int8 weights (``numrnn sample --weights
int8``, whose default on this model is two threads), each in a spawned child with the
spinner, numba on 2 threads and OpenBLAS on 1 as speed.py's sampling children:

- sample default: ``Sampler(threads=None)``, its ThreadGovernor checked before every chunk of
  256 characters switching between 1 and 2 parts of the two-thread kernels (the same text);
- sample 1 thread: ``threads=1``, the single-threaded kernels;
- sample 2 threads: ``threads=2``, the default before the sampler followed the cores.

The governor needs a second or more to see the busy core, so each child steps (generates)
once (loading the kernels), then for at least SETTLE_S seconds more before it times at least
--steps steps (--sample-runs runs) and --min-seconds seconds; the repeats
alternate the order of the sides, as speed.py's rows do.
"""

import contextlib
import math
import subprocess
import sys
import time
from collections import Counter

from harness import (
    median,
    peak_rss_mb,
    ratio,
    run_in_own_process_or_error,
    thread_cpu_seconds,
    time_calls,
)
from machine import load_average
from speed_sample import MAX_SAMPLE_RUNS, sample_result
from speed_setup import (
    ARBITRARY_CHARS,
    LR,
    PRIME_LENGTH,
    SAMPLE_LENGTH,
    SAMPLE_TEMPERATURE,
    THREADS,
    Row,
    build_numrnn_model,
    child_env,
    load_ids,
    load_numrnn_backend,
    say,
    settings_job,
)
from speed_train import MAX_TRAIN_STEPS, numrnn_training, torch_training, train_result

LOAD_ROW = Row("default", "lstm", hidden=256, layers=2, batch=32, seq_len=128, embed=64)
SETTLE_S = 2.0  # the governor measures the other processes over 1-second intervals
SPINNER = [sys.executable, "-c", "while True: pass"]
SPINNER_START_S = 0.5  # long enough for the spinner to be running before the child starts
# Each side: the library its child runs, and its thread count (None: the governor's choice).
LOAD_SIDES = {
    "numrnn default": ("numrnn", None),
    "numrnn --threads 1": ("numrnn", 1),
    "numrnn --threads 2": ("numrnn", THREADS),
    "PyTorch": ("torch", THREADS),
}
BASELINE = "numrnn --threads 1"
NOISE_ALLOWANCE = 0.95  # the default passes at 95% of the 1-thread rate: run-to-run noise
# Each sampling side: Sampler's threads (None: its default, following the cores).
SAMPLE_LOAD_SIDES = {"sample default": None, "sample 1 thread": 1, "sample 2 threads": THREADS}
SAMPLE_BASELINE = "sample 1 thread"
SAMPLE_WEIGHTS = "int8"  # numrnn sample --weights int8: two threads by default on LOAD_ROW


def time_settled(call, settle_s, *, min_calls, min_seconds, max_calls):
    """(warm-up seconds per call, timed seconds per call): one call (it loads the kernels),
    calls for at least ``settle_s`` seconds more, then at least min_calls and min_seconds timed."""
    started = time.perf_counter()
    call()
    warm = [time.perf_counter() - started]
    begun = time.perf_counter()
    while time.perf_counter() - begun < settle_s:
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    _, timed = time_calls(call, warmup=0, min_calls=min_calls, min_seconds=min_seconds, max_calls=max_calls)
    return warm, timed


def time_settled_steps(step, job, settle_s):
    """time_settled for a training step: at least job.steps and job.min_seconds timed."""
    return time_settled(
        step, settle_s, min_calls=job.steps, min_seconds=job.min_seconds, max_calls=MAX_TRAIN_STEPS
    )


def child_numrnn_load(job, settle_s, threads):
    """numrnn's product step; ``threads`` None: a ThreadGovernor checked before every step,
    else the thread count the environment fixed."""
    import numba

    from numrnn.threads import ThreadGovernor, openblas_threads

    train_step, losses, rss_base, source = numrnn_training(job)
    governor = ThreadGovernor(numba.config.NUMBA_NUM_THREADS) if threads is None else None
    counts = []  # numba's thread count at each step

    def step():
        if governor is not None:
            governor.check()
        counts.append(numba.get_num_threads())
        train_step()

    warm, timed = time_settled_steps(step, job, settle_s)
    about = dict(
        threads=numba.get_num_threads(),
        blas_threads=[get() for _, get in openblas_threads()],
        # What a slow child did: the thread counts of its timed steps, and which of its
        # threads used the CPU (a spinning one shows beside the one that works).
        timed_thread_counts=dict(Counter(counts[len(warm) :])),
        thread_cpu_s=thread_cpu_seconds(),
    )
    return train_result(job, warm, timed, losses, rss_base, source, about)


def child_torch_load(job, settle_s, threads):
    """The PyTorch twin's step on ``threads`` threads."""
    import torch

    step, losses, rss_base, source = torch_training(job, threads)
    warm, timed = time_settled_steps(step, job, settle_s)
    return train_result(job, warm, timed, losses, rss_base, source, dict(threads=torch.get_num_threads()))


LOAD_CHILDREN = {"numrnn": child_numrnn_load, "torch": child_torch_load}


def child_numrnn_sample_load(job, settle_s, threads):
    """numrnn's batch-1 generation from job.weights on ``threads`` (None: the Sampler's default,
    its governor checked before every chunk), one Sampler throughout so the governor keeps
    what it measured. threads: the threads generating at the end (the single-threaded kernels
    use one whatever numba's count, numba_threads, says)."""
    import numba
    import numpy as np

    from numrnn.data import Vocab
    from numrnn.sampling import SampleConfig, Sampler

    load_numrnn_backend(job.device)
    ids, _ = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed, job.device)
    sampler = Sampler(model, Vocab(ARBITRARY_CHARS), threads=threads, weights=job.weights)
    prime = np.ascontiguousarray(ids[:PRIME_LENGTH])
    config = SampleConfig(length=SAMPLE_LENGTH, temperature=SAMPLE_TEMPERATURE)
    rng = np.random.default_rng(job.seed)

    def generate():
        assert len("".join(sampler.generate(prime, config, rng))) == SAMPLE_LENGTH

    warm, timed = time_settled(
        generate,
        settle_s,
        min_calls=job.runs,
        min_seconds=job.min_seconds,
        max_calls=MAX_SAMPLE_RUNS,
    )
    numba_threads = numba.get_num_threads()
    about = dict(
        threads=numba_threads if sampler.threads > 1 else 1,
        numba_threads=numba_threads,
        weights=job.weights,
    )
    return sample_result(job, warm, timed, rss_base, about)


@contextlib.contextmanager
def busy_core():
    """A process that keeps one core busy for as long as the block runs."""
    spinner = subprocess.Popen(SPINNER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(SPINNER_START_S)
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


def side_env(library, threads, kernel_cache):
    """speed.py's training environment, its thread variables at ``threads`` when fixed."""
    env = child_env(library, "train", kernel_cache)
    if threads is None:
        return env
    return {name: str(threads) if name.endswith("_NUM_THREADS") else value for name, value in env.items()}


def describe_load_child(result, chars, times, unit):
    """The progress line's account of one child under load: result[chars] characters in each
    of result[times] seconds, one ``unit`` each."""
    wall, load = result["wall_s"], result["load_before"]
    load_part = "" if load is None else f", load {load:.2f} before"
    if "error" in result:
        return f"FAILED: {result['error']} ({wall:.1f} s{load_part})"
    rate = result[chars] / median(result[times])
    diagnosis = ""
    if "timed_thread_counts" in result:
        cpu = ", ".join(f"{seconds:.1f}" for seconds in result["thread_cpu_s"][:4])
        diagnosis = f"; timed {unit}s by threads {result['timed_thread_counts']}, CPU s by thread {cpu}"
    return (
        f"{rate:,.0f} chars/s (median of {len(result[times])} {unit}s), threads "
        f"{result['threads']} at the end ({wall:.1f} s{load_part}{diagnosis})"
    )


def run_loaded_child(child, args, env):
    """One spawned child under busy_core(): its result, with its wall seconds and the load
    average before the spinner (which adds its own 1 to it)."""
    load = load_average()
    with busy_core():
        result, wall = run_in_own_process_or_error(child, *args, env=env)
    result.update(wall_s=wall, load_before=load)
    return result


def measure_sides(settings, sides, child_of, what):
    """Every repeat of every one of ``sides``, each child (``child_of(name)``: (function, args,
    env)) under busy_core(), the order flipping every repeat, a progress line each (``what``:
    the (chars, times, unit) keys of its result): {side: [raw result per repeat]}."""
    runs = {name: [] for name in sides}
    for repeat in range(settings.repeats):
        for name in sides if repeat % 2 == 0 else reversed(sides):
            result = run_loaded_child(*child_of(name))
            runs[name].append(result)
            account = describe_load_child(result, *what)
            say(f"[load] {name} repeat {repeat + 1}/{settings.repeats}: {account}")
    return runs


def measure_load(settings):
    """Every side of LOAD_SIDES whose library is in settings.sides, then of SAMPLE_LOAD_SIDES
    when numrnn is: {side: [raw result per repeat]} (the side names do not collide)."""
    job = settings_job(settings, LOAD_ROW)

    def training_child(name):
        library, threads = LOAD_SIDES[name]
        env = side_env(library, threads, settings.kernel_cache)
        return LOAD_CHILDREN[library], (job, SETTLE_S, threads), env

    sides = [name for name, (library, _) in LOAD_SIDES.items() if library in settings.sides]
    runs = measure_sides(settings, sides, training_child, ("chars_per_step", "step_s", "step"))
    if "numrnn" in settings.sides:
        runs.update(measure_sample_load(settings))
    return runs


def measure_sample_load(settings):
    """Every side of SAMPLE_LOAD_SIDES: {side: [raw result per repeat]}."""
    job = settings_job(settings, LOAD_ROW, weights=SAMPLE_WEIGHTS)
    env = child_env("numrnn", "sample", settings.kernel_cache)

    def sampling_child(name):
        return child_numrnn_sample_load, (job, SETTLE_S, SAMPLE_LOAD_SIDES[name]), env

    return measure_sides(settings, list(SAMPLE_LOAD_SIDES), sampling_child, ("chars_per_run", "run_s", "run"))


def summarise_loaded_side(results, chars="chars_per_step", times="step_s"):
    """Chars/s over every timed step (``times``; a sampling child's: run_s, with chars_per_run)
    of every repeat, the threads each repeat ended on; a training side's losses and data."""
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    if not ok:
        return dict(chars_per_s=float("nan"), threads_at_end=[], errors=errors)
    pooled = [s for r in ok for s in r[times]]
    summary = dict(
        chars_per_s=ok[0][chars] / median(pooled),
        timed=len(pooled),
        per_repeat_chars_per_s=[r[chars] / median(r[times]) for r in ok],
        threads_at_end=[r["threads"] for r in ok],
        errors=errors,
    )
    if "first_loss" in ok[0]:
        summary.update(
            first_loss=median([r["first_loss"] for r in ok]),
            last_loss=median([r["last_loss"] for r in ok]),
            data=ok[0]["data"],
        )
    return summary


def summarise_load(raw):
    """Each side's summary, training (sides) and sampling (sample_sides) apart; the training
    default's ratios to --threads 1, to --threads 2 and to PyTorch, the sampling default's to
    1 and 2 threads (NaN where a side did not run)."""
    sides = {name: summarise_loaded_side(r) for name, r in raw.items() if name not in SAMPLE_LOAD_SIDES}
    sample_sides = {
        name: summarise_loaded_side(r, "chars_per_run", "run_s")
        for name, r in raw.items()
        if name in SAMPLE_LOAD_SIDES
    }

    def rate(summaries, name):
        return summaries[name]["chars_per_s"] if name in summaries else float("nan")

    default, sample_default = rate(sides, "numrnn default"), rate(sample_sides, "sample default")
    return dict(
        sides=sides,
        default_vs_one_thread=ratio(default, rate(sides, BASELINE)),
        default_vs_two=ratio(default, rate(sides, "numrnn --threads 2")),
        numrnn_vs_torch=ratio(default, rate(sides, "PyTorch")),
        sample_sides=sample_sides,
        sample_default_vs_one_thread=ratio(sample_default, rate(sample_sides, SAMPLE_BASELINE)),
        sample_default_vs_two=ratio(sample_default, rate(sample_sides, "sample 2 threads")),
    )


def fmt(value, spec):
    """``value`` formatted; '-' for NaN (a side that did not run)."""
    return "-" if math.isnan(value) else format(value, spec)


LOAD_COLUMNS = [
    "side",
    "chars/s",
    "threads\nat the end",
    "vs\n--threads 1",
    "vs\nPyTorch",
    "default >=\n1 thread",
]


SAMPLE_LOAD_COLUMNS = ["side", "chars/s", "threads\nat the end", "vs\n1 thread", "default >=\n1 thread"]


def side_cells(name, side, default, share):
    """A side's first cells (name, chars/s, threads at the end) and its target cell: ok or miss
    on the ``default`` side by ``share`` (its rate over the 1-thread one), else '-'."""
    target = "-"
    if name == default and not math.isnan(share):
        target = "ok" if share >= NOISE_ALLOWANCE else "miss"
    failed = side["errors"] and math.isnan(side["chars_per_s"])
    cells = [
        name,
        "error" if failed else fmt(side["chars_per_s"], ",.0f"),
        "/".join(str(t) for t in dict.fromkeys(side["threads_at_end"])) or "-",
    ]
    return cells, target


def load_table(summary):
    """(columns, rows, title) for tables.print_table: a row per training side that ran."""
    sides = summary["sides"]
    one_thread = sides.get(BASELINE, {}).get("chars_per_s", float("nan"))
    torch_rate = sides.get("PyTorch", {}).get("chars_per_s", float("nan"))
    rows = []
    for name, side in sides.items():
        cells, target = side_cells(name, side, "numrnn default", summary["default_vs_one_thread"])
        rows.append(
            [
                *cells,
                fmt(ratio(side["chars_per_s"], one_thread), ".2f"),
                fmt(ratio(side["chars_per_s"], torch_rate), ".2f"),
                target,
            ]
        )
    title = (
        f"training under load: numrnn train's default model ({LOAD_ROW.name} {LOAD_ROW.layers} x "
        f"{LOAD_ROW.hidden}), one core kept busy by a side process"
    )
    return LOAD_COLUMNS, rows, title


def load_sample_table(summary):
    """(columns, rows, title) for tables.print_table: a row per sampling side that ran (none
    when numrnn did not run)."""
    sides = summary["sample_sides"]
    one_thread = sides.get(SAMPLE_BASELINE, {}).get("chars_per_s", float("nan"))
    rows = []
    for name, side in sides.items():
        cells, target = side_cells(name, side, "sample default", summary["sample_default_vs_one_thread"])
        rows.append([*cells, fmt(ratio(side["chars_per_s"], one_thread), ".2f"), target])
    title = (
        f"sampling under load: numrnn sample --weights {SAMPLE_WEIGHTS} on the default model "
        f"({LOAD_ROW.layers} x {LOAD_ROW.hidden}), batch 1, one core kept busy by a side process"
    )
    return SAMPLE_LOAD_COLUMNS, rows, title


def load_notes(summary):
    """What the load table measured, against what, and what failed."""
    row, sides = LOAD_ROW, summary["sides"]
    data = next((side["data"] for side in sides.values() if "data" in side), "-")
    lines = [
        f"under load: each child trains {row.name} ({row.layers} x {row.hidden}, embedding {row.embed}, "
        f"batch {row.batch} x {row.seq_len}: numrnn train's defaults; float32, Adam {LR:g}, on {data}) "
        f'while a side process, python -c "while True: pass", keeps one core busy (one per child, '
        f"started {SPINNER_START_S:g} s before it and killed after it).",
        f"numrnn default: {THREADS} threads to start, ThreadGovernor.check() before every step, as "
        f"numrnn train without --threads; --threads 1: every thread variable 1, as numrnn train "
        f"--threads 1; --threads {THREADS}: fixed, the default before the governor; PyTorch: "
        f"set_num_threads({THREADS}). Each child steps once, then for at least {SETTLE_S:g} s "
        f"before timing, for the governor to see the busy core; chars/s: median over every timed "
        f"step of every repeat; threads at the end: numba's (torch's) count after the last step, per repeat.",
        f"target (the issue): the default at least the 1-thread rate with a core busy; ok at >= "
        f"{NOISE_ALLOWANCE:.0%} of it, the rest being run-to-run noise. default / --threads 1 "
        f"{fmt(summary['default_vs_one_thread'], '.2f')}, / --threads {THREADS} "
        f"{fmt(summary['default_vs_two'], '.2f')}, / PyTorch {fmt(summary['numrnn_vs_torch'], '.2f')}.",
    ]
    if summary["sample_sides"]:
        lines.append(
            f"sampling under load: each child samples {SAMPLE_LENGTH:,} chars at batch 1 after a "
            f"{PRIME_LENGTH}-char prime from the same model's {SAMPLE_WEIGHTS} weights (numba "
            f"{THREADS} threads, OpenBLAS 1), one Sampler for at least {SETTLE_S:g} s, then timed; "
            f"default: Sampler(threads=None), its governor switching 1 or 2 parts of the two-thread "
            f"kernels before every chunk; 1 thread: the single-threaded kernels; {THREADS} threads: "
            f"fixed, the default before. default / 1 thread "
            f"{fmt(summary['sample_default_vs_one_thread'], '.2f')} (ok at >= {NOISE_ALLOWANCE:.0%}), "
            f"/ {THREADS} threads {fmt(summary['sample_default_vs_two'], '.2f')}."
        )
    every_side = {**sides, **summary["sample_sides"]}
    lines += [
        f"under load: {name} failed: {side['errors'][0]}"
        for name, side in every_side.items()
        if side["errors"]
    ]
    return lines
