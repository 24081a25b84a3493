"""benchmarks/speed.py times the recurrences' per-step products through numrnn's private
kernel helpers (benchmarks/speed_ceilings.py). A change to those helpers must fail here, not
in the next 20-minute benchmark run (one did: the products column of a full run failed on a
stale call)."""

import dataclasses
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
        import speed_setup
    finally:
        sys.path.remove(str(BENCHMARKS))
    return speed_ceilings, speed_setup


def test_speed_times_the_per_step_products_of_every_split(benchmark_modules):
    speed_ceilings, speed_setup = benchmark_modules
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
