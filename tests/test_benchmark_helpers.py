"""benchmarks/speed.py times the recurrences' per-step products through numrnn's private
kernel helpers (benchmarks/speed_ceilings.py). A change to those helpers must fail here, not
in the next 20-minute benchmark run (one did: the products column of a full run failed on a
stale call)."""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import recurrence_split

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def benchmark_modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import speed_ceilings
        import speed_report
        import speed_setup
        import speed_startup
    finally:
        sys.path.remove(str(BENCHMARKS))
    return speed_ceilings, speed_setup, speed_report, speed_startup


def test_speed_times_the_per_step_products_of_every_split(benchmark_modules):
    speed_ceilings, speed_setup, _, _ = benchmark_modules
    b_gru = speed_setup.Row.of("B", "gru")
    rows = (
        b_gru,  # runs of rows
        dataclasses.replace(b_gru, config="B12", batch=12),  # parts of the units
        dataclasses.replace(b_gru, config="B1", batch=1),  # whole (None), on the calling thread
    )
    splits = [recurrence_split("gru", np.float32, row.batch, row.hidden) for row in rows]
    assert splits == ["rows", "units", None]
    job = speed_setup.Job(rows=rows, seed=0, min_seconds=0.0)
    rates = speed_ceilings.child_step_products(job)
    assert set(rates) == {row.name for row in rows}
    for name, gflops in rates.items():
        assert 0.0 < gflops < 10_000.0, (name, gflops)


def test_speed_times_every_product_of_a_step(benchmark_modules):
    speed_ceilings, speed_setup, _, _ = benchmark_modules
    b_lstm = speed_setup.Row.of("B", "lstm")
    one_layer = dataclasses.replace(b_lstm, config="B1L", layers=1)
    rows = (b_lstm, one_layer)
    dense = {row: speed_ceilings.dense_product_seconds(row, 0, 0.0, min_calls=3) for row in rows}
    assert all(0.0 < s < 1.0 for s in dense.values()), dense
    # a second layer adds its input projection, both its gradients and its W_hh's gradient
    assert dense[b_lstm] > 1.5 * dense[one_layer], dense
    per_step = speed_ceilings.step_product_seconds(b_lstm, 0, 0.0, min_calls=3)
    everything = speed_ceilings.product_seconds(b_lstm, 0)
    assert 0.0 < per_step < everything < 1.0, (per_step, everything)
    a_rnn = speed_setup.Row.of("A", "rnn")  # one layer, one-hot input: the head's and W_hh's
    assert 0.0 < speed_ceilings.product_seconds(a_rnn, 0) < 0.1


def test_step_allows_counts_the_measured_products(benchmark_modules):
    _, speed_setup, speed_report, _ = benchmark_modules
    row = speed_setup.Row.of("B", "lstm")
    small, total = speed_setup.step_product_flops(row), speed_setup.train_flops(row)
    # all products 20 ms, a peak of 200 GFLOP/s
    assert speed_report.step_bound_share(row, 100.0, 200.0, 0.020) == pytest.approx(total / 0.020 / 200e9)
    # unmeasured (runs before): per-step products at 100 GFLOP/s, the others at the peak
    loose = speed_report.step_bound_share(row, 100.0, 200.0)
    assert loose == pytest.approx(1.0 / (small / total * 2.0 + (1.0 - small / total)))
    assert speed_report.step_bound_share(row, 100.0, 200.0, small / 100e9 + (total - small) / 200e9) == (
        pytest.approx(loose)
    )


def test_startup_measures_numbas_floor(benchmark_modules, tmp_path):
    """The start-up table's floor rows: numba alone, then with scipy's BLAS, the second run of
    each loading its function from numba's cache; the note splits numrnn sample's time."""
    _, _, speed_report, speed_startup = benchmark_modules
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    startup = dict(help=dict(cold_s=0.2, warm_s=0.1), sample=dict(cold_s=14.0, warm_s=1.25))
    for name, args in speed_startup.floor_commands(tmp_path).items():
        startup[name] = speed_startup.time_cold_and_warm(args, env, str(tmp_path), 1)
        assert startup[name]["cold_s"] > 0.0 and len(startup[name]["warm_runs_s"]) == 1
    assert len(list(cache.rglob("*.nbi"))) == 2  # both functions went to numba's cache
    rows = speed_report.startup_rows(startup)
    assert [row[0].split(":")[0] for row in rows] == [
        "numrnn --help",
        f"numrnn sample -c small.safetensors --length {speed_report.STARTUP_SAMPLE_LENGTH}",
        "numba's floor",
        "numba's floor with scipy's BLAS",
    ]
    assert rows[1][3:] == ["<=0.5", "miss"] and rows[2][3:] == ["-", "-"]
    assert len(speed_report.startup_notes(startup)) == 1
    # a run from before the floor rows shows the two commands alone, and no note
    before = dict(help=startup["help"], sample=startup["sample"])
    assert len(speed_report.startup_rows(before)) == 2
    assert speed_report.startup_notes(before) == []


def test_startup_note_splits_the_sample_start_or_says_the_floor_was_slower(benchmark_modules):
    """numrnn sample's warm start less numba's floor is numrnn's own part; a floor timed slower
    than the sample (other processes, a noisy machine) is said as such, never as a negative part."""
    speed_report = benchmark_modules[2]
    timed = lambda warm: dict(cold_s=2 * warm, warm_s=warm)  # noqa: E731
    (note,) = speed_report.startup_notes({"sample": timed(1.25), "floor-blas": timed(0.85)})
    assert "takes 0.85 s of numrnn sample's 1.25 s warm" in note
    assert note.endswith("is the other 0.40 s.")
    (note,) = speed_report.startup_notes({"sample": timed(1.13), "floor-blas": timed(1.28)})
    assert "took 1.28 s, more than numrnn sample's 1.13 s warm" in note
    assert "-0." not in note and "the other" not in note


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread CPU times come from /proc")
def test_thread_cpu_seconds_shows_a_busy_thread():
    # speed.py's under-load children report each thread's CPU time, to show a spinning one
    import threading
    import time

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from harness import thread_cpu_seconds
    finally:
        sys.path.remove(str(BENCHMARKS))
    worked, release = threading.Event(), threading.Event()

    def spin():
        while time.thread_time() < 0.5:
            pass
        worked.set()
        release.wait()

    before = thread_cpu_seconds()
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        assert worked.wait(60)
        seconds = thread_cpu_seconds()
    finally:
        release.set()
        spinner.join()
    assert len(seconds) == len(before) + 1
    assert seconds == sorted(seconds, reverse=True)
    # the spinner's 0.5 s, less the kernel's tick-rounded accounting of it (0.29 s for 0.3 s
    # spun was seen in CI): /proc counts whole clock ticks, separately for user and system time
    assert sum(seconds) - sum(before) >= 0.4
