"""What the benchmark scripts share to measure: where the repository is, a process of its own
for each measurement, timing calls, and the median and ratio of what comes back.

Standard library only, at import and in every function a spawned child calls before its own
function, so that the child can still set its thread variables before numpy, numba or torch load.
"""

import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere, numrnn not installed
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
THREAD_LIBRARIES = ("numpy", "numba", "torch", "scipy")  # read their thread variables on import


def run_in_own_process(function, *args, env=None):
    """``function(*args)`` in a fresh spawned process: (result, wall seconds). Each measurement
    gets a process of its own, so two libraries' thread pools and caches never share one;
    ``env`` (thread variables, cache folders) is set there before anything else loads."""
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(processes=1) as pool:
        result = pool.apply(_call_in_child, (env, function, args))
    return result, time.perf_counter() - started


def run_in_own_process_or_error(function, *args, env=None):
    """``run_in_own_process``, an exception in the child coming back as {"error": ...}, so
    that one failure does not lose the whole run."""
    started = time.perf_counter()
    try:
        return run_in_own_process(function, *args, env=env)
    except Exception as exc:
        return dict(error=f"{type(exc).__name__}: {exc}"), time.perf_counter() - started


def _call_in_child(env, function, args):
    """The child's first act: the thread variables only count if set before numpy, numba or
    torch load, so a child that has loaded one already is refused."""
    if env is not None:
        loaded = [name for name in THREAD_LIBRARIES if name in sys.modules]
        if loaded:
            raise RuntimeError(
                f"{', '.join(loaded)} loaded before the thread settings; the child must start clean"
            )
        os.environ.update(env)
    return function(*args)


def peak_rss_mb():
    """This process's peak resident memory (ru_maxrss), MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def thread_cpu_seconds():
    """CPU seconds (user + system) each thread of this process has used, the most first
    (Linux's /proc/self/task; [] elsewhere): a thread that spins shows up beside the one
    that works."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # a thread that ended meanwhile
            continue
        seconds.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime
    return sorted(seconds, reverse=True)


def time_calls(call, *, warmup, min_calls, min_seconds, max_calls):
    """(warm-up seconds per call, timed seconds per call): at least min_calls timed calls and
    at least min_seconds of them, at most max_calls."""
    warm, timed = [], []
    for _ in range(warmup):
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    begun = time.perf_counter()
    while len(timed) < min_calls or (time.perf_counter() - begun < min_seconds and len(timed) < max_calls):
        started = time.perf_counter()
        call()
        timed.append(time.perf_counter() - started)
    return warm, timed


def median(values):
    """The median as a float; NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def ratio(a, b):
    """a / b, NaN where either is NaN or b is zero (a side that did not run)."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else float("nan")


def chosen_settings(args, defaults, quick, *, at_least_one=(), at_least_zero=()):
    """The defaults (or the --quick ones) with every option given on the command line applied;
    a value out of range exits with one error line naming the option."""
    base = quick if args.quick else defaults
    chosen = {
        key: default if getattr(args, key) is None else getattr(args, key) for key, default in base.items()
    }
    for keys, low, what in ((at_least_one, 1, "at least 1"), (at_least_zero, 0, "0 or more")):
        for key in keys:
            if chosen[key] is not None and chosen[key] < low:
                raise SystemExit(f"error: --{key.replace('_', '-')} must be {what}")
    return chosen
