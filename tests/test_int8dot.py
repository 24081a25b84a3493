"""int8 generation's integer products (numrnn/kernels/int8dot.py) against plain numpy: the
rounding of an input to int16, the exact sums, their bound, and every shape's edges (tails
shorter than a vector, fewer than four rows, row ranges)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from numrnn.kernels import int8dot
from numrnn.sampling import quantize_int8


def quantize_reference(x):
    """(xq, step) as int8dot.quantize makes them, in numpy's float32 arithmetic."""
    x = np.asarray(x, np.float32)
    largest = np.abs(x).max() if x.size else np.float32(0)
    if largest == 0:
        return np.zeros(x.shape, np.int16), np.float32(0)
    limit = min(32767, (2**31 - 1) // (127 * max(x.shape[0], 1)))
    step = np.float32(largest) / np.float32(limit)
    inverse = np.float32(1) / step
    return np.rint(x * inverse).astype(np.int16), step


def rows_reference(xq, step, W, scale):
    """int8dot.rows over all rows: the exact integer sums (int64), then float32 scaling."""
    sums = W.astype(np.int64) @ xq.astype(np.int64)
    return (scale * np.float32(step)) * sums.astype(np.float32)


@pytest.mark.parametrize("D", [1, 5, 31, 32, 33, 64, 100, 512, 1024, 2500])
def test_input_limit_keeps_every_sum_inside_int32(D):
    limit = int8dot.input_limit(D)
    assert 1 <= limit <= 32767
    assert D * 127 * limit <= 2**31 - 1
    assert limit == 32767 or D * 127 * (limit + 1) > 2**31 - 1  # the largest that fits


@pytest.mark.parametrize("D", [1, 7, 64, 513, 2048])
def test_quantize_matches_numpy_and_bounds_the_rounding(D, rng):
    x = (rng.standard_normal(D) * 3).astype(np.float32)
    xq = np.full(D, 99, np.int16)
    step = int8dot.quantize(xq, x)
    xq_ref, step_ref = quantize_reference(x)
    assert np.float32(step) == step_ref
    np.testing.assert_array_equal(xq, xq_ref)
    assert np.abs(xq).max() == int8dot.input_limit(D)  # the largest element takes the limit
    assert np.abs(xq.astype(np.float64) * step - x).max() <= 0.5 * step * (1 + 1e-6)


def test_quantize_of_a_zero_vector_is_zero_with_a_zero_step():
    xq = np.full(40, 7, np.int16)
    assert int8dot.quantize(xq, np.zeros(40, np.float32)) == 0
    assert not xq.any()


@pytest.mark.parametrize("D", [1, 7, 64, 512, 1024, 2048])
def test_a_state_is_rounded_at_its_fixed_step_unit_by_unit(D, rng):
    # |h| <= 1 (a hair above from a float32 tanh is clamped): xq = rint(h * limit), the step
    # 1 / limit, the units outside j0:j1 untouched
    h = np.tanh(rng.standard_normal(D) * 3).astype(np.float32)
    h[0] = np.float32(1.0000001)
    limit = int8dot.input_limit(D)
    xq = np.full(D + 3, 99, np.int16)
    j0, j1 = D // 3, D - D // 4
    int8dot.quantize_state(xq, h, j0, j1)
    int8dot.quantize_state(xq, h, 0, j0)
    expected = np.clip(np.rint(h * np.float32(limit)), -limit, limit).astype(np.int16)
    np.testing.assert_array_equal(xq[:j1], expected[:j1])
    assert (xq[j1:] == 99).all()
    step = int8dot.state_step(D)
    assert np.float32(step) == np.float32(1) / np.float32(limit)
    assert np.abs(xq[:j1].astype(np.float64) * step - h[:j1]).max() <= 0.5 * step * (1 + 1e-3)


@pytest.mark.parametrize("R", [1, 3, 4, 5, 13, 64])
@pytest.mark.parametrize("D", [1, 5, 31, 32, 33, 70, 512])
def test_rows_are_the_exact_integer_sums_scaled(R, D, rng):
    W, scale = quantize_int8((rng.standard_normal((R, D)) * 0.1).astype(np.float32))
    xq, step = quantize_reference(np.tanh(rng.standard_normal(D)))
    out = np.full(R, np.nan, np.float32)
    int8dot.rows(out, xq, step, W, scale, 0, R)
    np.testing.assert_array_equal(out, rows_reference(xq, step, W, scale))


def test_rows_write_their_range_only(rng):
    R, D = 23, 70
    W, scale = quantize_int8(rng.standard_normal((R, D)).astype(np.float32))
    xq, step = quantize_reference(rng.standard_normal(D))
    full = rows_reference(xq, step, W, scale)
    for r0, r1 in [(0, 0), (5, 6), (3, 10), (17, 23), (0, 23)]:
        out = np.full(R, -1.0, np.float32)
        int8dot.rows(out, xq, step, W, scale, r0, r1)
        np.testing.assert_array_equal(out[r0:r1], full[r0:r1])
        assert (out[:r0] == -1).all() and (out[r1:] == -1).all()


@pytest.mark.parametrize("D", [64, 1000, 2048])
def test_the_largest_sums_do_not_overflow(D):
    # every weight at +-127 and every input at the limit, all of one sign: the largest |sum|
    limit = int8dot.input_limit(D)
    xq = np.full(D, -limit, np.int16)
    W = np.stack([np.full(D, 127, np.int8), np.full(D, -127, np.int8), np.full(D, 127, np.int8)])
    out = np.zeros(3, np.float32)
    int8dot.rows(out, xq, np.float32(1), W, np.ones(3, np.float32), 0, 3)
    exact = -127 * limit * D
    assert 2**31 - 1 >= abs(exact)
    np.testing.assert_array_equal(out, np.float32([exact, -exact, exact]))


def test_the_rounded_products_stay_close_to_the_float_ones(rng):
    # the rounding of the input against the product of the dequantised weights in float64
    R, D = 256, 1024
    W, scale = quantize_int8((rng.standard_normal((R, D)) * 0.05).astype(np.float32))
    x = np.tanh(rng.standard_normal(D)).astype(np.float32)
    xq = np.zeros(D, np.int16)
    step = int8dot.quantize(xq, x)
    out = np.zeros(R, np.float32)
    int8dot.rows(out, xq, step, W, scale, 0, R)
    dequantised = W.astype(np.float64) * scale[:, None]
    exact = dequantised @ x.astype(np.float64)
    bound = 0.5 * step * np.abs(dequantised).sum(axis=1) + 1e-6 * np.abs(exact)  # + float32's own
    assert (np.abs(out - exact) <= bound).all()


AVX2_CHECK = """
import numpy as np
from numrnn.kernels import int8dot, microkernel
assert microkernel.VECTOR_BYTES == 32 and int8dot.LANES == 16
rng = np.random.default_rng(0)
for R, D in ((5, 15), (9, 16), (13, 70), (64, 512)):
    W = rng.integers(-127, 128, (R, D)).astype(np.int8)
    x = rng.standard_normal(D).astype(np.float32)
    xq = np.zeros(D, np.int16)
    step = int8dot.quantize(xq, x)
    out = np.zeros(R, np.float32)
    int8dot.rows(out, xq, step, W, np.ones(R, np.float32), 0, R)
    sums = (W.astype(np.int64) @ xq.astype(np.int64)).astype(np.float32)
    assert np.array_equal(out, np.float32(step) * sums), (R, D)
print("same sums")
"""


def test_the_products_on_a_cpu_without_avx512():
    # a CPU with AVX2 only: 16 int16 lanes a step (vpmaddwd), compiled for one in a child
    env = dict(
        os.environ,
        NUMBA_CPU_NAME="haswell",
        NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+f16c,+popcnt,+sse4.2,+bmi,+bmi2",
        NUMRNN_CACHE="0",
    )
    done = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "same sums" in done.stdout, done.stderr[-2000:]
