"""Kernel backends. ``get_backend(name)`` returns the module of kernels for a device.

Both backends expose the same functions with the same arguments (see ``cpu.py``), and an
array namespace ``xp`` with the crossings ``to_device``/``to_host``: numpy's own for the CPU,
CuPy's for the GPU, where the networks' parameters, gradients, optimizer state and
workspaces live for a whole run. The CUDA backend is imported only when asked for, so a
machine without CUDA never loads it. Under numba's simulator (``NUMBA_ENABLE_CUDASIM=1``, no
GPU) ``--device cuda`` runs the CUDA kernels on host memory made as strict as a GPU's
(``simulated.py``), which is how the tests train every task through them.
"""

import os

from numrnn.configs import DEVICES
from numrnn.errors import DeviceError


def get_backend(device="cpu"):
    """The kernel module for ``device``: "cpu", "cuda", or "auto" (the GPU when one is
    usable, else the CPU: ``resolve_device``)."""
    device, _ = resolve_device(device)
    if device == "cpu":
        from numrnn.kernels import cpu

        return cpu
    return _cuda_backend()


def resolve_device(device):
    """(the device ``device`` runs on, why "auto" fell back to the CPU or None). "auto" takes
    a real GPU (never the simulator) when numba-cuda, CuPy and a GPU are all there; the reason
    is None when numba-cuda is not installed (a CPU install has nothing to fall back from).
    "cuda" without a usable GPU raises DeviceError, never a silent fallback."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device != "auto":
        return device, None
    if _simulated() or not _has_numba_cuda():
        return "cpu", None
    if not _driver_present():  # asked first: a few ms, where importing numba-cuda takes ~0.6 s
        return "cpu", NO_DRIVER
    try:
        _cuda_backend()
    except DeviceError as error:
        return "cpu", str(error).split(";")[0]
    return "cuda", None


def _simulated():
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


NO_DRIVER = "no CUDA GPU found (no NVIDIA driver: libcuda cannot be loaded)"


def _has_numba_cuda():
    import importlib.util

    return importlib.util.find_spec("numba_cuda") is not None


def _driver_present():
    """Whether the NVIDIA driver's library loads: no GPU can run without it."""
    import ctypes

    names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so", "libcuda.dylib")
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _cuda_backend():
    if not _has_numba_cuda():
        raise DeviceError(
            "--device cuda needs numba-cuda and CuPy: pip install 'numrnn[cuda]' "
            "(or run on the CPU with --device cpu)"
        )
    if not _simulated():
        if not _driver_present():
            raise DeviceError(f"{NO_DRIVER}; run on the CPU with --device cpu")
        from numba import cuda

        if not cuda.is_available():
            raise DeviceError("no CUDA GPU found (numba-cuda sees none); run on the CPU with --device cpu")
        try:
            import cupy  # noqa: F401  (the GPU's matrix products and arrays)
        except ImportError:
            raise DeviceError(
                "--device cuda needs CuPy for the GPU's arrays and cuBLAS: pip install 'numrnn[cuda]' "
                "(or run on the CPU with --device cpu)"
            ) from None
    from numrnn.kernels import cuda as backend

    return backend
