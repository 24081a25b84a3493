"""Tunables and the kernel cache's key."""

import os
import subprocess
import sys

from numrnn import tunables


def test_cache_folder_is_keyed_by_version_and_kernel_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMRNN_CACHE_DIR", str(tmp_path))
    folder = tunables.kernel_cache_dir()
    assert folder.parent == tmp_path
    assert folder.name == f"kernels-{tunables.__version__}-{tunables.kernel_source_hash()}"


def test_kernels_compiled_looks_for_the_cache_index(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMRNN_CACHE", "1")
    assert not tunables.kernels_compiled("generate_tokens")
    index = tunables.kernel_cache_dir() / "kernels_abc"
    index.mkdir(parents=True)
    (index / "cpu.generate_tokens-682.py311.nbi").write_bytes(b"")
    assert tunables.kernels_compiled("generate_tokens")
    assert not tunables.kernels_compiled("generate_tokens", "lstm_forward")
    monkeypatch.setenv("NUMRNN_CACHE", "0")
    assert not tunables.kernels_compiled("generate_tokens")


CALLER = """
import numba
from numrnn.kernels import cpu


@numba.njit(cache=True)
def head(y, x, W, b):
    cpu.linear_forward(y, x, W, b)  # a serial kernel that reaches a parallel one
"""

RUN = """
import sys
import numpy as np
from numrnn.kernels import cpu

y = np.zeros((3, 5), np.float32)
x = np.arange(12, dtype=np.float32).reshape(3, 4)
W = np.ones((4, 5), np.float32)
b = np.full(5, 0.5, np.float32)
if sys.argv[1] == "kernel":
    cpu.linear_forward(y, x, W, b)
else:
    import caller

    caller.head(y, x, W, b)
print(float(y.sum()))
"""


def test_a_cached_kernel_that_calls_a_parallel_one_runs_in_a_new_process(tmp_path):
    """The order that crashed `numrnn sample` after a `numrnn train` (a null pointer): a kernel
    compiled and cached (train), a caller of it compiled in a process that loaded it from the
    cache (the first sample), then that caller loaded from the cache in a new process."""
    (tmp_path / "caller.py").write_text(CALLER)
    (tmp_path / "run.py").write_text(RUN)
    cache = str(tmp_path / "cache")
    env = dict(os.environ, NUMRNN_CACHE="1", NUMRNN_CACHE_DIR=cache, PYTHONPATH=str(tmp_path))
    sums = []
    for mode in ("kernel", "caller", "caller"):
        command = [sys.executable, str(tmp_path / "run.py"), mode]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (mode, done.returncode, done.stderr[-2000:])
        sums.append(float(done.stdout))
    assert sums == [sum(range(12)) * 5 + 7.5] * 3
