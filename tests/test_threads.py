"""threads.py: the thread count follows the cores other processes leave free."""

import ctypes
import sys

import pytest

from numrnn import threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")


class FakeMachine:
    """Two cores; ``others`` of them kept busy by other processes, ``ours`` by this one."""

    def __init__(self, monkeypatch):
        self.wall, self.busy, self.own = 0.0, 0, 0.0
        self.others, self.ours = 0.0, 2.0
        self.set_to = []
        monkeypatch.setattr(threads, "_busy_jiffies", lambda cpus: self.busy)
        monkeypatch.setattr(threads.time, "process_time", lambda: self.own)
        monkeypatch.setattr(threads, "set_threads", self.set_to.append)

    def run(self, seconds, tick=100):
        self.wall += seconds
        self.own += self.ours * seconds
        self.busy += round((self.ours + self.others) * seconds * tick)

    def clock(self):
        return self.wall


def test_threads_follow_the_free_cores(monkeypatch):
    machine = FakeMachine(monkeypatch)
    governor = threads.ThreadGovernor(2, interval=1.0, clock=machine.clock)
    governor.cpus, governor.tick, governor.enabled = {0, 1}, 100, True
    governor._last = governor._sample()
    machine.others, machine.ours = 0.7, 1.3  # a busy process takes its share of the two cores
    machine.run(0.5)
    assert governor.check() == 2 and machine.set_to == []  # less than an interval: not measured
    machine.run(0.5)
    assert governor.check() == 1 and machine.set_to == [1]
    machine.others, machine.ours = 1.0, 1.0
    machine.run(1.0)
    assert governor.check() == 1 and machine.set_to == [1]  # it stays while the core is busy
    machine.others, machine.ours = 0.0, 1.0  # the other process ended
    machine.run(1.0)
    assert governor.check() == 2 and machine.set_to == [1, 2]
    assert threads.ThreadGovernor(1).check() == 1  # one thread asked for: nothing to follow


def test_a_governor_given_apply_sets_the_count_through_it(monkeypatch):
    # The sampler's governor sets numba's threads and its parts, never BLAS's.
    machine, applied = FakeMachine(monkeypatch), []
    governor = threads.ThreadGovernor(2, interval=1.0, clock=machine.clock, apply=applied.append)
    governor.cpus, governor.tick, governor.enabled = {0, 1}, 100, True
    governor._last = governor._sample()
    machine.others, machine.ours = 1.0, 1.0
    machine.run(1.0)
    assert governor.check() == 1 and applied == [1] and machine.set_to == []


def test_blas_stays_at_one_thread_and_set_threads_moves_numba_alone():
    import numba
    import numpy  # noqa: F401  (its OpenBLAS)
    import scipy.linalg.cython_blas  # noqa: F401  (numba's BLAS: scipy's OpenBLAS)

    found = threads.openblas_functions("set_num_threads", "get_num_threads")
    assert len(found) >= 2, "numpy's and scipy's OpenBLAS should both be found"
    scipys = [functions for path, functions in found if "scipy.libs" in path or "scipy/" in path]
    numpys = [functions for path, functions in found if "numpy" in path]
    assert len(scipys) == 1 and len(numpys) == 1, [path for path, _ in found]
    for setter, _ in scipys + numpys:
        setter(ctypes.c_int(2))
    numpy_threads = numpys[0][1]()
    threads.one_blas_thread()
    assert scipys[0][1]() == 1  # numba's products: one pool, numba's
    assert numpys[0][1]() == numpy_threads  # the user's numpy keeps its threads
    before = numba.get_num_threads()
    try:
        threads.set_threads(1)
        assert numba.get_num_threads() == 1
        threads.set_threads(2)
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        assert scipys[0][1]() == 1
    finally:
        threads.set_threads(before)
    assert numba.get_num_threads() == before
