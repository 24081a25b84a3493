"""The kernels' activations: exact in float64, a fast approximation in float32."""

import math

import numba
import numpy as np
import pytest

from numrnn.kernels.activations import exp, one_like, sigmoid, tanh


@numba.njit
def apply_tanh(x, out):
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@numba.njit
def apply_sigmoid(x, out):
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@numba.njit
def apply_exp(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@numba.njit
def tanh_scalar(x):
    return tanh(x)


def exact_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


GRID = np.linspace(-20.0, 20.0, 400_001)


def run(function, x):
    out = np.empty_like(x)
    function(x, out)
    return out


def test_float32_tanh_is_within_4e7_of_the_exact_value():
    x = GRID.astype(np.float32)
    error = np.abs(run(apply_tanh, x).astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert error.max() < 4e-7  # measured 2.6e-7 (3.2e-7 unfused): 3 float32 ulps below 1
    assert run(apply_tanh, np.array([0.0, 30.0, -30.0], np.float32)).tolist() == [0.0, 1.0, -1.0]


def test_float32_sigmoid_is_within_3e7_of_the_exact_value():
    x = GRID.astype(np.float32)
    error = np.abs(run(apply_sigmoid, x).astype(np.float64) - exact_sigmoid(x.astype(np.float64)))
    assert error.max() < 3e-7


def test_float32_stays_float32():
    tanh_scalar(np.float32(0.5))
    (signature,) = [s for s in tanh_scalar.nopython_signatures if s.args == (numba.float32,)]
    assert signature.return_type == numba.float32


def test_float64_is_exact():
    x = GRID[::97]
    np.testing.assert_array_equal(run(apply_tanh, x), [math.tanh(v) for v in x])
    np.testing.assert_allclose(run(apply_sigmoid, x), exact_sigmoid(x), rtol=1e-15, atol=1e-300)
    assert run(apply_sigmoid, np.array([-800.0, 800.0])).tolist() == [0.0, 1.0]  # no overflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_passes_through_and_infinities_saturate(dtype):
    x = np.array([np.nan, np.inf, -np.inf], dtype)
    t = run(apply_tanh, x)
    s = run(apply_sigmoid, x)
    assert np.isnan(t[0]) and np.isnan(s[0])
    assert t[1:].tolist() == [1.0, -1.0] and s[1:].tolist() == [1.0, 0.0]


def test_float32_exp_is_within_1e7_relative_of_the_exact_value():
    x = np.linspace(-87.0, 88.0, 1_000_001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    error = np.abs(run(apply_exp, x).astype(np.float64) - exact) / exact
    assert error.max() < 1e-7  # measured 8.0e-8
    assert run(apply_exp, np.array([0.0, 1.0], np.float32)).tolist() == [1.0, np.float32(math.e)]


def test_float32_exp_keeps_nan_and_stays_finite_at_the_ends():
    out = run(apply_exp, np.array([np.nan, -np.inf, -1000.0, 1000.0], np.float32))
    assert np.isnan(out[0])
    assert 0.0 < out[1] == out[2] < 1.2e-38  # clamped to the smallest normal range: ~0 to a softmax
    assert np.isfinite(out[3]) and out[3] > 2e38


def test_float64_exp_is_exact():
    x = np.linspace(-700.0, 700.0, 10_001)
    np.testing.assert_array_equal(run(apply_exp, x), [math.exp(v) for v in x])


@numba.njit
def one_minus(x):
    return one_like(x) - x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_like_keeps_the_argument_type(dtype):
    """1 - x stays in x's type in compiled code (a float literal would make it float64)."""
    result = one_minus(dtype(0.25))
    assert result == 0.75
    compiled_type = one_minus.nopython_signatures[-1].return_type
    assert str(compiled_type) == np.dtype(dtype).name
