"""Kernel backends. ``get_backend(name)`` returns the module of kernels for a device.

Both backends expose the same functions with the same arguments (see ``cpu.py``); the CUDA
one is imported only when asked for, so a machine without CUDA never loads it.
"""

from numrnn.configs import DEVICES
from numrnn.errors import DeviceError


def get_backend(device="cpu"):
    """The kernel module for ``device``: "cpu", "cuda" or "auto" (the CPU until CUDA lands)."""
    if device in ("cpu", "auto"):
        from numrnn.kernels import cpu

        return cpu
    if device == "cuda":
        raise DeviceError(
            "the CUDA backend is not available in this version of numrnn; run on the CPU with --device cpu"
        )
    raise DeviceError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
