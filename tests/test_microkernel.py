"""microkernel.py and the split products: packed panels against numpy, edges, parts, and the same
bits on any number of threads."""

import numba
import numpy as np
import pytest

from numrnn.kernels import cpu
from numrnn.kernels import microkernel as mk

DTYPES = [(np.float64, 1e-12), (np.float32, 1e-5)]


def _packed(S, blocks):
    packed = np.full(mk.packed_size(S.shape[0], S.shape[1] // blocks, blocks, S), np.nan, S.dtype)
    mk.pack(packed, S, blocks)
    return packed


def _panels_by_numpy(S, blocks):
    # the layout pack's comment describes: panel q * blocks + g holds columns g*H + q*NR .. + NR
    # of S (K, blocks*H), zero past H
    K, H = S.shape[0], S.shape[1] // blocks
    NR = mk.VECTORS * mk.VECTOR_BYTES // S.dtype.itemsize
    Q = -(-H // NR)
    panels = np.zeros((Q, blocks, K, NR), S.dtype)
    for q in range(Q):
        for g in range(blocks):
            width = min(NR, H - q * NR)
            panels[q, g, :, :width] = S[:, g * H + q * NR : g * H + q * NR + width]
    return panels.ravel()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("H,blocks", [(37, 3), (64, 4), (5, 1), (100, 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_pack_lays_out_panels_as_documented(dtype, transposed, H, blocks, threads, rng):
    # K crosses PACK_ROWS; a transposed view (BPTT packs Wh.T) is read along its columns
    K = mk.PACK_ROWS + 9
    if transposed:
        S = rng.standard_normal((blocks * H, K)).astype(dtype).T
    else:
        S = rng.standard_normal((K, blocks * H)).astype(dtype)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        packed = _packed(S, blocks)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(packed, _panels_by_numpy(S, blocks))


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("n", [1, 2, mk.ROWS - 1, mk.ROWS, mk.ROWS + 1, 2 * mk.ROWS + 3])
@pytest.mark.parametrize("H,blocks", [(37, 3), (64, 4), (5, 1)])
def test_packed_product_matches_numpy_at_every_row_count_and_ragged_panels(dtype, tol, n, H, blocks, rng):
    K = 19
    S = rng.standard_normal((K, blocks * H)).astype(dtype)
    A = rng.standard_normal((n, K)).astype(dtype)
    expected = A.astype(np.float64) @ S.astype(np.float64)
    C = np.full((n, blocks * H), np.nan, dtype)
    mk.packed_product(C, A, _packed(S, blocks), blocks, 0, mk.chunks(H, S), False)
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol)
    base = rng.standard_normal((n, blocks * H)).astype(dtype)
    total = base.copy()
    mk.packed_product(total, A, _packed(S, blocks), blocks, 0, mk.chunks(H, S), True)
    np.testing.assert_allclose(total, base + expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", range(1, 3 * mk.ROWS + 2))
def test_rows_split_into_the_fewest_tiles_as_even_as_they_go(n):
    tiles = []
    while sum(tiles) < n:
        tiles.append(mk._tile_rows(n - sum(tiles)))
    assert sum(tiles) == n
    assert len(tiles) == -(-n // mk.ROWS)
    assert max(tiles) - min(tiles) <= 1 and set(tiles) <= set(mk.TILE_ROWS)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_packed_product_matches_numpy_through_every_tile_loop(dtype, tol, rng):
    # every row count of TILE_ROWS, alone and as the tiles of a larger product
    K, H, blocks = 23, 21, 2
    S = rng.standard_normal((K, blocks * H)).astype(dtype)
    packed = _packed(S, blocks)
    for n in range(1, 2 * mk.ROWS + 2):
        A = rng.standard_normal((n, K)).astype(dtype)
        C = np.full((n, blocks * H), np.nan, dtype)
        mk.packed_product(C, A, packed, blocks, 0, mk.chunks(H, S), False)
        np.testing.assert_allclose(C, A.astype(np.float64) @ S.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_a_transposed_weight_and_a_strided_left_operand_give_the_same_product(dtype, tol, rng):
    K, H, n = 40, 70, 13
    W = rng.standard_normal((H, K)).astype(dtype)  # packed as W.T, as BPTT packs Wh.T
    A = np.asfortranarray(rng.standard_normal((n, K)).astype(dtype))
    C = np.zeros((n, H), dtype)
    mk.packed_product(C, A, _packed(W.T, 1), 1, 0, mk.chunks(H, W), False)
    np.testing.assert_allclose(C, A @ W.T, rtol=tol, atol=tol)


def test_a_part_writes_its_own_units_of_every_gate_block_and_nothing_else(rng):
    H, blocks, n, K = 100, 4, 7, 11
    S = rng.standard_normal((K, blocks * H))
    A = rng.standard_normal((n, K))
    NR = 2 * mk.VECTOR_BYTES // 8
    C = np.full((n, blocks * H), -7.0)
    mk.packed_product(C, A, _packed(S, blocks), blocks, 1, 2, False)
    written = np.zeros(blocks * H, bool)
    for g in range(blocks):
        written[g * H + NR : g * H + min(2 * NR, H)] = True
    np.testing.assert_allclose(C[:, written], (A @ S)[:, written], rtol=1e-12)
    assert (C[:, ~written] == -7.0).all()


def test_a_nan_in_the_state_reaches_the_product():
    S = np.ones((8, 32))
    A = np.ones((3, 8))
    A[1, 4] = np.nan
    C = np.zeros((3, 32))
    mk.packed_product(C, A, _packed(S, 1), 1, 0, mk.chunks(32, S), False)
    assert np.isnan(C[1]).all() and np.isfinite(C[[0, 2]]).all()


def _with_threads(count, run):
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        return run()
    finally:
        numba.set_num_threads(before)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here: nothing to split")
def test_split_dense_products_give_the_same_bits_on_one_thread_or_two(rng):
    N, D, K = 600, 48, 40  # past _DENSE_WORK: split into row halves
    x = rng.standard_normal((N, D)).astype(np.float32)
    W = rng.standard_normal((D, K)).astype(np.float32)
    dy = rng.standard_normal((N, K)).astype(np.float32)

    def run():
        y = np.zeros((N, K), np.float32)
        cpu.linear_forward(y, x, W, np.zeros(K, np.float32))
        dx = np.zeros((N, D), np.float32)
        dW = np.ones((D, K), np.float32)
        db = np.zeros(K, np.float32)
        cpu.linear_backward(dx, dW, db, dy, x, W, np.zeros(2 * D * K, np.float32))
        return y, dx, dW

    one, two = _with_threads(1, run), _with_threads(2, run)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    y, dx, dW = two
    np.testing.assert_allclose(y, x @ W, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dy @ W.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dW, 1 + x.T @ dy, rtol=1e-4, atol=1e-3)
