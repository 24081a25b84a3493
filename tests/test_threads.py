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


def _write_package(root, name, init_source):
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text(init_source)
    (package / "part.py").write_text("VALUE = 7\n")
    return package


@pytest.fixture
def fresh_packages(tmp_path, monkeypatch):
    """tmp_path on sys.path; the packages a test imports from it leave sys.modules after it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_submodule_imports_before_its_package_runs_its_init(fresh_packages):
    _write_package(
        fresh_packages,
        "pkg_first_use",
        "import builtins\nbuiltins.INIT_RUNS = getattr(builtins, 'INIT_RUNS', 0) + 1\nNAME = 'pkg'\n",
    )
    import builtins

    part = threads.import_before_package("pkg_first_use", "part")
    assert part.VALUE == 7
    assert getattr(builtins, "INIT_RUNS", 0) == 0  # __init__ not run yet
    package = sys.modules["pkg_first_use"]
    assert package.part is part
    try:
        assert package.NAME == "pkg"  # the first other use runs __init__, once
        assert package.NAME == "pkg" and builtins.INIT_RUNS == 1
        import pkg_first_use
        from pkg_first_use import part as again

        assert pkg_first_use is package and again is part and type(package).__name__ == "module"
        with pytest.raises(AttributeError):
            package.missing  # noqa: B018
        assert builtins.INIT_RUNS == 1
    finally:
        del builtins.INIT_RUNS


def test_a_package_whose_init_fails_raises_at_first_use_and_imports_afresh(fresh_packages):
    _write_package(fresh_packages, "pkg_init_fails", "raise RuntimeError('broken __init__')\n")
    threads.import_before_package("pkg_init_fails", "part")
    package = sys.modules["pkg_init_fails"]
    with pytest.raises(RuntimeError, match="broken __init__"):
        package.anything  # noqa: B018
    assert "pkg_init_fails" not in sys.modules
    with pytest.raises(RuntimeError, match="broken __init__"):
        import pkg_init_fails  # noqa: F401


def test_an_imported_package_is_used_as_it_is(fresh_packages):
    _write_package(fresh_packages, "pkg_imported", "NAME = 'pkg'\n")
    import pkg_imported

    part = threads.import_before_package("pkg_imported", "part")
    assert sys.modules["pkg_imported"] is pkg_imported and pkg_imported.part is part
    assert type(pkg_imported).__name__ == "module"


def test_numrnn_loads_scipys_blas_without_scipy_linalg_and_scipy_linalg_still_works():
    """In a fresh process: importing the CPU kernels loads scipy.linalg.cython_blas, not
    scipy/linalg/__init__.py; a product through it is right; scipy.linalg works after."""
    import subprocess

    code = (
        "import sys, numpy as np\n"
        "from numrnn.kernels import cpu\n"
        "linalg = sys.modules['scipy.linalg']\n"
        "assert 'solve' not in vars(linalg) and 'scipy.linalg.cython_blas' in sys.modules\n"
        "x = np.arange(6.0).reshape(2, 3); W = np.arange(12.0).reshape(3, 4); y = np.empty((2, 4))\n"
        "cpu.matmul(y, x, W)\n"
        "assert np.array_equal(y, x @ W)\n"
        "import scipy.linalg\n"
        "from scipy.linalg import lu  # noqa: F401\n"
        "assert scipy.linalg is linalg and np.allclose(scipy.linalg.solve(2 * np.eye(2), np.ones(2)), 0.5)\n"
        "assert scipy.linalg.cython_blas is sys.modules['scipy.linalg.cython_blas']\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
