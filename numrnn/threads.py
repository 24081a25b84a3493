"""CPU threads that follow the cores other processes leave free (Linux).

Threads wait for each other at every parallel step, spinning. With another process busy on one
of two cores, a second thread gets half a core and every product waits for it: a training step
then takes about twice as long as on one thread. ``ThreadGovernor.check`` (called between
training steps) measures, over the last second, how much of this process's cores other
processes used (``/proc/stat`` less this process's own CPU time), and sets numba's thread
count (the only pool numrnn's kernels run on; OpenBLAS stays at one thread) to the free cores it
finds (1 at least, ``limit`` at most), so the step runs on the cores it can have. Elsewhere
than Linux it changes nothing.
"""

import ctypes
import importlib.util
import os
import sys
import threading
import time
import types

# OpenBLAS's functions under the prefixes and suffixes of its builds: plain, and numpy's and
# scipy's wheels (scipy's is the one numba's compiled products call).
_AFFIXES = (("openblas", ""), ("scipy_openblas", ""), ("scipy_openblas", "64_"), ("openblas", "64_"))


def openblas_functions(*stems):
    """[(path, [function per stem])] for every OpenBLAS library this process has loaded that
    has all the functions ``stems`` names (e.g. "get_num_threads" for openblas_get_num_threads
    or scipy_openblas_get_num_threads64_)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(
                {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()}
            )
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _AFFIXES:
            names = [f"{prefix}_{stem}{suffix}" for stem in stems]
            if all(hasattr(library, name) for name in names):
                found.append((path, [getattr(library, name) for name in names]))
                break
    return found


def openblas_threads():
    """(set, get) thread functions of every OpenBLAS library this process has loaded."""
    return [tuple(functions) for _, functions in openblas_functions("set_num_threads", "get_num_threads")]


def start_pool():
    """Start numba's thread pool (its threading layer) now, before any kernel runs. Kernels
    loaded from numba's cache call into the pool through pointers that only starting it sets,
    and a serial kernel that reaches a parallel one (generation's output layer, through
    linear_forward) does not start it on its own: a cached generate_tokens called a null
    pointer (a segmentation fault on the second `numrnn sample` after a `numrnn train`)."""
    import numba

    numba.get_num_threads()  # starts the threading layer


def one_blas_thread():
    """The OpenBLAS numba's compiled products call (scipy's, loaded first) to one thread.
    numrnn's CPU kernels share their work out on numba's threads alone: OpenBLAS's threads
    spin for about 0.1 s after each call and would take the cores numba's threads are running
    on (kernels/cpu.py, "One thread pool"). numpy's own copy, which numrnn's kernels never
    call, keeps its threads for the user's numpy code (unless it is the same library)."""
    import numpy

    import_before_package("scipy.linalg", "cython_blas")  # loads scipy's OpenBLAS
    numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))
    found = openblas_functions("set_num_threads")
    for path, (setter,) in found:
        if len(found) > 1 and (path.startswith(numpy_dir) or "/numpy.libs/" in path):
            continue
        setter(ctypes.c_int(1))


_package_lock = threading.RLock()  # one package's __init__ at a time (import_before_package)


class _PackageRunOnFirstUse(types.ModuleType):
    """A package whose ``__init__`` has not run yet: it runs, once, at the first lookup of a
    name the package does not have yet (``import_before_package``)."""

    def __getattr__(self, name):
        with _package_lock:
            if type(self) is _PackageRunOnFirstUse:
                self.__class__ = types.ModuleType  # from here on, an ordinary module
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(self.__name__, None)  # the next import starts afresh
                    raise
        return getattr(self, name)


def import_before_package(package, submodule):
    """Import ``package.submodule`` without running ``package/__init__.py`` yet: the package
    stands in ``sys.modules`` with its path (so its submodules import) and runs its
    ``__init__`` at its first other use (``import package; package.name`` works as usual).
    scipy.linalg's ``__init__`` imports scipy's array-API layer, which imports numpy's
    submodules (f2py, testing, ...): 0.2 s of a 1.2 s warm ``numrnn sample`` (Zen 3), where
    numba only wants the ``cython_blas`` extension, which needs none of it. A package already
    imported is used as it is."""
    name = f"{package}.{submodule}"
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations is not None:
            stand_in = importlib.util.module_from_spec(spec)
            stand_in.__class__ = _PackageRunOnFirstUse
            sys.modules[package] = stand_in
            parent, _, child = package.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, stand_in)  # as an import binds it
    return importlib.import_module(name)


def set_threads(count):
    """numba to ``count`` threads (BLAS stays at one: ``one_blas_thread``)."""
    import numba

    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))


def _busy_jiffies(cpus):
    """Clock ticks the CPUs ``cpus`` spent busy since boot (all processes), or None."""
    try:
        with open("/proc/stat") as stat:
            lines = [line.split() for line in stat if line.startswith("cpu") and line[3] != " "]
    except OSError:
        return None
    total = 0
    for fields in lines:
        if int(fields[0][3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            total += user + nice + system + irq + softirq + steal
    return total


class ThreadGovernor:
    """Keeps the thread count at the free cores (see the module docstring); ``check()`` is
    cheap between its measurements (one clock read)."""

    def __init__(self, limit, interval=1.0, clock=time.monotonic, apply=None):
        """limit: the most threads; apply(count): sets the count (by default numba's: set_threads;
        the sampler, which calls no BLAS, sets numba's and its own part count)."""
        self.cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self.limit = max(1, int(limit))
        self.interval = interval
        self.clock = clock
        self.apply = apply  # None: set_threads (looked up at each change)
        self.threads = self.limit
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.enabled = self.limit > 1 and _busy_jiffies(self.cpus) is not None
        self._last = self._sample() if self.enabled else None

    def _sample(self):
        return self.clock(), _busy_jiffies(self.cpus), time.process_time()

    def others_busy(self, start, end):
        """Cores of ours that other processes kept busy between two samples."""
        (wall0, busy0, own0), (wall1, busy1, own1) = start, end
        return ((busy1 - busy0) / self.tick - (own1 - own0)) / max(wall1 - wall0, 1e-9)

    def check(self):
        """Adjust the thread count when a measurement interval has passed; returns it."""
        if not self.enabled or self.clock() - self._last[0] < self.interval:
            return self.threads
        sample = self._sample()
        free = len(self.cpus) - self.others_busy(self._last, sample)
        self._last = sample
        # A core counts as free when others leave at least half of it.
        wanted = max(1, min(self.limit, int(free + 0.5)))
        if wanted != self.threads:
            (self.apply or set_threads)(wanted)
            self.threads = wanted
        return self.threads
