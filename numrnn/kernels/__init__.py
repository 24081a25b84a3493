"""Kernel backends. ``get_backend(name)`` returns the module of kernels for a device.

Both backends expose the same functions with the same arguments (see ``cpu.py``); the CUDA
one is imported only when asked for, so a machine without CUDA never loads it.

The CUDA backend's kernels are complete for training and generation and tested against the
CPU's under numba's simulator, but the networks' arrays do not live on the GPU yet: on a
machine with a GPU, ``--device cuda`` is refused with that reason until they do. Under the
simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) it runs, on host arrays, which is how the
tests train every task through the CUDA kernels.
"""

import os

from numrnn.configs import DEVICES
from numrnn.errors import DeviceError


def get_backend(device="cpu"):
    """The kernel module for ``device``: "cpu", "cuda" or "auto" (the CPU until the CUDA
    backend's arrays live on the GPU)."""
    if device in ("cpu", "auto"):
        from numrnn.kernels import cpu

        return cpu
    if device == "cuda":
        return _cuda_backend()
    raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")


def _cuda_backend():
    try:
        from numba import cuda
    except ImportError:
        cuda = None
    if cuda is None or not hasattr(cuda, "jit"):
        raise DeviceError(
            "--device cuda needs numba-cuda: pip install 'numrnn[cuda]' (or run on the CPU with --device cpu)"
        )
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        from numrnn.kernels import cuda as backend

        return backend
    if not cuda.is_available():
        raise DeviceError("no CUDA GPU found (numba-cuda sees none); run on the CPU with --device cpu")
    raise DeviceError(
        "the CUDA backend is not complete in this version of numrnn: its kernels are tested, but the "
        "model's arrays do not live on the GPU yet; run on the CPU with --device cpu"
    )
