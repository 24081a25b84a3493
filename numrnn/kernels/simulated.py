"""Device memory as strict as a GPU's, under numba's CUDA simulator (no GPU).

On a GPU the CUDA backend's arrays are CuPy arrays, and CuPy refuses what would silently move
data between host and device: a NumPy array mixed into an operation or an assignment with a
device array raises ``TypeError``, and a kernel given a host array copies it over and back at
every launch. Under the simulator every array is host memory, so none of that would show. This
module stands in for CuPy there: ``xp`` creates ``DeviceArray``s (host memory marked as the
device's), every NumPy operation on them returns ``DeviceArray``s, and one that mixes in a
plain host array (not a scalar) raises ``HostMixError``; ``to_device``/``to_host`` are the only
crossings. The simulator tests also make kernel launches refuse host arrays, and train every task
this way, so a host array left in a device path fails there as it would on the GPU.
"""

import numpy as np


class HostMixError(TypeError):
    """A host (NumPy) array met a device array: a transfer CuPy would refuse."""


def _is_host(value):
    return isinstance(value, np.ndarray) and not isinstance(value, DeviceArray) and value.ndim > 0


def _refuse_host(values, what):
    for value in values:
        if isinstance(value, (list, tuple)):
            _refuse_host(value, what)
        elif _is_host(value):
            raise HostMixError(f"{what}: a host array {value.shape} {value.dtype} mixed with device arrays")


def _plain(value):
    """DeviceArray -> a plain ndarray view (recursively in lists and tuples)."""
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _device(value):
    """ndarray results -> DeviceArray views; scalars stay host scalars (CuPy gives 0-d arrays,
    which ``float()`` and ``int()`` read the same)."""
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_device(item) for item in value)
    if isinstance(value, list):
        return [_device(item) for item in value]
    return value


class DeviceArray(np.ndarray):
    """Host memory standing for device memory (see the module docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(inputs, f"numpy.{ufunc.__name__}")
        _refuse_host(kwargs.get("out", ()), f"numpy.{ufunc.__name__} out")
        kwargs = {key: _plain(value) for key, value in kwargs.items()}
        return _device(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host(args, f"numpy.{func.__name__}")
        _refuse_host(kwargs.values(), f"numpy.{func.__name__}")
        return _device(func(*_plain(args), **{key: _plain(value) for key, value in kwargs.items()}))

    def __setitem__(self, key, value):
        _refuse_host((value,), "assignment")
        _refuse_host(key if isinstance(key, tuple) else (key,), "index")
        super().__setitem__(_plain(key), _plain(value))

    def __getitem__(self, key):
        _refuse_host(key if isinstance(key, tuple) else (key,), "index")
        return super().__getitem__(_plain(key))


def to_device(array, dtype=None):
    """A device copy of host data (``cupy.asarray``)."""
    if isinstance(array, DeviceArray):
        return array if dtype is None or array.dtype == dtype else array.astype(dtype)
    return np.array(array, dtype=dtype, order="C").view(DeviceArray)


def to_host(array):
    """A host copy of device data (``cupy.asnumpy``)."""
    if isinstance(array, DeviceArray):
        return array.view(np.ndarray).copy()
    return np.asarray(array)


class _Namespace:
    """``xp`` for the simulated device: NumPy's functions, creating and returning DeviceArrays
    and refusing host arrays, as ``cupy`` does."""

    ndarray = DeviceArray
    asarray = staticmethod(to_device)

    def __getattr__(self, name):
        attribute = getattr(np, name)
        if not callable(attribute) or isinstance(attribute, type):
            return attribute

        def call(*args, **kwargs):
            _refuse_host(args, f"xp.{name}")
            _refuse_host(kwargs.values(), f"xp.{name}")
            return _device(attribute(*_plain(args), **{key: _plain(value) for key, value in kwargs.items()}))

        return call


xp = _Namespace()
