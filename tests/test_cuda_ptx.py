"""The CUDA kernels type-check and compile for real hardware, with no GPU: each ``cuda.jit``
kernel of ``numrnn.kernels.cuda`` compiled to PTX for compute capability 9.0, float32 and
float64 (the simulator, which runs them in ``test_cuda_sim.py``, does no type inference).
Runs in the main pytest process (the simulator off)."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
    reason="PTX needs the real CUDA target; under the simulator test_cuda_sim.py runs instead",
)

from numba import cuda  # noqa: E402

from numrnn.kernels import cuda as backend  # noqa: E402

CC = (9, 0)  # an H100/H200


@pytest.fixture(autouse=True)
def a_device_of_compute_capability_9(monkeypatch):
    # Device functions compile lazily for the current device's compute capability; there is
    # no device here, so say which one to compile for.
    import numba.cuda.dispatcher

    monkeypatch.setattr(
        numba.cuda.dispatcher, "get_current_device", lambda: SimpleNamespace(compute_capability=CC)
    )


def compile_ptx(kernel, signature):
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=CC)
    return ptx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(backend.kernel_signatures(np.float32)))
def test_every_kernel_compiles_to_ptx(name, dtype):
    kernel, signature = backend.kernel_signatures(dtype)[name]
    ptx = compile_ptx(kernel, signature)
    assert ".visible .entry" in ptx and f".target sm_{CC[0]}{CC[1]}" in ptx


def test_every_launcher_kernel_is_in_the_ptx_list():
    """A kernel added to the module without a signature here would escape this test."""
    from numba.cuda.dispatcher import CUDADispatcher

    kernels = {
        name
        for name, value in vars(backend).items()
        if isinstance(value, CUDADispatcher) and not value.targetoptions.get("device")
    }
    assert kernels == set(backend.kernel_signatures(np.float32))


def test_an_ill_typed_kernel_fails_to_compile():
    """The negative control: this test does fail on a kernel that cannot be typed."""
    from numba import types
    from numba.cuda.core.errors import TypingError

    @cuda.jit
    def broken(out, n):
        b, j = cuda.grid(2)
        if b < n:
            out[b, j] = backend.gru_cell(out[b, j], 1.0)  # 2 of gru_cell's 7 arguments

    f32 = types.Array(types.float32, 2, "C")
    with pytest.raises(TypingError, match="missing a required argument"):
        compile_ptx(broken, (f32, types.intp))
