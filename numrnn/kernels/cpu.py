"""CPU kernels (``@njit``): paired forward/backward functions over explicit buffers.

Dimension letters: T time, B batch, D input width, H hidden, G gate width (H rnn, 3H gru,
4H lstm), V vocabulary, K output width, N rows (= T*B).

Conventions (shared/DESIGN.md section 2):
- time-major and C-contiguous; arguments are outputs, then inputs, then parameters, then
  workspaces; sizes come from shapes;
- a layer's state buffers hold T+1 rows: ``hs[0]`` is the initial state and ``hs[t+1]`` is
  ``h_t``, so ``hs[:T]`` are the previous states of all steps, one contiguous block for the
  weight-gradient GEMM;
- the cell kernels take the input projection ``xg = x Wx + bx`` of all T steps, computed
  before them by one GEMM (``linear_forward``) or one row lookup (``embed_forward``), and
  their backward returns its gradient ``dxg`` for ``linear_backward``/``embed_backward``;
- backward accumulates (``+=``) into parameter gradients and overwrites the rest; the
  gradient reaching the last state from a later chunk (``dhT``, ``dcT``) is an input and the
  gradient of the initial state (``dh0``, ``dc0``) an output, so truncated BPTT is repeated
  calls;
- no allocation: the caller passes workspaces (``hw``, ``scratch``).
No explicit signatures: each kernel specialises to float32 and float64 from the same source.
"""

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types as numba_types
from numba.extending import intrinsic, overload

from numrnn import threads, tunables
from numrnn.cells import CELL_TABLE
from numrnn.kernels import activations, claims, int8dot, microkernel, pointwise

_CACHE = tunables.configure_numba()
threads.one_blas_thread()  # one thread pool, numba's: see "One thread pool" below
threads.start_pool()  # before a cached kernel runs (see start_pool)
_JIT = tunables.jit_options(_CACHE)
_DEVICE_JIT = {key: value for key, value in _JIT.items() if key != "cache"}

# inline="always": the cell functions return tuples, and only when numba inlines them into the
# gate loops can LLVM vectorise those loops (measured 26 -> 2.3 ns per LSTM element, float32).
_cell = pointwise.build(
    lambda f: numba.njit(inline="always", **_DEVICE_JIT)(f),
    tanh=activations.tanh,
    sigmoid=activations.sigmoid,
    one_like=activations.one_like,
)
rnn_cell = _cell.rnn_cell
rnn_cell_backward = _cell.rnn_cell_backward
lstm_cell = _cell.lstm_cell
lstm_cell_backward = _cell.lstm_cell_backward
gru_cell = _cell.gru_cell
gru_cell_backward = _cell.gru_cell_backward

# The array namespace and the host crossings of this backend's memory (numpy's own here; the
# CUDA backend's are CuPy's, see cuda.py). Layers allocate through ``xp``.
xp = np


def to_device(array, dtype=None):
    """``array`` as this backend's array (no copy when it already is one of ``dtype``)."""
    return np.ascontiguousarray(array, dtype=dtype)


def to_host(array):
    """``array`` as a host numpy array (no copy here)."""
    return np.asarray(array)


kernel = numba.njit(**_JIT)
# A sum may be reassociated (nothing else): LLVM then keeps several partial sums in vector
# registers instead of one serial chain (measured 52 -> 4 us for the names classifier's 86k
# gradients). A NaN or infinity still reaches the total, which the trainer's check needs.
reduction_kernel = numba.njit(**dict(_JIT, fastmath=_JIT["fastmath"] or {"reassoc"}))


# --------------------------------------------------------------------------- helpers


@kernel
def bias_forward(y, b):
    # y (N, K) += b (K)
    for n in range(y.shape[0]):
        y_n = y[n]
        for k in range(y.shape[1]):
            y_n[k] += b[k]


@kernel
def bias_backward(db, dy):
    # db (K) += column sums of dy (N, K)
    for n in range(dy.shape[0]):
        dy_n = dy[n]
        for k in range(dy.shape[1]):
            db[k] += dy_n[k]


@kernel
def _split3(row, H):
    # row (3H) -> three (H) views, one per gate. Zero-based gate views (not row[H + j]) let
    # LLVM prove the indices non-negative and vectorise the gate loops.
    return row[:H], row[H : 2 * H], row[2 * H :]


@kernel
def _split4(row, H):
    # row (4H) -> four (H) views, one per gate (see _split3)
    return row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]


@kernel
def _rows(a):
    # a (T, B, X) contiguous -> (T*B, X) view
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


# One thread pool. numba's threads run the recurrences (below), so OpenBLAS is kept at one
# thread (threads.py) and the large dense products are split between numba's threads here:
# OpenBLAS's own threads, spinning for about 0.1 s after each call, would take the cores the
# recurrences run on (measured: a B-size training step 3-8x slower with both pools). The split
# is fixed (_DENSE_PARTS row halves, whatever the thread count), so results never depend on
# how many threads ran them.
parallel_kernel = numba.njit(parallel=True, **_JIT)
_DENSE_PARTS = 2
_DENSE_WORK = 1_000_000  # multiply-adds below which a product runs whole on the calling thread
# Elements below which a row lookup runs on the calling thread (two threads measured 11.7 ->
# 10.4 us at 160,000, level at 100,000).
_PARALLEL_COPY_WORK = 150_000


@kernel
def _dense_parts(N, D, K):
    # how many row parts an (N, D) by (D, K) product is split into
    return _DENSE_PARTS if N >= 2 * _DENSE_PARTS and N * D * K >= _DENSE_WORK else 1


@kernel
def _product_rows(y, x, W, b):
    # y (N, K) out = x (N, D) @ W (D, K) + b (K), b of no elements adding nothing; W may be a
    # transposed view
    parts = _dense_parts(x.shape[0], x.shape[1], W.shape[1])
    if parts == 1:
        np.dot(x, W, y)
        if b.shape[0] > 0:
            bias_forward(y, b)
    else:
        _product_row_parts(y, x, W, b, parts)


@parallel_kernel
def _product_row_parts(y, x, W, b, parts):
    # _product_rows' split: ``parts`` row ranges, one thread each, each adding the bias to its
    # rows while they are in its cache
    N = x.shape[0]
    for p in numba.prange(parts):
        r0 = p * N // parts
        r1 = (p + 1) * N // parts
        np.dot(x[r0:r1], W, y[r0:r1])
        if b.shape[0] > 0:
            bias_forward(y[r0:r1], b)


@parallel_kernel
def _partial_products_tn(partial, A, dY):
    # partial (P, X, K) out: partial[p] = A[rows p].T @ dY[rows p], P row parts of A (N, X)
    # and dY (N, K)
    parts = partial.shape[0]
    N = A.shape[0]
    for p in numba.prange(parts):
        r0 = p * N // parts
        r1 = (p + 1) * N // parts
        np.dot(A[r0:r1].T, dY[r0:r1], partial[p])


@kernel
def _weight_grad_tn(dW, A, dY, scratch):
    # dW (X, K) += A.T @ dY
    # A (N, X), dY (N, K); scratch (>= 2*X*K) workspace
    # Large products run as two halves of the rows, one thread each, their partial sums added
    # in a fixed order: the same bits on one thread or two (see _DENSE_PARTS).
    X = A.shape[1]
    K = dY.shape[1]
    N = A.shape[0]
    parts = _dense_parts(N, X, K)
    partial = scratch[: parts * X * K].reshape((parts, X, K))
    if parts == 1:
        np.dot(A.T, dY, partial[0])
    else:
        _partial_products_tn(partial, A, dY)
    _add_partials(dW, partial, 0)


@kernel
def _add_partials(dW, partial, first):
    # dW (X, K) += partial[p, first : first + X] for each part p in order (fixed: the same bits
    # on one thread or two); partial (P, >= first + X, K)
    for p in range(partial.shape[0]):
        for x in range(dW.shape[0]):
            dW_x = dW[x]
            partial_x = partial[p, first + x]
            for k in range(dW.shape[1]):
                dW_x[k] += partial_x[k]


@kernel
def _accumulate_tn(dW, db, A, dY, scratch):
    # dW (X, K) += A.T @ dY;  db (K) += column sums of dY
    # A (N, X), dY (N, K); scratch (>= 2*X*K) workspace
    _weight_grad_tn(dW, A, dY, scratch)
    bias_backward(db, dY)


@kernel
def _is_zero(a):
    # a (B, H): whether every element is 0. Exits at the first non-zero, so a carried state
    # costs a read or two.
    for b in range(a.shape[0]):
        row = a[b]
        for j in range(a.shape[1]):
            if row[j] != 0.0:
                return False
    return True


@kernel
def _accumulate_recurrent(dWh, dbh, hs, dpre, scratch):
    # dWh (H, G) += hs[:T] rows.T @ dpre rows;  dbh (G) += column sums of dpre; neither when
    # dWh has no rows (the caller adds both: stacked_weight_grads)
    # hs (T+1, B, H): the states, hs[t] the previous state of step t; dpre (T, B, G)
    # A zero initial state's rows add nothing to dWh, so the product starts after them.
    if dWh.shape[0] == 0:
        return
    T = dpre.shape[0]
    start = 1 if _is_zero(hs[0]) else 0
    if start < T:
        _weight_grad_tn(dWh, _rows(hs[start:T]), _rows(dpre[start:T]), scratch)
    bias_backward(dbh, _rows(dpre))


@kernel
def _hold_rows(states, t, n, r1):
    # states (T+1, B, H) in/out: rows n:r1 of step t keep their previous state (rows that have
    # ended: their state passes through the step unchanged)
    for b in range(n, r1):
        states[t + 1, b] = states[t, b]


@kernel
def _pass_rows(dpre_t, dh_carry, dhs_t, n, r1):
    # rows n:r1 of a step that held their state: no gradient reaches the step's gates, and the
    # gradient from above flows on to the previous state
    # dpre_t (B, G) out: zeros in those rows; dh_carry (B, H) in/out; dhs_t (B, H) in
    for b in range(n, r1):
        dpre_t[b] = 0.0
        carry_b = dh_carry[b]
        dhs_b = dhs_t[b]
        for j in range(carry_b.shape[0]):
            carry_b[j] += dhs_b[j]


# --------------------------------------------------------------------------- dense and lookup layers


@kernel
def linear_forward(y, x, W, b):
    # y (N, K) out = x @ W + b
    # x (N, D); W (D, K); b (K)
    _product_rows(y, x, W, b)


@kernel
def linear_backward(dx, dW, db, dy, x, W, scratch):
    # dx (N, D) out = dy @ W.T, skipped when dx has no rows (input needs no gradient)
    # dW (D, K) += x.T @ dy;  db (K) += column sums of dy; neither when dW has no rows (the
    #   caller adds both: stacked_weight_grads)
    # dy (N, K); x (N, D); W (D, K); scratch (>= 2*D*K) workspace
    if dW.shape[0] > 0:
        _accumulate_tn(dW, db, x, dy, scratch)
    if dx.shape[0] > 0:
        _product_rows(dx, dy, W.T, W.T[0, :0])


@kernel
def stacked_weight_grads(dWx, dbx, dWh, dbh, x, hs, dpre, scratch, joined):
    # dWx (D, G) += x rows.T @ dpre rows;  dWh (H, G) += hs[:T] rows.T @ dpre rows
    # dbx, dbh (G) += column sums of dpre
    # x (T, B, D): a stacked layer's input; hs (T+1, B, H): its states; dpre (T, B, G): the
    #   gradient of its pre-activations, one for the input and the recurrent products (rnn,
    #   lstm; a GRU's reset gate scales the recurrent part of n apart)
    # scratch (>= 2*(D+H+1)*G), joined (>= T*B*(D+H)) workspaces
    # One (D+H)-row product over [x_t | h_{t-1}] in place of a D-row and an H-row one, the copy
    # included, and the column sums once for both biases, on the product's threads.
    T, B, D = x.shape
    H = hs.shape[2]
    G = dpre.shape[2]
    N = T * B
    X = D + H
    rows = joined[: N * X].reshape((N, X))
    parts = _dense_parts(N, X, G)
    partial = scratch[: parts * X * G].reshape((parts, X, G))
    sums = scratch[parts * X * G : parts * (X + 1) * G].reshape((parts, G))
    _joined_partials_tn(partial, sums, rows, x, hs, _rows(dpre))
    _add_partials(dWx, partial, 0)
    _add_partials(dWh, partial, D)
    for p in range(parts):
        for k in range(G):
            dbx[k] += sums[p, k]
            dbh[k] += sums[p, k]


@parallel_kernel
def _joined_partials_tn(partial, sums, rows, x, hs, dY):
    # partial (P, D+H, K) out: partial[p] = rows[part p].T @ dY[part p], after each part's
    # thread writes its rows (N, D+H) of [x_t | h_{t-1}] (hot in its cache for the product)
    # sums (P, K) out: the column sums of dY[part p]
    # x (T, B, D); hs (T+1, B, H); dY (N, K)
    parts = partial.shape[0]
    B, D = x.shape[1], x.shape[2]
    N = rows.shape[0]
    for p in numba.prange(parts):
        r0 = p * N // parts
        r1 = (p + 1) * N // parts
        for n in range(r0, r1):
            t = n // B
            b = n - t * B
            row = rows[n]
            x_n = x[t, b]
            h_n = hs[t, b]
            for i in range(D):
                row[i] = x_n[i]
            for i in range(h_n.shape[0]):
                row[D + i] = h_n[i]
        np.dot(rows[r0:r1].T, dY[r0:r1], partial[p])
        sums[p] = 0.0
        bias_backward(sums[p], dY[r0:r1])


@kernel
def matmul(y, x, W):
    # y (N, K) out = x (N, D) @ W (D, K): a product without a bias (attention's projections).
    # Every product goes through a kernel: numba's BLAS is scipy's, numpy's is another
    # OpenBLAS with its own threads, and the two pools spinning side by side on two cores made
    # a training step 5-9x slower (measured on the translator).
    _product_rows(y, x, W, W[0, :0])


@kernel
def matmul_backward(dx, dW, dy, x, W, scratch):
    # dx (N, D) out = dy @ W.T;  dW (D, K) += x.T @ dy
    # dy (N, K); x (N, D); W (D, K); scratch (>= 2*D*K) workspace
    _weight_grad_tn(dW, x, dy, scratch)
    _product_rows(dx, dy, W.T, W.T[0, :0])


@kernel
def embed_forward(out, tokens, W):
    # out (N, E) out: row tokens[n] of W; tokens (N) integer ids; W (V, E)
    # With W = Wx of a layer fed one-hot vectors this is the input projection x @ Wx, exactly.
    # Large lookups (a step's gate rows from the input table: 2,500 x 512 at B) copy their rows
    # on two threads (measured 0.13 -> 0.06-0.07 ms there, 4,096 x 4,096 at D 5.1 -> 2.7 ms).
    if out.shape[0] * out.shape[1] >= _PARALLEL_COPY_WORK:
        _embed_halves(out, tokens, W)
    else:
        _embed_rows(out, tokens, W)


@parallel_kernel
def _embed_halves(out, tokens, W):
    # _embed_rows on two halves of the rows, one thread each (zero-based views: see _adam_halves)
    N = tokens.shape[0]
    for half in numba.prange(2):
        a = half * N // 2
        b = (half + 1) * N // 2
        _embed_rows(out[a:b], tokens[a:b], W)


@kernel
def _embed_rows(out, tokens, W):
    # embed_forward's loop
    for n in range(tokens.shape[0]):
        row = W[tokens[n]]
        out_n = out[n]
        for e in range(W.shape[1]):
            out_n[e] = row[e]


@kernel
def embed_backward(dW, dout, tokens):
    # dW (V, E) += dout scattered to the rows tokens[n]
    # dout (N, E); tokens (N)
    for n in range(tokens.shape[0]):
        row = dW[tokens[n]]
        dout_n = dout[n]
        for e in range(dW.shape[1]):
            row[e] += dout_n[e]


# --------------------------------------------------------------------------- recurrences on parts
# A recurrence multiplies by Wh once a step. Each kernel packs Wh once per call into panels
# (microkernel.py) and runs every step's product on them, split between numba's threads in one
# of two ways:
# - By rows, when the batch has _PART_ROWS rows a part or more and Wh is at most
#   _ROWS_MAX_WEIGHT_BYTES: a row's steps depend on that row alone, so each part runs all T
#   steps of its rows (the whole product and cell update of each step) in one parallel
#   region, and the threads never wait for each other. Each part reads all of Wh every step.
#   Measured at B (50 rows, H 128, float32, two threads) against the split by units, a
#   training step: GRU 20.1 -> 17.3 ms, LSTM 24.4 -> 22.2, RNN 7.0 -> 6.1 (alternating
#   processes, median of each one's fastest of 40 steps).
# - By units, for fewer rows (or an H that gives more parts than the rows fill) or a larger
#   Wh: the units are split into parts of whole panels; a part computes its units' gate
#   columns of the product and then those units' cell update, so the end of each step's
#   parallel region is the only synchronisation (every part reads the whole previous state).
#   BPTT splits the same way: a part computes its units' columns of dh_{t-1} = dpre_t @ Wh.T
#   (Wh.T's panels) and then, in the same region, those units' gate gradients of step t-1.
# numba's threads share the parts out in equal runs; the number of parts follows H, not the
# thread count (a part per _PART_UNITS units, two at the least). numba's thread count cannot
# be read in a kernel that numba caches.
# A result never depends on the split or the number of parts (each output is one chain of
# multiply-adds), so the thread governor can change it between steps and resume stays
# bit-exact. A step too small to pay for a parallel region (below _PARALLEL_WORK
# multiply-adds; a region costs a few microseconds) runs whole on the calling thread.

_PARALLEL_WORK = 200_000
# Units a part needs at the least: its gate loop then runs over 128 units or more (four panels
# in float32 with AVX-512, eight with AVX2), and H = 256 gives two parts. Fewer, larger parts
# measured faster on a Zen 3 (AVX2, two threads; a layer's forward and backward over T steps,
# median of 7-9 alternating rounds): at C (T 100, B 50, H 512) GRU 148 ms on 16 parts of 32
# units -> 130 on 8 of 64 -> 124-150 on four runs of rows, LSTM 180 -> 165 -> 162-209, RNN
# 49 -> 49 -> 46; the default model's LSTM (T 128, B 32, H 256) 54 on 8 parts of units -> 41
# on two runs of rows; D (T 64, B 64, H 1024) 687-820 on 32 -> 653-760 on 16, 666-782 on 8.
_PART_UNITS = 128
# Rows a part needs for the split by rows: a tile's rows (microkernel.ROWS is 10 with
# AVX-512), so each part's product still fills its tiles.
_PART_ROWS = 10
# Weights above which the split by rows loses to the split by units: each run of rows reads
# all of Wh every step. Measured (as above) at D, 16 MB of Wh: two runs of rows 897 ms against
# 760 on two parts of units; at C, 3 and 4 MB, rows level or ahead.
_ROWS_MAX_WEIGHT_BYTES = 8 << 20


def packed_weight_size(H, G, dtype):
    """Elements of the recurrences' ``packed`` workspace for a (H, G) recurrent weight."""
    lanes = microkernel.VECTORS * microkernel.VECTOR_BYTES // np.dtype(dtype).itemsize
    return -(-H // lanes) * (G // H) * H * lanes


@kernel
def _part_count(n, K, G, H, like):
    # The parts a recurrence's step product of n rows by a (K, G) weight runs on. One for a
    # product too small to pay for a parallel region and for packing Wh (a batch of one): that
    # one runs as a plain product (np.dot) on the calling thread. Else a part per _PART_UNITS
    # units (whole panels of each gate block), two at least: as parts of the units, or as runs
    # of the rows (_by_rows).
    Q = microkernel.chunks(H, like)
    if n * K * G < _PARALLEL_WORK or Q < 2:
        return 1
    return max(2, Q // max(1, _PART_UNITS // microkernel.panel_width(like)))


@kernel
def _by_rows(n, parts, Wh):
    # whether a recurrence over n rows with the weight Wh runs its ``parts`` as runs of rows
    # (see above)
    return parts > 1 and n >= parts * _PART_ROWS and Wh.size * Wh.itemsize <= _ROWS_MAX_WEIGHT_BYTES


@kernel
def _part_rows(p, parts, B):
    # (r0, r1): the rows of run p of ``parts``
    return p * B // parts, (p + 1) * B // parts


@kernel
def _active_end(n, r0, r1):
    # the end of rows r0:r1 that a step running rows 0:n computes (r0 when none of them)
    return min(max(n, r0), r1)


@kernel
def _part_units(p, parts, H, like):
    # (q0, q1, j0, j1): part p's panels q0:q1 of every gate block and its units j0:j1
    Q = microkernel.chunks(H, like)
    NR = microkernel.panel_width(like)
    q0 = p * Q // parts
    q1 = (p + 1) * Q // parts
    return q0, q1, q0 * NR, min(q1 * NR, H)


@kernel
def _step_product(hw, h_prev, Wh, packed, use_packed, blocks, r0, r1, is_zero, q0, q1, j0, j1):
    # hw (B, G)[r0:r1] = h_prev (B, H)[r0:r1] @ Wh in the columns of units j0:j1 of every gate
    # block: on Wh's panels (packed) when use_packed, else all of it by np.dot. A zero previous
    # state (a sequence's first step from the zero state, a classifier's, a language model's
    # first chunk) has an exactly zero product: skipped.
    H = hw.shape[1] // blocks
    if is_zero:
        for b in range(r0, r1):
            for g in range(blocks):
                hw[b, g * H + j0 : g * H + j1] = 0.0
    elif use_packed:
        microkernel.packed_product(hw[r0:r1], h_prev[r0:r1], packed, blocks, q0, q1, False)
    elif r1 > r0:
        np.dot(h_prev[r0:r1], Wh, hw[r0:r1])


@kernel
def _add_preactivations(pre, h_prev, Wh, bh, hw, packed, use_packed, blocks, r0, r1, is_zero, q0, q1, j0, j1):
    # pre (B, blocks*H)[r0:r1] += bh + h_prev (B, H)[r0:r1] @ Wh in the columns of units j0:j1
    # of every gate block (pre holds x_t @ Wx + bx). The gate loop then reads one array where
    # it read three: LLVM checks every pair of arrays a vectorised loop writes and reads for
    # overlap before each row, which cost more than the cell itself at 64 units (measured: an
    # LSTM row of 64 units 3.4 -> 2.3 ns a unit). Wh's panels when use_packed, else all of it
    # by np.dot into hw (B, blocks*H) first.
    H = pre.shape[1] // blocks
    for row in range(r0, r1):
        pre_row = pre[row]
        for g in range(blocks):
            part = pre_row[g * H + j0 : g * H + j1]
            bias = bh[g * H + j0 : g * H + j1]
            for j in range(j1 - j0):
                part[j] += bias[j]
    if is_zero or r1 == r0:
        return
    if use_packed:
        microkernel.packed_product(pre[r0:r1], h_prev[r0:r1], packed, blocks, q0, q1, True)
    else:
        np.dot(h_prev[r0:r1], Wh, hw[r0:r1])
        for row in range(r0, r1):
            pre_row = pre[row]
            hw_row = hw[row]
            for k in range(pre_row.shape[0]):
                pre_row[k] += hw_row[k]


@kernel
def _units3(row, H, j0, j1):
    # row (3H) -> the units j0:j1 of each gate, as zero-based views (see _split3)
    return row[j0:j1], row[H + j0 : H + j1], row[2 * H + j0 : 2 * H + j1]


@kernel
def _units4(row, H, j0, j1):
    # row (4H) -> the units j0:j1 of each gate, as zero-based views (see _split3)
    return row[j0:j1], row[H + j0 : H + j1], row[2 * H + j0 : 2 * H + j1], row[3 * H + j0 : 3 * H + j1]


@kernel
def _carry_part(dh_carry, dpre_t, Wh, packed, use_packed, r0, m, accumulate, q0, q1, scratch):
    # dh_carry (B, H)[r0:m] (+)= dpre_t (B, G)[r0:m] @ Wh.T in the units of panels q0:q1 (Wh.T's
    # panels in packed) when use_packed, else all of it by np.dot (scratch (>= B*H) holds the
    # product that is added). The gradient reaching step t's previous state through the product.
    if m == r0:
        return
    if use_packed:
        microkernel.packed_product(dh_carry[r0:m], dpre_t[r0:m], packed, 1, q0, q1, accumulate)
    elif accumulate:
        H = dh_carry.shape[1]
        product = scratch[: (m - r0) * H].reshape((m - r0, H))
        np.dot(dpre_t[r0:m], Wh.T, product)
        for b in range(m - r0):
            carry_b = dh_carry[r0 + b]
            product_b = product[b]
            for j in range(H):
                carry_b[j] += product_b[j]
    else:
        np.dot(dpre_t[r0:m], Wh.T, dh_carry[r0:m])


# --------------------------------------------------------------------------- vanilla RNN


@kernel
def _rnn_forward_part(hs, xg, Wh, bh, hw, packed, use_packed, t, r0, r1, is_zero, q0, q1, j0, j1):
    # step t of rnn_forward for rows r0:r1 and units j0:j1
    _step_product(hw, hs[t], Wh, packed, use_packed, 1, r0, r1, is_zero, q0, q1, j0, j1)
    b = bh[j0:j1]
    for row in range(r0, r1):
        x = xg[t, row, j0:j1]
        w = hw[row, j0:j1]
        h = hs[t + 1, row, j0:j1]
        for j in range(j1 - j0):
            h[j] = rnn_cell(x[j] + w[j] + b[j])


@kernel
def rnn_forward(hs, xg, active, Wh, bh, hw, packed):
    # hs (T+1, B, H) in/out: hs[0] the initial state in, hs[t+1] = tanh(xg[t] + hs[t] @ Wh + bh)
    # xg (T, B, H) in: x_t @ Wx + bx
    # active (T) in: step t computes rows 0..active[t]-1; the other rows hold their state
    #   (rows that have ended, when the batch is sorted longest first: packed sequences)
    # Wh (H, H); bh (H); hw (B, H), packed (packed_weight_size) workspaces
    T, B, H = xg.shape
    zero_start = _is_zero(hs[0])
    parts = _part_count(B, H, H, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh, 1)
    if _by_rows(B, parts, Wh):
        _rnn_forward_rows(hs, xg, active, Wh, bh, hw, packed, zero_start, parts)
    elif parts == 1:
        _rnn_forward_run(hs, xg, active, Wh, bh, hw, packed, False, zero_start, 0, B)
    else:
        for t in range(T):
            n = active[t]
            _hold_rows(hs, t, n, B)
            _rnn_forward_parts(hs, xg, Wh, bh, hw, packed, t, n, t == 0 and zero_start, parts)


@parallel_kernel
def _rnn_forward_parts(hs, xg, Wh, bh, hw, packed, t, n, is_zero, parts):
    # step t of rnn_forward on ``parts`` parts of the units, numba's threads sharing them
    H = hs.shape[2]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _rnn_forward_part(hs, xg, Wh, bh, hw, packed, True, t, 0, n, is_zero, q0, q1, j0, j1)


@kernel
def _rnn_forward_run(hs, xg, active, Wh, bh, hw, packed, use_packed, zero_start, r0, r1):
    # rnn_forward's T steps for rows r0:r1 on the calling thread: a run of the split by rows,
    # or every row (parts == 1, use_packed False)
    T, _, H = xg.shape
    q0, q1, j0, j1 = _part_units(0, 1, H, Wh)
    for t in range(T):
        n = _active_end(active[t], r0, r1)
        _hold_rows(hs, t, n, r1)
        _rnn_forward_part(
            hs, xg, Wh, bh, hw, packed, use_packed, t, r0, n, t == 0 and zero_start, q0, q1, j0, j1
        )


@parallel_kernel
def _rnn_forward_rows(hs, xg, active, Wh, bh, hw, packed, zero_start, parts):
    # rnn_forward's T steps on ``parts`` runs of the rows, numba's threads sharing them
    B = xg.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _rnn_forward_run(hs, xg, active, Wh, bh, hw, packed, True, zero_start, r0, r1)


@kernel
def _rnn_backward_part(dxg, dh_carry, dhs, hs, Wh, packed, use_packed, scratch, t, r0, n, m, q0, q1, j0, j1):
    # Rows r0.. and units j0:j1: first the carry dh_t (rows < m, those that ran step t+1; m =
    # r0: none) from step t+1's pre-activation gradients, then step t's (rows < n). t = -1
    # with n = r0: step 0's product alone, the gradient of the initial state.
    if t + 1 < dxg.shape[0]:
        _carry_part(dh_carry, dxg[t + 1], Wh, packed, use_packed, r0, m, False, q0, q1, scratch)
    for row in range(r0, n):
        h = hs[t + 1, row, j0:j1]
        dh_above = dhs[t, row, j0:j1]
        carry = dh_carry[row, j0:j1]
        d = dxg[t, row, j0:j1]
        for j in range(j1 - j0):
            d[j] = rnn_cell_backward(h[j], dh_above[j] + carry[j])


@kernel
def rnn_backward(dxg, dh0, dWh, dbh, dhs, dhT, hs, active, initial_grad, Wh, scratch, packed):
    # dxg (T, B, H) out: gradient of the pre-activations (= of xg)
    # dh0 (B, H) out: gradient of the initial state hs[0]; also the running carry dh_{t-1}
    # dWh (H, H), dbh (H) accumulate
    # dhs (T, B, H) in: gradient reaching h_t from above; dhT (B, H) in: from a later chunk
    # hs (T+1, B, H) in: states of the forward; active (T) in: as the forward's
    # initial_grad in: False when the caller discards dh0, which then holds a partial value
    #   (the first step's recurrent product, needed only for it, is skipped)
    # Wh (H, H); scratch (>= H*max(2H, B)), packed (packed_weight_size) workspaces
    T, B, H = dhs.shape
    parts = _part_count(B, H, H, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh.T, 1)
    dh0[:] = dhT
    if _by_rows(B, parts, Wh):
        _rnn_backward_rows(dxg, dh0, dhs, hs, active, initial_grad, Wh, packed, scratch, parts)
    elif parts == 1:
        _rnn_backward_run(dxg, dh0, dhs, hs, active, initial_grad, Wh, packed, False, scratch, 0, B)
    else:
        for t in range(T - 1, -1, -1):
            n = active[t]
            m = active[t + 1] if t + 1 < T else 0
            _pass_rows(dxg[t], dh0, dhs[t], n, B)
            _rnn_backward_parts(dxg, dh0, dhs, hs, Wh, packed, scratch, t, n, m, parts)
        if initial_grad:
            # step 0's product alone: a step -1 with no rows of its own
            _rnn_backward_parts(dxg, dh0, dhs, hs, Wh, packed, scratch, -1, 0, active[0], parts)
    _accumulate_recurrent(dWh, dbh, hs, dxg, scratch)


@parallel_kernel
def _rnn_backward_parts(dxg, dh_carry, dhs, hs, Wh, packed, scratch, t, n, m, parts):
    # step t of rnn_backward on ``parts`` parts of the units, numba's threads sharing them
    H = dh_carry.shape[1]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _rnn_backward_part(dxg, dh_carry, dhs, hs, Wh, packed, True, scratch, t, 0, n, m, q0, q1, j0, j1)


@kernel
def _rnn_backward_run(dxg, dh_carry, dhs, hs, active, initial_grad, Wh, packed, use_packed, scratch, r0, r1):
    # rnn_backward's T steps (and step 0's product when initial_grad) for rows r0:r1 on the
    # calling thread: a run of the split by rows, or every row (parts == 1, use_packed False)
    T, _, H = dhs.shape
    q0, q1, j0, j1 = _part_units(0, 1, H, Wh)
    for t in range(T - 1, -1, -1):
        n = _active_end(active[t], r0, r1)
        m = _active_end(active[t + 1], r0, r1) if t + 1 < T else r0
        _pass_rows(dxg[t], dh_carry, dhs[t], n, r1)
        _rnn_backward_part(
            dxg, dh_carry, dhs, hs, Wh, packed, use_packed, scratch, t, r0, n, m, q0, q1, j0, j1
        )
    if initial_grad:
        # step 0's product alone: a step -1 with no rows of its own
        m = _active_end(active[0], r0, r1)
        _rnn_backward_part(
            dxg, dh_carry, dhs, hs, Wh, packed, use_packed, scratch, -1, r0, r0, m, q0, q1, j0, j1
        )


@parallel_kernel
def _rnn_backward_rows(dxg, dh_carry, dhs, hs, active, initial_grad, Wh, packed, scratch, parts):
    # rnn_backward's runs of the rows, numba's threads sharing them
    B = dhs.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _rnn_backward_run(dxg, dh_carry, dhs, hs, active, initial_grad, Wh, packed, True, scratch, r0, r1)


# --------------------------------------------------------------------------- LSTM


@kernel
def _lstm_forward_part(hs, cs, gates, Wh, bh, hw, packed, use_packed, t, r0, r1, is_zero, q0, q1, j0, j1):
    # step t of lstm_forward for rows r0:r1 and units j0:j1: their pre-activations are summed
    # in gates[t] first, so the gate loop reads one array for them (see _add_preactivations)
    H = hs.shape[2]
    _add_preactivations(gates[t], hs[t], Wh, bh, hw, packed, use_packed, 4, r0, r1, is_zero, q0, q1, j0, j1)
    for row in range(r0, r1):
        a_i, a_f, a_g, a_o = _units4(gates[t, row], H, j0, j1)
        _lstm_cell_rows(a_i, a_f, a_g, a_o, cs[t, row, j0:j1], cs[t + 1, row, j0:j1], hs[t + 1, row, j0:j1])


@kernel
def _lstm_cell_rows(a_i, a_f, a_g, a_o, c_prev, c_next, h_next):
    # lstm_cell over one row's units: a_* (n) in, the pre-activations; out, the activated
    # gates; c_prev (n) in; c_next, h_next (n) out. A loop a gate, then one for c and h: each
    # unit's cell is a long chain of dependent multiply-adds (five activations, the last on
    # c), and a loop of short chains lets the CPU overlap the units (B's rows of 128 units,
    # one thread: 3.3-4.3 -> 2.6-3.8 ns a unit). The same arithmetic as lstm_cell, the same bits.
    for j in range(a_i.shape[0]):
        a_i[j] = activations.sigmoid(a_i[j])
    for j in range(a_f.shape[0]):
        a_f[j] = activations.sigmoid(a_f[j])
    for j in range(a_g.shape[0]):
        a_g[j] = activations.tanh(a_g[j])
    for j in range(a_o.shape[0]):
        a_o[j] = activations.sigmoid(a_o[j])
    for j in range(c_next.shape[0]):
        c = a_f[j] * c_prev[j] + a_i[j] * a_g[j]
        c_next[j] = c
        h_next[j] = a_o[j] * activations.tanh(c)


@kernel
def lstm_forward(hs, cs, gates, active, Wh, bh, hw, packed):
    # hs, cs (T+1, B, H) in/out: row 0 the initial hidden and cell state in, row t+1 step t out
    # gates (T, B, 4H) in/out: in, x_t @ Wx + bx; out, the activated gates i, f, g, o, which
    #   backward needs (it recomputes tanh(c) instead of caching it); rows that hold keep x_t @ Wx + bx
    # active (T) in: as rnn_forward's (held rows keep h and c)
    # Wh (H, 4H); bh (4H); hw (B, 4H), packed (packed_weight_size) workspaces
    T, B, G = gates.shape
    H = G // 4
    zero_start = _is_zero(hs[0])
    parts = _part_count(B, H, G, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh, 4)
    if _by_rows(B, parts, Wh):
        _lstm_forward_rows(hs, cs, gates, active, Wh, bh, hw, packed, zero_start, parts)
    elif parts == 1:
        _lstm_forward_run(hs, cs, gates, active, Wh, bh, hw, packed, False, zero_start, 0, B)
    else:
        for t in range(T):
            n = active[t]
            _hold_rows(hs, t, n, B)
            _hold_rows(cs, t, n, B)
            _lstm_forward_parts(hs, cs, gates, Wh, bh, hw, packed, t, n, t == 0 and zero_start, parts)


@parallel_kernel
def _lstm_forward_parts(hs, cs, gates, Wh, bh, hw, packed, t, n, is_zero, parts):
    # step t of lstm_forward on ``parts`` parts of the units, numba's threads sharing them
    H = hs.shape[2]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _lstm_forward_part(hs, cs, gates, Wh, bh, hw, packed, True, t, 0, n, is_zero, q0, q1, j0, j1)


@kernel
def _lstm_forward_run(hs, cs, gates, active, Wh, bh, hw, packed, use_packed, zero_start, r0, r1):
    # lstm_forward's T steps for rows r0:r1 on the calling thread: a run of the split by rows,
    # or every row (parts == 1, use_packed False)
    T = gates.shape[0]
    q0, q1, j0, j1 = _part_units(0, 1, hs.shape[2], Wh)
    for t in range(T):
        n = _active_end(active[t], r0, r1)
        _hold_rows(hs, t, n, r1)
        _hold_rows(cs, t, n, r1)
        is_zero = t == 0 and zero_start
        _lstm_forward_part(hs, cs, gates, Wh, bh, hw, packed, use_packed, t, r0, n, is_zero, q0, q1, j0, j1)


@parallel_kernel
def _lstm_forward_rows(hs, cs, gates, active, Wh, bh, hw, packed, zero_start, parts):
    # lstm_forward's T steps on ``parts`` runs of the rows, numba's threads sharing them
    B = gates.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _lstm_forward_run(hs, cs, gates, active, Wh, bh, hw, packed, True, zero_start, r0, r1)


@kernel
def _lstm_backward_part(
    dgates, dh_carry, dc_carry, dhs, cs, gates, Wh, packed, use_packed, scratch, t, r0, n, m, q0, q1, j0, j1
):
    # Rows r0.. and units j0:j1: the carry dh_t from step t+1 (rows < m), then step t's
    # gradients (rows < n); t = -1, n = r0: step 0's product alone (see _rnn_backward_part)
    H = dh_carry.shape[1]
    if t + 1 < dgates.shape[0]:
        _carry_part(dh_carry, dgates[t + 1], Wh, packed, use_packed, r0, m, False, q0, q1, scratch)
    for row in range(r0, n):
        a_i, a_f, a_g, a_o = _units4(gates[t, row], H, j0, j1)
        d_i, d_f, d_g, d_o = _units4(dgates[t, row], H, j0, j1)
        c_prev = cs[t, row, j0:j1]
        c_t = cs[t + 1, row, j0:j1]
        dh_above = dhs[t, row, j0:j1]
        dh = dh_carry[row, j0:j1]
        dc = dc_carry[row, j0:j1]
        for j in range(j1 - j0):
            da_i, da_f, da_g, da_o, dc_prev = lstm_cell_backward(
                a_i[j], a_f[j], a_g[j], a_o[j], c_prev[j], c_t[j], dh_above[j] + dh[j], dc[j]
            )
            d_i[j] = da_i
            d_f[j] = da_f
            d_g[j] = da_g
            d_o[j] = da_o
            dc[j] = dc_prev


@kernel
def lstm_backward(
    dgates, dh0, dc0, dWh, dbh, dhs, dhT, dcT, hs, cs, gates, active, initial_grad, Wh, scratch, packed
):
    # dgates (T, B, 4H) out: gradient of the pre-activations (= of xg)
    # dh0, dc0 (B, H) out: gradients of the initial states; also the running carries
    # dWh (H, 4H), dbh (4H) accumulate
    # dhs (T, B, H) in: gradient reaching h_t from above; dhT, dcT (B, H) in: from a later chunk
    # hs, cs (T+1, B, H), gates (T, B, 4H) in: the forward's states and activated gates
    # active (T) in: as the forward's (held rows pass dh and dc on)
    # initial_grad in: False when the caller discards dh0 and dc0 (see rnn_backward)
    # Wh (H, 4H); scratch (>= H*max(8H, B)), packed (packed_weight_size) workspaces
    T, B, G = gates.shape
    H = G // 4
    parts = _part_count(B, G, H, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh.T, 1)
    dh0[:] = dhT
    dc0[:] = dcT
    if _by_rows(B, parts, Wh):
        _lstm_backward_rows(
            dgates, dh0, dc0, dhs, cs, gates, active, initial_grad, Wh, packed, scratch, parts
        )
    elif parts == 1:
        _lstm_backward_run(
            dgates, dh0, dc0, dhs, cs, gates, active, initial_grad, Wh, packed, False, scratch, 0, B
        )
    else:
        for t in range(T - 1, -1, -1):
            n = active[t]
            m = active[t + 1] if t + 1 < T else 0
            _pass_rows(dgates[t], dh0, dhs[t], n, B)
            _lstm_backward_parts(dgates, dh0, dc0, dhs, cs, gates, Wh, packed, scratch, t, n, m, parts)
        if initial_grad:
            # step 0's product alone: a step -1 with no rows of its own
            _lstm_backward_parts(
                dgates, dh0, dc0, dhs, cs, gates, Wh, packed, scratch, -1, 0, active[0], parts
            )
    _accumulate_recurrent(dWh, dbh, hs, dgates, scratch)


@parallel_kernel
def _lstm_backward_parts(dgates, dh_carry, dc_carry, dhs, cs, gates, Wh, packed, scratch, t, n, m, parts):
    # step t of lstm_backward on ``parts`` parts of the units, numba's threads sharing them
    H = dh_carry.shape[1]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _lstm_backward_part(
            dgates, dh_carry, dc_carry, dhs, cs, gates, Wh, packed, True, scratch, t, 0, n, m, q0, q1, j0, j1
        )


@kernel
def _lstm_backward_run(
    dgates, dh_carry, dc_carry, dhs, cs, gates, active, initial_grad, Wh, packed, use_packed, scratch, r0, r1
):
    # lstm_backward's T steps (and step 0's product when initial_grad) for rows r0:r1 on the
    # calling thread: a run of the split by rows, or every row (parts == 1, use_packed False)
    T = gates.shape[0]
    q0, q1, j0, j1 = _part_units(0, 1, dh_carry.shape[1], Wh)
    args = (dgates, dh_carry, dc_carry, dhs, cs, gates, Wh, packed, use_packed, scratch)
    for t in range(T - 1, -1, -1):
        n = _active_end(active[t], r0, r1)
        m = _active_end(active[t + 1], r0, r1) if t + 1 < T else r0
        _pass_rows(dgates[t], dh_carry, dhs[t], n, r1)
        _lstm_backward_part(*args, t, r0, n, m, q0, q1, j0, j1)
    if initial_grad:
        m = _active_end(active[0], r0, r1)
        _lstm_backward_part(*args, -1, r0, r0, m, q0, q1, j0, j1)


@parallel_kernel
def _lstm_backward_rows(
    dgates, dh_carry, dc_carry, dhs, cs, gates, active, initial_grad, Wh, packed, scratch, parts
):
    # lstm_backward's runs of the rows, numba's threads sharing them
    B = gates.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _lstm_backward_run(
            dgates,
            dh_carry,
            dc_carry,
            dhs,
            cs,
            gates,
            active,
            initial_grad,
            Wh,
            packed,
            True,
            scratch,
            r0,
            r1,
        )


# --------------------------------------------------------------------------- GRU


@kernel
def _gru_forward_part(hs, gates, hn, Wh, bh, hw, packed, use_packed, t, r0, r1, is_zero, q0, q1, j0, j1):
    # step t of gru_forward for rows r0:r1 and units j0:j1
    H = hs.shape[2]
    _step_product(hw, hs[t], Wh, packed, use_packed, 3, r0, r1, is_zero, q0, q1, j0, j1)
    b_r, b_z, b_n = _units3(bh, H, j0, j1)
    for row in range(r0, r1):
        a_r, a_z, a_n = _units3(gates[t, row], H, j0, j1)
        w_r, w_z, w_n = _units3(hw[row], H, j0, j1)
        h_prev = hs[t, row, j0:j1]
        h_next = hs[t + 1, row, j0:j1]
        hn_row = hn[t, row, j0:j1]
        for j in range(j1 - j0):
            h_n = w_n[j] + b_n[j]
            r, z, n_j, h = gru_cell(a_r[j], a_z[j], a_n[j], w_r[j] + b_r[j], w_z[j] + b_z[j], h_n, h_prev[j])
            a_r[j] = r
            a_z[j] = z
            a_n[j] = n_j
            hn_row[j] = h_n
            h_next[j] = h


@kernel
def gru_forward(hs, gates, hn, active, Wh, bh, hw, packed):
    # hs (T+1, B, H) in/out: hs[0] the initial state in, hs[t+1] = h_t out
    # gates (T, B, 3H) in/out: in, x_t @ Wx + bx; out, the activated gates r, z, n
    # hn (T, B, H) out: h_{t-1} @ Wh_n + bh_n, the part the reset gate scales (backward needs it)
    # active (T) in: as rnn_forward's (held rows keep their state; their gates and hn are not
    #   written)
    # Wh (H, 3H); bh (3H); hw (B, 3H), packed (packed_weight_size) workspaces
    T, B, G = gates.shape
    H = G // 3
    zero_start = _is_zero(hs[0])
    parts = _part_count(B, H, G, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh, 3)
    if _by_rows(B, parts, Wh):
        _gru_forward_rows(hs, gates, hn, active, Wh, bh, hw, packed, zero_start, parts)
    elif parts == 1:
        _gru_forward_run(hs, gates, hn, active, Wh, bh, hw, packed, False, zero_start, 0, B)
    else:
        for t in range(T):
            n = active[t]
            _hold_rows(hs, t, n, B)
            _gru_forward_parts(hs, gates, hn, Wh, bh, hw, packed, t, n, t == 0 and zero_start, parts)


@parallel_kernel
def _gru_forward_parts(hs, gates, hn, Wh, bh, hw, packed, t, n, is_zero, parts):
    # step t of gru_forward on ``parts`` parts of the units, numba's threads sharing them
    H = hs.shape[2]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _gru_forward_part(hs, gates, hn, Wh, bh, hw, packed, True, t, 0, n, is_zero, q0, q1, j0, j1)


@kernel
def _gru_forward_run(hs, gates, hn, active, Wh, bh, hw, packed, use_packed, zero_start, r0, r1):
    # gru_forward's T steps for rows r0:r1 on the calling thread: a run of the split by rows,
    # or every row (parts == 1, use_packed False)
    T = gates.shape[0]
    q0, q1, j0, j1 = _part_units(0, 1, hs.shape[2], Wh)
    for t in range(T):
        n = _active_end(active[t], r0, r1)
        _hold_rows(hs, t, n, r1)
        is_zero = t == 0 and zero_start
        _gru_forward_part(hs, gates, hn, Wh, bh, hw, packed, use_packed, t, r0, n, is_zero, q0, q1, j0, j1)


@parallel_kernel
def _gru_forward_rows(hs, gates, hn, active, Wh, bh, hw, packed, zero_start, parts):
    # gru_forward's T steps on ``parts`` runs of the rows, numba's threads sharing them
    B = gates.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _gru_forward_run(hs, gates, hn, active, Wh, bh, hw, packed, True, zero_start, r0, r1)


@kernel
def _gru_backward_part(
    dxg, dh_carry, dhs, hs, gates, hn, dhg, Wh, packed, use_packed, scratch, t, r0, n, m, q0, q1, j0, j1
):
    # Rows r0.. and units j0:j1: the carry dh_t from step t+1 (rows < m; added to the direct
    # path the gate loop left there), then step t's gradients (rows < n); t = -1, n = r0:
    # step 0's product alone (see _rnn_backward_part)
    H = dh_carry.shape[1]
    if t + 1 < dxg.shape[0]:
        _carry_part(dh_carry, dhg[t + 1], Wh, packed, use_packed, r0, m, True, q0, q1, scratch)
    for row in range(r0, n):
        a_r, a_z, a_n = _units3(gates[t, row], H, j0, j1)
        dx_r, dx_z, dx_n = _units3(dxg[t, row], H, j0, j1)
        dh_r, dh_z, dh_nn = _units3(dhg[t, row], H, j0, j1)
        h_prev = hs[t, row, j0:j1]
        hn_row = hn[t, row, j0:j1]
        dh_above = dhs[t, row, j0:j1]
        carry = dh_carry[row, j0:j1]
        for j in range(j1 - j0):
            da_r, da_z, da_n, dh_n, dh_prev = gru_cell_backward(
                a_r[j], a_z[j], a_n[j], hn_row[j], h_prev[j], dh_above[j] + carry[j]
            )
            dx_r[j] = da_r
            dx_z[j] = da_z
            dx_n[j] = da_n
            dh_r[j] = da_r
            dh_z[j] = da_z
            dh_nn[j] = dh_n
            carry[j] = dh_prev


@kernel
def gru_backward(dxg, dh0, dWh, dbh, dhs, dhT, hs, gates, hn, active, initial_grad, Wh, dhg, scratch, packed):
    # dxg (T, B, 3H) out: gradient of xg (input part of the pre-activations)
    # dh0 (B, H) out: gradient of the initial state; also the running carry
    # dWh (H, 3H), dbh (3H) accumulate
    # dhs (T, B, H) in: gradient reaching h_t from above; dhT (B, H) in: from a later chunk
    # hs (T+1, B, H), gates (T, B, 3H), hn (T, B, H) in: the forward's states and caches
    # active (T) in: as the forward's (held rows pass dh on)
    # initial_grad in: False when the caller discards dh0 (see rnn_backward)
    # Wh (H, 3H)
    # dhg (T, B, 3H) workspace: gradient of h_{t-1} @ Wh + bh (differs from dxg in the n part)
    # scratch (>= H*max(6H, B)), packed (packed_weight_size) workspaces
    T, B, G = gates.shape
    H = G // 3
    parts = _part_count(B, G, H, H, Wh)
    if parts > 1:
        microkernel.pack(packed, Wh.T, 1)
    dh0[:] = dhT
    if _by_rows(B, parts, Wh):
        _gru_backward_rows(
            dxg, dh0, dhs, hs, gates, hn, dhg, active, initial_grad, Wh, packed, scratch, parts
        )
    elif parts == 1:
        _gru_backward_run(
            dxg, dh0, dhs, hs, gates, hn, dhg, active, initial_grad, Wh, packed, False, scratch, 0, B
        )
    else:
        for t in range(T - 1, -1, -1):
            n = active[t]
            m = active[t + 1] if t + 1 < T else 0
            _pass_rows(dxg[t], dh0, dhs[t], n, B)
            dhg[t, n:] = 0.0
            _gru_backward_parts(dxg, dh0, dhs, hs, gates, hn, dhg, Wh, packed, scratch, t, n, m, parts)
        if initial_grad:
            # The GRU's previous state also has a direct path (already in dh0): add to it.
            _gru_backward_parts(
                dxg, dh0, dhs, hs, gates, hn, dhg, Wh, packed, scratch, -1, 0, active[0], parts
            )
    _accumulate_recurrent(dWh, dbh, hs, dhg, scratch)


@parallel_kernel
def _gru_backward_parts(dxg, dh_carry, dhs, hs, gates, hn, dhg, Wh, packed, scratch, t, n, m, parts):
    # step t of gru_backward on ``parts`` parts of the units, numba's threads sharing them
    H = dh_carry.shape[1]
    for p in numba.prange(parts):
        q0, q1, j0, j1 = _part_units(p, parts, H, Wh)
        _gru_backward_part(
            dxg, dh_carry, dhs, hs, gates, hn, dhg, Wh, packed, True, scratch, t, 0, n, m, q0, q1, j0, j1
        )


@kernel
def _gru_backward_run(
    dxg, dh_carry, dhs, hs, gates, hn, dhg, active, initial_grad, Wh, packed, use_packed, scratch, r0, r1
):
    # gru_backward's T steps (and step 0's product when initial_grad, added to the direct path
    # already in dh_carry) for rows r0:r1 on the calling thread: a run of the split by rows,
    # or every row (parts == 1, use_packed False)
    T = gates.shape[0]
    q0, q1, j0, j1 = _part_units(0, 1, dh_carry.shape[1], Wh)
    args = (dxg, dh_carry, dhs, hs, gates, hn, dhg, Wh, packed, use_packed, scratch)
    for t in range(T - 1, -1, -1):
        n = _active_end(active[t], r0, r1)
        m = _active_end(active[t + 1], r0, r1) if t + 1 < T else r0
        _pass_rows(dxg[t], dh_carry, dhs[t], n, r1)
        dhg[t, n:r1] = 0.0
        _gru_backward_part(*args, t, r0, n, m, q0, q1, j0, j1)
    if initial_grad:
        m = _active_end(active[0], r0, r1)
        _gru_backward_part(*args, -1, r0, r0, m, q0, q1, j0, j1)


@parallel_kernel
def _gru_backward_rows(
    dxg, dh_carry, dhs, hs, gates, hn, dhg, active, initial_grad, Wh, packed, scratch, parts
):
    # gru_backward's runs of the rows, numba's threads sharing them
    B = gates.shape[1]
    for p in numba.prange(parts):
        r0, r1 = _part_rows(p, parts, B)
        _gru_backward_run(
            dxg, dh_carry, dhs, hs, gates, hn, dhg, active, initial_grad, Wh, packed, True, scratch, r0, r1
        )


# --------------------------------------------------------------------------- attention
# Batch-major (B, T, S): for each row, T decoder steps (queries) attend over S source
# positions (keys, values), of which the first lengths[b] are real. Dot-product scores and the
# context are one GEMM per row over all of its steps (no step loop: teacher forcing needs no
# step's context before the next). Padded positions get weight 0 (masked out of the softmax).


@reduction_kernel  # the T 1 loop's dot products vectorise
def attention_scores(scores, queries, keys, group):
    # scores (B, T, S) out = queries[b] @ keys[b // group].T: dot-product ("dot", and
    #   "general" with keys already multiplied by its matrix)
    # queries (B, T, A); keys (B / group, S, A): group consecutive query rows share a source
    #   (a beam's hypotheses; 1 in training)
    B, T, S = scores.shape
    if T == 1:  # step decoding: a BLAS call per row would cost more than its arithmetic
        A = queries.shape[2]
        for b in range(B):
            query = queries[b, 0]
            source = keys[b // group]
            for i in range(S):
                key = source[i]
                total = query[0] * key[0]  # in the arrays' type (a 0.0 literal is float64)
                for a in range(1, A):
                    total += query[a] * key[a]
                scores[b, 0, i] = total
        return
    for b in range(B):
        np.dot(queries[b], keys[b // group].T, scores[b])


@kernel
def attention_scores_backward(dqueries, dkeys, dscores, queries, keys):
    # dqueries (B, T, A) out = dscores[b] @ keys[b];  dkeys (B, S, A) out = dscores[b].T @ queries[b]
    # dscores (B, T, S); queries (B, T, A); keys (B, S, A)
    for b in range(dscores.shape[0]):
        np.dot(dscores[b], keys[b], dqueries[b])
        np.dot(dscores[b].T, queries[b], dkeys[b])


@kernel
def additive_scores(scores, queries, keys, v, group):
    # scores (B, T, S) out: v . tanh(queries[b, t] + keys[b // group, i]) (Bahdanau's, with
    #   the two projections already applied); queries (B, T, A); keys (B / group, S, A) (see
    #   attention_scores); v (A)
    B, T, S = scores.shape
    A = v.shape[0]
    for b in range(B):
        for t in range(T):
            q = queries[b, t]
            for i in range(S):
                k = keys[b // group, i]
                total = 0.0
                for a in range(A):
                    total += v[a] * activations.tanh(q[a] + k[a])
                scores[b, t, i] = total


@kernel
def additive_scores_backward(dqueries, dkeys, dv, dscores, queries, keys, v):
    # dqueries (B, T, A), dkeys (B, S, A) out; dv (A) accumulates
    # dscores (B, T, S); queries, keys, v as additive_scores (tanh recomputed, not stored:
    #   it would be B*T*S*A values)
    B, T, S = dscores.shape
    A = v.shape[0]
    dqueries[...] = 0.0
    dkeys[...] = 0.0
    for b in range(B):
        for t in range(T):
            q = queries[b, t]
            dq = dqueries[b, t]
            for i in range(S):
                ds = dscores[b, t, i]
                if ds == 0.0:
                    continue  # a masked position
                k = keys[b, i]
                dk = dkeys[b, i]
                for a in range(A):
                    th = activations.tanh(q[a] + k[a])
                    g = ds * v[a] * (activations.one_like(th) - th * th)
                    dq[a] += g
                    dk[a] += g
                    dv[a] += ds * th


@kernel
def attention_softmax(weights, lengths):
    # weights (B, T, S) in/out: scores in; out, their softmax over each row's first lengths[b]
    #   positions, 0 past them (padding never receives attention)
    # lengths (B) in 1..S
    B, T, S = weights.shape
    for b in range(B):
        n = lengths[b]
        for t in range(T):
            row = weights[b, t]
            peak = row[0]
            for i in range(1, n):
                peak = max(peak, row[i])
            for i in range(n):
                row[i] = activations.exp(row[i] - peak)
            total = 0.0
            for i in range(n):
                total += row[i]
            inv = 1.0 / total
            for i in range(n):
                row[i] *= inv
            for i in range(n, S):
                row[i] = 0.0


@kernel
def attention_context(context, weights, values, group):
    # context (B, T, D) out = weights[b] @ values[b // group]; weights (B, T, S); values
    #   (B / group, S, D) (see attention_scores)
    B, T, S = weights.shape
    if T == 1:  # step decoding (as attention_scores)
        for b in range(B):
            out = context[b, 0]
            out[:] = 0.0
            source = values[b // group]
            for i in range(S):
                weight = weights[b, 0, i]
                if weight != 0.0:  # padding
                    value = source[i]
                    for d in range(out.shape[0]):
                        out[d] += weight * value[d]
        return
    for b in range(B):
        np.dot(weights[b], values[b // group], context[b])


@kernel
def attention_context_backward(dscores, dvalues, dcontext, weights, values):
    # dscores (B, T, S) out: gradient of the scores, through the context and the softmax
    # dvalues (B, S, D) out = weights[b].T @ dcontext[b]
    # dcontext (B, T, D); weights (B, T, S) (0 at masked positions, whose dscores are then 0);
    # values (B, S, D)
    B, T, S = weights.shape
    for b in range(B):
        np.dot(weights[b].T, dcontext[b], dvalues[b])
        dweights = dscores[b]
        np.dot(dcontext[b], values[b].T, dweights)
        for t in range(T):
            w = weights[b, t]
            dw = dweights[t]
            inner = 0.0
            for i in range(S):
                inner += w[i] * dw[i]
            for i in range(S):
                dw[i] = w[i] * (dw[i] - inner)


# --------------------------------------------------------------------------- beam search


@kernel
def beam_extend(best, new_scores, logits, scores):
    # One step of a beam search over R inputs with K hypotheses each.
    # best (R, K) out: each input's K most probable extensions, best first, as flat ids
    #   h * V + v (hypothesis h followed by character v); ties keep the lower id first
    # new_scores (R, K) out (float64): their log-probabilities; -inf where fewer than K
    #   extensions exist (then best holds 0..K-1 there)
    # logits (R*K, V): the next character's logits of hypothesis h of input r in row r*K + h
    # scores (R, K) (float64): the hypotheses' log-probabilities; -inf: not in the beam
    # Each row's log-softmax is in float64, as (logit - peak) - log(sum exp(logit - peak)).
    R, K = scores.shape
    V = logits.shape[1]
    for r in range(R):
        top = new_scores[r]
        ids = best[r]
        for j in range(K):
            top[j] = -np.inf
            ids[j] = j
        for h in range(K):
            base = scores[r, h]
            if base == -np.inf:
                continue
            row = logits[r * K + h]
            peak = np.float64(row[_argmax(row)])
            total = 0.0
            for v in range(V):
                total += np.exp(np.float64(row[v]) - peak)
            log_total = np.log(total)
            for v in range(V):
                value = base + ((np.float64(row[v]) - peak) - log_total)
                if value > top[K - 1]:
                    j = K - 1
                    while j > 0 and value > top[j - 1]:
                        top[j] = top[j - 1]
                        ids[j] = ids[j - 1]
                        j -= 1
                    top[j] = value
                    ids[j] = h * V + v


# --------------------------------------------------------------------------- loss and gradient norm


@reduction_kernel  # the sum of exponentials vectorises: 0.62 -> 0.20 ms at 2,500 x 65 (float32)
def softmax_xent_forward(losses, logits, targets):
    # losses (N) out: -log softmax(logits[n])[targets[n]]; 0 where targets[n] < 0 (ignored)
    # logits (N, V); targets (N) integer ids
    N, V = logits.shape
    for n in range(N):
        target = targets[n]
        if target < 0:
            losses[n] = 0.0
            continue
        row = logits[n]
        peak = row[0]
        for v in range(1, V):
            peak = max(peak, row[v])
        total = 0.0
        for v in range(V):
            total += activations.exp(row[v] - peak)
        losses[n] = np.log(total) + peak - row[target]


# Elements (rows x vocabulary) from which the fused loss splits its rows in two: a parallel
# region costs about 1.5 us and the loss about 1.9 ns an element (measured on two threads:
# 320 x 65 43 -> 25 us, B's 2,500 x 65 301 -> 173 us).
_PARALLEL_LOSS_WORK = 10_000


@kernel
def softmax_xent_fused(losses, dlogits, logits, targets, scale):
    # Forward and backward in one pass over the logits.
    # losses (N) out: as softmax_xent_forward
    # dlogits (N, V) out: scale * (softmax(logits[n]) - onehot(targets[n])); zero rows where
    #   targets[n] < 0. May be the same array as logits (computed in place).
    # logits (N, V); targets (N); scale: d(total loss)/d(sum of per-row losses), e.g. 1/N
    # The rows are worked in place in dlogits: with two names for one buffer (the callers'
    # way) LLVM's overlap check fails and its loops run scalar (2.4x slower, measured).
    # Large batches split their rows between two threads (each row is its own computation, so
    # the bits do not depend on the split).
    if dlogits.ctypes.data != logits.ctypes.data:
        dlogits[:] = logits
    N, V = dlogits.shape
    if N * V >= _PARALLEL_LOSS_WORK:
        _softmax_xent_row_parts(losses, dlogits, targets, scale)
    else:
        _softmax_xent_in_place(losses, dlogits, targets, scale, 0, N)


@parallel_kernel
def _softmax_xent_row_parts(losses, z, targets, scale):
    # _softmax_xent_in_place on two halves of z's rows, one thread each
    N = z.shape[0]
    for p in numba.prange(2):
        _softmax_xent_in_place(losses, z, targets, scale, p * N // 2, (p + 1) * N // 2)


@kernel
def _softmax_xent_in_place(losses, z, targets, scale, r0, r1):
    # softmax_xent_fused on rows r0:r1 of z (N, V): in, the logits; out, their gradient
    V = z.shape[1]
    for n in range(r0, r1):
        target = targets[n]
        drow = z[n]
        if target < 0:
            losses[n] = 0.0
            for v in range(V):
                drow[v] = 0.0
            continue
        target_logit = drow[target]  # read before the row is overwritten
        peak = drow[0]
        for v in range(1, V):
            peak = max(peak, drow[v])
        # Two loops: the first vectorises (no running sum), the second is the sum.
        for v in range(V):
            drow[v] = activations.exp(drow[v] - peak)
        total = 0.0
        for v in range(V):
            total += drow[v]
        losses[n] = np.log(total) + peak - target_logit
        inv = scale / total
        for v in range(V):
            drow[v] *= inv
        drow[target] -= scale


@reduction_kernel
def global_norm(grads):
    # grads (P) in: the flat gradient buffer; returns its Euclidean norm
    total = 0.0
    for p in range(grads.shape[0]):
        total += grads[p] * grads[p]
    return np.sqrt(total)


@kernel
def clip_global_norm(grads, max_norm):
    # grads (P) in/out: scaled so that their norm is at most max_norm; returns the norm before
    norm = global_norm(grads)
    if norm > max_norm:
        factor = max_norm / (norm + 1e-6)
        for p in range(grads.shape[0]):
            grads[p] *= factor
    return norm


# --------------------------------------------------------------------------- optimizers
# One loop over the flat parameter buffer each, with torch.optim's update rules (no weight
# decay), so a model trained here follows the same trajectory as one trained with torch.
# params, grads and the state buffers are all (P).


# Parameters from which Adam splits its update between two threads: each element is its own
# computation, so the halves give the same bits as one loop; a parallel region costs about
# 1.3 us and the update about 1.2 ns an element (measured on two threads, float32: 10,000
# elements 12 -> 10 us, 270,000 (B's LSTM) 268 -> 169 us, 4.5 million (D) 5.2 -> 2.6 ms).
_PARALLEL_UPDATE_WORK = 10_000


@kernel
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, step):
    # m, v (P) in/out: first and second moment estimates; step: 1 on the first update
    bias1 = 1.0 - beta1**step
    bias2_sqrt = np.sqrt(1.0 - beta2**step)
    step_size = lr / bias1
    if params.shape[0] >= _PARALLEL_UPDATE_WORK:
        _adam_halves(params, grads, m, v, beta1, beta2, eps, step_size, bias2_sqrt)
    else:
        _adam_elements(params, grads, m, v, beta1, beta2, eps, step_size, bias2_sqrt)


@parallel_kernel
def _adam_halves(params, grads, m, v, beta1, beta2, eps, step_size, bias2_sqrt):
    # _adam_elements on two halves of the parameters, one thread each (zero-based views: a
    # loop from a variable start keeps numba's negative-index check and runs 4x slower)
    P = params.shape[0]
    for half in numba.prange(2):
        a = half * P // 2
        b = (half + 1) * P // 2
        _adam_elements(params[a:b], grads[a:b], m[a:b], v[a:b], beta1, beta2, eps, step_size, bias2_sqrt)


@kernel
def _adam_elements(params, grads, m, v, beta1, beta2, eps, step_size, bias2_sqrt):
    # adam_update's loop, its step's bias corrections given
    for p in range(params.shape[0]):
        g = grads[p]
        m[p] = beta1 * m[p] + (1.0 - beta1) * g
        v[p] = beta2 * v[p] + (1.0 - beta2) * g * g
        params[p] -= step_size * m[p] / (np.sqrt(v[p]) / bias2_sqrt + eps)


@kernel
def adagrad_update(params, grads, sum_sq, lr, eps):
    # sum_sq (P) in/out: running sum of squared gradients
    for p in range(params.shape[0]):
        g = grads[p]
        sum_sq[p] += g * g
        params[p] -= lr * g / (np.sqrt(sum_sq[p]) + eps)


@kernel
def rmsprop_update(params, grads, mean_sq, lr, alpha, eps):
    # mean_sq (P) in/out: exponential average of squared gradients
    for p in range(params.shape[0]):
        g = grads[p]
        mean_sq[p] = alpha * mean_sq[p] + (1.0 - alpha) * g * g
        params[p] -= lr * g / (np.sqrt(mean_sq[p]) + eps)


@kernel
def sgd_update(params, grads, velocity, lr, momentum):
    # velocity (P) in/out: momentum buffer (zeros at the start, so its first value is the gradient)
    for p in range(params.shape[0]):
        velocity[p] = momentum * velocity[p] + grads[p]
        params[p] -= lr * velocity[p]


# --------------------------------------------------------------------------- generation (batch 1)
# One character at a time, every layer, the head and the draw inside one compiled loop, so a
# whole chunk of text costs one call and no Python runs between characters.
#
# The state is (L, H) (batch 1, the batch axis dropped). Weights come as tuples with one array
# per layer, which numba types as homogeneous tuples it can index with a loop variable:
#   embed  (V, E), or an empty (0, 0) array when layer 0 reads one-hot vectors
#   Wxs    L arrays (D_l, G): D_0 = E (or V for one-hot), D_l = H above
#   Whs    L arrays (H, G);  bxs, bhs  L arrays (G)
#   Wy (H, K), by (K): the head
# The arithmetic is the training forward's (``Model._forward``): xg = x @ Wx + bx (a row
# lookup of Wx for one-hot input), then the cell kernels' pre-activations xg + h @ Wh + bh.

CELL_CODES = {name: cell.code for name, cell in CELL_TABLE.items()}
_CELL_LSTM = CELL_CODES["lstm"]
_CELL_GRU = CELL_CODES["gru"]


@kernel
def _input_projection(xg, layer, token, h, embed, Wx, bx):
    # xg (1, G) out: the input projection of this step's input to ``layer``
    # token: the step's input id (layer 0); h (L, H): layers below ``layer`` already stepped
    # embed (V, E) or (0, 0) for one-hot; Wx (D, G); bx (G)
    xg_row = xg[0]
    if layer == 0 and embed.shape[0] == 0:
        # One-hot input: x @ Wx is the row of Wx for the token, exactly as embed_forward.
        row = Wx[token]
        for g in range(xg_row.shape[0]):
            xg_row[g] = row[g]
    else:
        x = embed[token : token + 1] if layer == 0 else h[layer - 1 : layer]
        np.dot(x, Wx, xg)
    for g in range(xg_row.shape[0]):
        xg_row[g] += bx[g]


@numba.njit(inline="always", **_DEVICE_JIT)
def _gru_units(h_out, h_in, x_r, x_z, x_n, w_r, w_z, w_n, b_r, b_z, b_n):
    # h_out (n) out: the GRU's new state from h_in (n) and the units' gate views (n each)
    for j in range(h_out.shape[0]):
        _, _, _, h_j = gru_cell(
            x_r[j], x_z[j], x_n[j], w_r[j] + b_r[j], w_z[j] + b_z[j], w_n[j] + b_n[j], h_in[j]
        )
        h_out[j] = h_j


@kernel
def _cell_update(h_new, h_prev, c, xg, hw, bh, cell, j0, j1):
    # Units j0:j1 of one layer's step.
    # h_new (H) out; h_prev (H) in: the previous state (h_new may be h_prev: element j reads
    #   only its own previous value before writing it, so updating in place is safe)
    # c (H) in/out: the cell state (LSTM only); xg (G): x @ Wx + bx; hw (G): h_prev @ Wh;
    # bh (G); cell: a CELL_CODES value
    # The loops run over zero-based views of the units (see _split3), which lets them vectorise.
    H = h_prev.shape[0]
    n = j1 - j0
    h_out = h_new[j0:j1]
    if cell == _CELL_LSTM:
        x_i, x_f, x_g, x_o = _split4(xg, H)
        w_i, w_f, w_g, w_o = _split4(hw, H)
        b_i, b_f, b_g, b_o = _split4(bh, H)
        x_i, x_f, x_g, x_o = x_i[j0:j1], x_f[j0:j1], x_g[j0:j1], x_o[j0:j1]
        w_i, w_f, w_g, w_o = w_i[j0:j1], w_f[j0:j1], w_g[j0:j1], w_o[j0:j1]
        b_i, b_f, b_g, b_o = b_i[j0:j1], b_f[j0:j1], b_g[j0:j1], b_o[j0:j1]
        c_part = c[j0:j1]
        for j in range(n):
            _, _, _, _, c_j, h_j = lstm_cell(
                x_i[j] + w_i[j] + b_i[j],
                x_f[j] + w_f[j] + b_f[j],
                x_g[j] + w_g[j] + b_g[j],
                x_o[j] + w_o[j] + b_o[j],
                c_part[j],
            )
            c_part[j] = c_j
            h_out[j] = h_j
    elif cell == _CELL_GRU:
        x_r, x_z, x_n = _split3(xg, H)
        w_r, w_z, w_n = _split3(hw, H)
        b_r, b_z, b_n = _split3(bh, H)
        x_r, x_z, x_n = x_r[j0:j1], x_z[j0:j1], x_n[j0:j1]
        w_r, w_z, w_n = w_r[j0:j1], w_z[j0:j1], w_n[j0:j1]
        b_r, b_z, b_n = b_r[j0:j1], b_z[j0:j1], b_n[j0:j1]
        if h_new.ctypes.data == h_prev.ctypes.data:
            # In place, one view serves as both: two views of the same memory fail LLVM's
            # overlap check and leave the loop scalar (measured 1.4x slower generation).
            _gru_units(h_out, h_out, x_r, x_z, x_n, w_r, w_z, w_n, b_r, b_z, b_n)
        else:
            _gru_units(h_out, h_prev[j0:j1], x_r, x_z, x_n, w_r, w_z, w_n, b_r, b_z, b_n)
    else:
        x, w, b = xg[j0:j1], hw[j0:j1], bh[j0:j1]
        for j in range(n):
            h_out[j] = rnn_cell(x[j] + w[j] + b[j])


@kernel
def _advance(h, c, token, cell, embed, Wxs, Whs, bxs, bhs, xg, hw):
    # h, c (L, H) in/out: the state before and after reading ``token`` (c unused unless LSTM)
    # token: input id; cell: a CELL_CODES value; embed, Wxs, Whs, bxs, bhs: see section header
    # xg, hw (1, G) workspaces
    for layer in range(h.shape[0]):
        _input_projection(xg, layer, token, h, embed, Wxs[layer], bxs[layer])
        # The recurrent product reads the layer's old state, before _cell_update overwrites it.
        np.dot(h[layer : layer + 1], Whs[layer], hw)
        H = h.shape[1]
        _cell_update(h[layer], h[layer], c[layer], xg[0], hw[0], bhs[layer], cell, 0, H)


@kernel
def _head(logits, h, Wy, by):
    # logits (K) out = h[top] @ Wy + by
    # h (L, H); Wy (H, K); by (K)
    L = h.shape[0]
    linear_forward(logits.reshape((1, logits.shape[0])), h[L - 1 : L], Wy, by)


@kernel
def feed_tokens(logits, h, c, tokens, cell, weights, xg, hw):
    # logits (K) out: the head's output after the last token; untouched when tokens is empty
    # h, c (L, H) in/out: the state, advanced over every token (c unused unless LSTM)
    # tokens (T) integer ids; cell: a CELL_CODES value
    # weights: (embed, Wxs, Whs, bxs, bhs, Wy, by), see the section header
    # xg, hw (1, G) workspaces
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    for t in range(tokens.shape[0]):
        _advance(h, c, tokens[t], cell, embed, Wxs, Whs, bxs, bhs, xg, hw)
    if tokens.shape[0] > 0:
        _head(logits, h, Wy, by)


@kernel
def _argmax(values):
    # values (K); the index of the largest, the lowest index among ties
    best = 0
    for k in range(1, values.shape[0]):
        if values[k] > values[best]:
            best = k
    return best


@kernel
def _softmax_with_temperature(probs, logits, temperature):
    # probs (K) out = softmax(logits / temperature), shifted by the peak so exp cannot overflow
    # logits (K)
    peak = logits[_argmax(logits)]
    for k in range(logits.shape[0]):
        probs[k] = activations.exp((logits[k] - peak) / temperature)
    total = 0.0  # summed apart from the exps, so that their loop vectorises
    for k in range(probs.shape[0]):
        total += probs[k]
    for k in range(probs.shape[0]):
        probs[k] /= total


@kernel
def _kept_count(ranked, top_k, top_p):
    # ranked (K): the probabilities sorted in decreasing order. Returns how many of the most
    # probable tokens survive top-k (0 = off), then top-p on what top-k left (1.0 = off), as
    # Hugging Face's samplers chain them: the fewest whose sum reaches top_p of the total,
    # always at least one.
    K = ranked.shape[0]
    kept = top_k if 0 < top_k < K else K
    if top_p < 1.0:
        total = 0.0
        for r in range(kept):
            total += ranked[r]
        cumulative = 0.0
        for r in range(kept):
            cumulative += ranked[r]
            if cumulative >= top_p * total:
                return r + 1
    return kept


@kernel
def _filter_top(probs, ranked, top_k, top_p):
    # probs (K) in/out: zeroed outside the kept set (top-k, then top-p)
    # ranked (K) workspace
    # Which tokens are kept depends only on the sorted values: all above the threshold (the
    # smallest kept probability), then those equal to it in index order until the count is
    # reached, so ties are settled towards the lowest index, as in argmax.
    ranked[:] = probs
    ranked.sort()  # in place, increasing
    ranked_down = ranked[::-1]
    kept = _kept_count(ranked_down, top_k, top_p)
    threshold = ranked_down[kept - 1]
    ties_left = 0
    for r in range(kept):
        if ranked_down[r] == threshold:
            ties_left += 1
    for k in range(probs.shape[0]):
        if probs[k] > threshold:
            continue
        if probs[k] == threshold and ties_left > 0:
            ties_left -= 1
            continue
        probs[k] = 0.0


@kernel
def _inverse_cdf(probs, u):
    # probs (K): non-negative weights, at least one positive (need not sum to 1)
    # u in [0, 1); returns the first index whose cumulative weight exceeds u * total
    total = 0.0
    for k in range(probs.shape[0]):
        total += probs[k]
    target = u * total
    cumulative = 0.0
    last = 0
    for k in range(probs.shape[0]):
        if probs[k] > 0.0:
            cumulative += probs[k]
            last = k
            if cumulative > target:
                return k
    return last  # u * total rounded up to the whole sum: the last token that has weight


@kernel
def draw_token(logits, probs, ranked, u, temperature, top_k, top_p, greedy):
    # Returns the drawn token id.
    # logits (K) in; probs (K) out: the distribution drawn from (zeros where filtered out);
    #   left unwritten when greedy
    # u: a uniform in [0, 1) that picks the token by inverse CDF over the kept tokens in index
    #   order; temperature > 0; top_k: 0 = off; top_p in (0, 1]: 1.0 = off
    # greedy: argmax (lowest index among ties), ignoring the other settings and u
    # ranked (K) workspace (sorting)
    if greedy:
        return _argmax(logits)
    _softmax_with_temperature(probs, logits, temperature)
    if 0 < top_k < logits.shape[0] or top_p < 1.0:
        _filter_top(probs, ranked, top_k, top_p)
    return _inverse_cdf(probs, u)


@kernel
def generate_tokens(
    out,
    logits,
    h,
    c,
    token,
    uniforms,
    temperature,
    top_k,
    top_p,
    greedy,
    cell,
    weights,
    xg,
    hw,
    probs,
    ranked,
):
    # out (N) out: the drawn ids; each is fed back as the next step's input
    # logits (K) out: the last step's logits
    # h, c (L, H) in/out: the state; on return it has read ``token`` and out[:N-1] but not
    #   out[N-1], so the next call continues with token = out[N-1]
    # token: the first step's input id; uniforms (N) in [0, 1): one per drawn token
    # temperature, top_k, top_p, greedy: see draw_token; cell: a CELL_CODES value
    # weights: (embed, Wxs, Whs, bxs, bhs, Wy, by), see the section header
    # xg, hw (1, G), probs, ranked (K) workspaces
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    for n in range(out.shape[0]):
        _advance(h, c, token, cell, embed, Wxs, Whs, bxs, bhs, xg, hw)
        _head(logits, h, Wy, by)
        token = draw_token(logits, probs, ranked, uniforms[n], temperature, top_k, top_p, greedy)
        out[n] = token


@kernel
def generate_until(
    out,
    lengths,
    logits,
    h,
    c,
    h0,
    c0,
    token,
    uniforms,
    temperature,
    top_k,
    top_p,
    greedy,
    stop,
    cell,
    weights,
    xg,
    hw,
    probs,
    ranked,
):
    # S sequences from one starting point, each ending at the ``stop`` token or after M draws
    # (conditional generation: a name ends by itself). generate_tokens' steps and draws.
    # out (S, M) out: sequence s's ids in out[s, :lengths[s]], the stop token not stored
    # lengths (S) out: the ids drawn before the stop token; M when it never came
    # logits (K) out; h, c (L, H) workspaces: every sequence starts from h0, c0 (L, H)
    # token: every sequence's first input id; uniforms (S, M) in [0, 1): one per draw
    # temperature, top_k, top_p, greedy: see draw_token; stop: the id that ends a sequence
    # cell, weights, xg, hw, probs, ranked: see generate_tokens
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    S, M = out.shape
    for s in range(S):
        h[...] = h0
        c[...] = c0
        current = token
        n = 0
        while n < M:
            _advance(h, c, current, cell, embed, Wxs, Whs, bxs, bhs, xg, hw)
            _head(logits, h, Wy, by)
            current = draw_token(logits, probs, ranked, uniforms[s, n], temperature, top_k, top_p, greedy)
            if current == stop:
                break
            out[s, n] = current
            n += 1
        lengths[s] = n


# --------------------------------------------------------------------------- generation on two threads
# At batch 1 a step reads every weight once, so large models are bound by memory bandwidth,
# which one core does not saturate. These variants split each layer's hidden units into parts
# (``bounds``: P+1 unit offsets, one part per thread): a part computes the products for its
# units' gate columns and updates those units, so each thread reads its share of every weight
# row. No BLAS is called here, so its threads cannot fight numba's (shared/DESIGN.md section 8).
# The arithmetic is generate_tokens'; only the order of each dot product's sum differs.


@kernel
def _rows_times(acc, x, W, H, j0, j1):
    # acc (G) += x @ W, only in the columns of units j0:j1 of every gate block (g*H + j0 to
    # g*H + j1), G = gates * H; x (D); W (D, G)
    # Four rows of W at a time, every gate block of those rows before the next four, so W is
    # read in address order and acc is loaded and stored once per four rows' products.
    n = j1 - j0
    D = x.shape[0]
    gates = acc.shape[0] // H
    d = 0
    while d + 4 <= D:
        x0, x1, x2, x3 = x[d], x[d + 1], x[d + 2], x[d + 3]
        for gate in range(gates):
            lo = gate * H + j0
            a = acc[lo : lo + n]
            w0 = W[d, lo : lo + n]
            w1 = W[d + 1, lo : lo + n]
            w2 = W[d + 2, lo : lo + n]
            w3 = W[d + 3, lo : lo + n]
            for j in range(n):
                a[j] += (x0 * w0[j] + x1 * w1[j]) + (x2 * w2[j] + x3 * w3[j])
        d += 4
    while d < D:
        x_d = x[d]
        for gate in range(gates):
            lo = gate * H + j0
            a = acc[lo : lo + n]
            w_d = W[d, lo : lo + n]
            for j in range(n):
                a[j] += x_d * w_d[j]
        d += 1


@kernel
def _advance_part(h, c, h_new, layer, token, cell, embed, Wx, Wh, bx, bh, xg, hw, j0, j1):
    # One part (units j0:j1) of one layer's step: the gate columns of those units of
    # xg = x @ Wx + bx and hw = h_prev @ Wh, then the cell update into h_new[j0:j1] and c[j0:j1].
    # h, c (L, H): h[layer - 1] is the step's input (already updated), h[layer] the previous
    # state; h_new (H) out; xg, hw (G) workspaces (each part writes only its own columns)
    # The loops run over zero-based views of the units: a loop from j0 keeps numba's check for
    # negative indices on every element and runs scalar (measured 12x slower, 1,024 elements).
    H = h.shape[1]
    gates = xg.shape[0] // H
    for gate in range(gates):
        lo = gate * H + j0
        xg_units = xg[lo : lo + j1 - j0]
        hw_units = hw[lo : lo + j1 - j0]
        b_units = bx[lo : lo + j1 - j0]
        for j in range(j1 - j0):
            xg_units[j] = b_units[j]
            hw_units[j] = 0.0
    if layer == 0 and embed.shape[0] == 0:
        row = Wx[token]  # one-hot input (or the input table): a row, no product
        for gate in range(gates):
            lo = gate * H + j0
            xg_units = xg[lo : lo + j1 - j0]
            row_units = row[lo : lo + j1 - j0]
            for j in range(j1 - j0):
                xg_units[j] += row_units[j]
    elif layer == 0:
        _rows_times(xg, embed[token], Wx, H, j0, j1)
    else:
        _rows_times(xg, h[layer - 1], Wx, H, j0, j1)
    _rows_times(hw, h[layer], Wh, H, j0, j1)
    _cell_update(h_new, h[layer], c[layer], xg, hw, bh, cell, j0, j1)


@parallel_kernel
def _advance_parallel(h, c, token, cell, embed, Wxs, Whs, bxs, bhs, bounds, h_new, xg, hw):
    # As _advance, each layer's units split into the parts of ``bounds`` (P+1 offsets), one
    # thread each. h_new (H), xg, hw (G) workspaces.
    for layer in range(h.shape[0]):
        for p in numba.prange(bounds.shape[0] - 1):
            _advance_part(
                h,
                c,
                h_new,
                layer,
                token,
                cell,
                embed,
                Wxs[layer],
                Whs[layer],
                bxs[layer],
                bhs[layer],
                xg,
                hw,
                bounds[p],
                bounds[p + 1],
            )
        # Every part has read the whole previous state: now it may be replaced.
        h_layer = h[layer]
        for j in range(h_layer.shape[0]):
            h_layer[j] = h_new[j]


@kernel
def _head_loop(logits, h, Wy, by):
    # logits (K) out = h[top] @ Wy + by, without BLAS (see the section header)
    logits[:] = by
    K = logits.shape[0]
    _rows_times(logits, h[h.shape[0] - 1], Wy, K, 0, K)  # one "gate block" of K columns


@kernel
def feed_tokens_parallel(logits, h, c, tokens, cell, weights, bounds, h_new, xg, hw):
    # feed_tokens on parts (see the section header); h_new (H), xg, hw (G) workspaces
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    for t in range(tokens.shape[0]):
        _advance_parallel(h, c, tokens[t], cell, embed, Wxs, Whs, bxs, bhs, bounds, h_new, xg, hw)
    if tokens.shape[0] > 0:
        _head_loop(logits, h, Wy, by)


@kernel
def generate_tokens_parallel(
    out,
    logits,
    h,
    c,
    token,
    uniforms,
    temperature,
    top_k,
    top_p,
    greedy,
    cell,
    weights,
    bounds,
    h_new,
    xg,
    hw,
    probs,
    ranked,
):
    # generate_tokens on parts (see the section header); h_new (H), xg, hw (G) workspaces
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    for n in range(out.shape[0]):
        _advance_parallel(h, c, token, cell, embed, Wxs, Whs, bxs, bhs, bounds, h_new, xg, hw)
        _head_loop(logits, h, Wy, by)
        token = draw_token(logits, probs, ranked, uniforms[n], temperature, top_k, top_p, greedy)
        out[n] = token


# --------------------------------------------------------------------------- generation from packed weights
# Batch-1 generation reads every weight once per character, so reading fewer bytes per weight
# raises its ceiling. These variants of generate_tokens (one thread, and on parts as above) read
# the matrices of a step as packed rows, converted once on the host (numrnn.sampling's
# pack_weights):
#   bf16  the top half of each float32's bits, rounded to nearest even; widened back exactly,
#         as (uint32(w) << 16) reinterpreted as float32. Rows a product reads come in pairs
#         (sampling.pair_bf16): (R, ceil(D / 2)) uint32, lane j holding w[j] in its low half
#         and w[ceil(D / 2) + j] in its high half, each widened by one shift or one mask
#         (_paired_rows; a looked-up row: _paired_lookup);
#   int8  symmetric: one float32 scale per row (max |row| / 127) and int8 values in -127..127.
# A row is what one output's product reads, contiguous: the matrices come transposed to
# (outputs, inputs). The tuple ``weights`` is (embed, Wxs, sxs, Whs, shs, bxs, bhs, Wy, sy, by):
#   embed  (V, E) float32, or an empty (0, 0) array when layer 0 reads rows (see below)
#   Wxs    L packed arrays: layer 0 (V, G) when embed is empty (one-hot input, or the (V, G)
#          input table of the embedding: a row per token, looked up, not multiplied), else
#          (G, E); above (G, H) (bf16 pairs: (V, ceil(G / 2)), (G, ceil(E / 2)), (G, ceil(H / 2)))
#   sxs    L float32 arrays: the scale of each row of Wxs[l] (ones for bf16)
#   Whs    L packed arrays (G, H) (bf16 pairs (G, ceil(H / 2)));  shs  L float32 arrays (G)
#   Wy     packed (K, H) (bf16 pairs (K, ceil(H / 2)));  sy  float32 (K)
#   bxs, bhs, by: float32 biases as in generate_tokens
# The state and the cell math stay float32. A bf16 product's row r is sum_d x[d] * W[r, d]
# widened, its sum in float32 and in any order (so that LLVM vectorises it; BLAS in
# generate_tokens sums in its own order too): the same arithmetic as generate_tokens on
# the widened weights. An int8 product rounds its input to int16 first (x = step * xq, one
# float32 step a vector: int8dot.quantize, into the ``quantized`` workspace) and sums
# xq[d] * W[r, d] exactly in integers: its row r is scale[r] * step * sum_d xq[d] * W[r, d]
# (int8dot.rows; 1.2-1.5x the products widened to float32), within the input's rounding
# (1e-5 to 3e-5 of the largest output, against 1e-7 for the float32 sums) of generate_tokens on
# the dequantised weights scale[r] * W[r, d]. Either way the two draw the same tokens but where
# rounding tips a near-tie. A state (every |element| <= 1) is rounded at a fixed step instead
# (int8dot.state_step), unit by unit, by the thread that computed the unit, right after its
# cell update, so no serial pass a layer finds its largest element; the kernels round the state
# they are given once, on entry. ``quantized`` (L + 1, max(E, H)) int16: row 0 layer 0's
# embedding row, row 1 + l layer l's state (the next layer's input, and the top one the head's);
# unused by bf16.

packed_kernel = numba.njit(**dict(_JIT, fastmath=_JIT["fastmath"] or {"reassoc", "contract"}))


def packed_workspace(config):
    """The packed kernels' ``quantized`` workspace for a model of ``config``: (L + 1, max(E,
    H)) int16, a row for layer 0's embedding row and one for each layer's state."""
    return np.zeros((config.layers + 1, max(config.embed, config.hidden)), np.int16)


@intrinsic
def _float32_from_bits(typingctx, bits):
    # the float32 whose bit pattern is the 32-bit integer ``bits`` (a free reinterpretation)
    if not (isinstance(bits, numba_types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())

    return numba_types.float32(bits), codegen


_inlined = numba.njit(**dict(_JIT, inline="always"))


@_inlined
def _low_bf16(pair):
    # the bf16 in the low half of a uint32 pair, widened to float32
    return _float32_from_bits(np.uint32(pair << np.uint32(16)))


@_inlined
def _high_bf16(pair):
    # the bf16 in the high half of a uint32 pair, widened to float32
    return _float32_from_bits(np.uint32(pair & np.uint32(0xFFFF0000)))


@packed_kernel
def _paired_rows(out, x, W, scale, r0, r1):
    # out[r] = scale[r] * (x @ w_r) for the rows r0:r1 of bf16 pairs (see the section header)
    # out (R) out; x (D) float32; W (R, ceil(D/2)) uint32 pairs; scale (R) float32
    # Four rows at a time, each with a sum for its low halves (x[:half]) and one for its high
    # halves (x[half:]): eight independent chains of fused multiply-adds.
    half = W.shape[1]
    full = x.shape[0] - half  # lanes with both halves; one fewer than half when D is odd
    x_low = x[:full]
    x_high = x[half : half + full]
    r = r0
    while r + 4 <= r1:
        w0, w1, w2, w3 = W[r], W[r + 1], W[r + 2], W[r + 3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        b0 = np.float32(0.0)
        b1 = np.float32(0.0)
        b2 = np.float32(0.0)
        b3 = np.float32(0.0)
        for j in range(full):
            low, high = x_low[j], x_high[j]
            u0, u1, u2, u3 = w0[j], w1[j], w2[j], w3[j]
            a0 += low * _low_bf16(u0)
            b0 += high * _high_bf16(u0)
            a1 += low * _low_bf16(u1)
            b1 += high * _high_bf16(u1)
            a2 += low * _low_bf16(u2)
            b2 += high * _high_bf16(u2)
            a3 += low * _low_bf16(u3)
            b3 += high * _high_bf16(u3)
        if full < half:  # odd D: the last lane's low half alone
            last = x[half - 1]
            a0 += last * _low_bf16(w0[half - 1])
            a1 += last * _low_bf16(w1[half - 1])
            a2 += last * _low_bf16(w2[half - 1])
            a3 += last * _low_bf16(w3[half - 1])
        out[r] = scale[r] * (a0 + b0)
        out[r + 1] = scale[r + 1] * (a1 + b1)
        out[r + 2] = scale[r + 2] * (a2 + b2)
        out[r + 3] = scale[r + 3] * (a3 + b3)
        r += 4
    while r < r1:
        w = W[r]
        a = np.float32(0.0)
        b = np.float32(0.0)
        for j in range(full):
            u = w[j]
            a += x_low[j] * _low_bf16(u)
            b += x_high[j] * _high_bf16(u)
        if full < half:
            a += x[half - 1] * _low_bf16(w[half - 1])
        out[r] = scale[r] * (a + b)
        r += 1


@kernel
def _paired_lookup(out, row, scale, g0):
    # out[k] = scale * (element g0 + k of a bf16 row in pairs), k < out's length
    # out (n) float32 out; row (ceil(D/2)) uint32 pairs (see the section header)
    half = row.shape[0]
    n = out.shape[0]
    split = min(max(half - g0, 0), n)  # elements below half sit in low halves, the rest high
    low = row[g0 : g0 + split]
    for k in range(split):
        out[k] = scale * _low_bf16(low[k])
    high_out = out[split:]
    high = row[g0 + split - half : g0 + n - half]
    for k in range(n - split):
        high_out[k] = scale * _high_bf16(high[k])


def _looked_up(out, row, scale, g0):
    """out[k] = scale * (element g0 + k of a packed row); compiled code only."""
    raise NotImplementedError("_looked_up runs in compiled code only")


@overload(_looked_up)
def _looked_up_overload(out, row, scale, g0):
    if _is_paired(row):
        return lambda out, row, scale, g0: _paired_lookup(out, row, scale, g0)

    if _is_int8(row):

        def dequantised(out, row, scale, g0):
            part = row[g0 : g0 + out.shape[0]]
            for k in range(out.shape[0]):
                out[k] = scale * np.float32(part[k])

        return dequantised
    return None


def _is_paired(W):
    return isinstance(W, numba_types.Array) and W.dtype == numba_types.uint32


def _is_int8(W):
    return isinstance(W, numba_types.Array) and W.dtype == numba_types.int8


def _product_input(quantized, x, W):
    """(what _packed_product of ``x`` by W's packed rows reads, its step); compiled code only."""
    raise NotImplementedError("_product_input runs in compiled code only")


@overload(_product_input)
def _product_input_overload(quantized, x, W):
    # int8 rows: x rounded to int16 into ``quantized`` (D >= x's length), and its step;
    # bf16 rows: x itself (a step of 1, not applied)
    if _is_int8(W):

        def rounded(quantized, x, W):
            xq = quantized[: x.shape[0]]
            return xq, int8dot.quantize(xq, x)

        return rounded
    return lambda quantized, x, W: (x, np.float32(1.0))


def _packed_product(out, x, step, W, scale, r0, r1):
    """out[r] = scale[r] * (x @ W[r]) for the rows r0:r1 of packed rows W, ``x`` and ``step``
    from _product_input; compiled code only."""
    raise NotImplementedError("_packed_product runs in compiled code only")


@overload(_packed_product)
def _packed_product_overload(out, x, step, W, scale, r0, r1):
    if _is_int8(W):
        return lambda out, x, step, W, scale, r0, r1: int8dot.rows(out, x, step, W, scale, r0, r1)
    if _is_paired(W):
        return lambda out, x, step, W, scale, r0, r1: _paired_rows(out, x, W, scale, r0, r1)
    return None


def _state_input(quantized, h, layer, W):
    """(what _packed_product of the state h[layer] by W's packed rows reads, its step);
    compiled code only."""
    raise NotImplementedError("_state_input runs in compiled code only")


@overload(_state_input)
def _state_input_overload(quantized, h, layer, W):
    # int8 rows: the state as rounded by _round_state (quantized row 1 + layer) and its fixed
    # step; bf16 rows: h[layer] itself
    if _is_int8(W):
        return lambda quantized, h, layer, W: (
            quantized[1 + layer, : h.shape[1]],
            int8dot.state_step(h.shape[1]),
        )
    return lambda quantized, h, layer, W: (h[layer], np.float32(1.0))


def _round_state(rounded, h_layer, j0, j1, W):
    """int8 rows: units j0:j1 of the state h_layer rounded into ``rounded`` at the state's fixed
    step (int8dot.quantize_state); nothing for bf16; compiled code only."""
    raise NotImplementedError("_round_state runs in compiled code only")


@overload(_round_state)
def _round_state_overload(rounded, h_layer, j0, j1, W):
    if _is_int8(W):
        return lambda rounded, h_layer, j0, j1, W: int8dot.quantize_state(rounded, h_layer, j0, j1)
    return lambda rounded, h_layer, j0, j1, W: None


@kernel
def _round_states(quantized, h, W):
    # every layer's state h[layer] rounded into quantized[1 + layer] (int8 rows W; nothing for
    # bf16): what a kernel does first, for states set from outside (zeros, a prime, a caller's)
    for layer in range(h.shape[0]):
        _round_state(quantized[1 + layer], h[layer], 0, h.shape[1], W)


@kernel
def _packed_inputs(q_read, h_read, q_written, h_written, x_row, layer, token, embed, Wx, Wh):
    # (x_in, x_step, h_in, h_step): what layer ``layer``'s products read, its input (none, an
    # empty x_in, when layer 0 reads rows of Wx) and its previous state (see _product_input and
    # _state_input): the previous state from (q_read, h_read), the input from the layer below's
    # new state in (q_written, h_written), an embedding row rounded into x_row. The one-thread
    # kernels update the state in place (the same buffers twice); the parts' region reads one
    # buffer and writes the other.
    h_in, h_step = _state_input(q_read, h_read, layer, Wh)
    if layer == 0 and embed.shape[0] == 0:
        return h_in[:0], h_step, h_in, h_step
    if layer == 0:
        x_in, x_step = _product_input(x_row, embed[token], Wx)
    else:
        x_in, x_step = _state_input(q_written, h_written, layer - 1, Wx)
    return x_in, x_step, h_in, h_step


@kernel
def _packed_advance_part(
    h,
    c,
    h_new,
    h_rounded,
    layer,
    token,
    cell,
    embed,
    Wx,
    sx,
    Wh,
    sh,
    bx,
    bh,
    x_in,
    x_step,
    h_in,
    h_step,
    xg,
    hw,
    j0,
    j1,
):
    # One part (units j0:j1) of one layer's step from packed weights: the gate columns of those
    # units of xg = x @ Wx + bx and hw = h_prev @ Wh, then the cell update into h_new[j0:j1] and
    # c[j0:j1] (h_new may be h[layer]: every product has read the old state before the update),
    # and for int8 those units of h_new rounded into h_rounded (_round_state; int16, may be the
    # row h_in is, for the same reason).
    # h, c (L, H): h[layer - 1] is the step's input (already updated), h[layer] the previous
    # state; Wx, sx, Wh, sh: this layer's packed rows and scales (see the section header);
    # bx, bh (G); x_in, x_step, h_in, h_step: the input and the state as the products read them
    # (_packed_inputs); xg, hw (G) workspaces (each part writes only its own columns)
    H = h.shape[1]
    gates = xg.shape[0] // H
    if layer == 0 and embed.shape[0] == 0:
        row = Wx[token]  # one-hot input (or the input table): a row, no product
        for gate in range(gates):
            lo = gate * H + j0
            _looked_up(xg[lo : lo + j1 - j0], row, sx[token], lo)
    else:
        for gate in range(gates):
            _packed_product(xg, x_in, x_step, Wx, sx, gate * H + j0, gate * H + j1)
    for gate in range(gates):
        lo = gate * H + j0
        xg_units = xg[lo : lo + j1 - j0]
        b_units = bx[lo : lo + j1 - j0]
        for j in range(j1 - j0):
            xg_units[j] += b_units[j]
        _packed_product(hw, h_in, h_step, Wh, sh, lo, lo + j1 - j0)
    _cell_update(h_new, h[layer], c[layer], xg, hw, bh, cell, j0, j1)
    _round_state(h_rounded, h_new, j0, j1, Wh)


@kernel
def _packed_advance(h, c, token, cell, embed, Wxs, sxs, Whs, shs, bxs, bhs, xg, hw, quantized):
    # _advance from packed weights, on one thread; xg, hw (G), quantized workspaces
    H = h.shape[1]
    for layer in range(h.shape[0]):
        inputs = _packed_inputs(
            quantized, h, quantized, h, quantized[0], layer, token, embed, Wxs[layer], Whs[layer]
        )
        weights = (Wxs[layer], sxs[layer], Whs[layer], shs[layer], bxs[layer], bhs[layer])
        h_rounded = quantized[1 + layer]
        _packed_advance_part(
            h, c, h[layer], h_rounded, layer, token, cell, embed, *weights, *inputs, xg, hw, 0, H
        )


@kernel
def _packed_head(logits, h, Wy, sy, by, quantized):
    # logits (K) out = h[top] @ Wy + by from the packed head rows Wy (K, H), scales sy (K);
    # quantized workspace
    K = logits.shape[0]
    top, step = _state_input(quantized, h, h.shape[0] - 1, Wy)
    _packed_product(logits, top, step, Wy, sy, 0, K)
    for k in range(K):
        logits[k] += by[k]


@kernel
def feed_tokens_packed(logits, h, c, tokens, cell, weights, xg, hw, quantized):
    # feed_tokens from packed weights (see the section header); xg, hw (G), quantized workspaces
    embed, Wxs, sxs, Whs, shs, bxs, bhs, Wy, sy, by = weights
    _round_states(quantized, h, Whs[0])
    for t in range(tokens.shape[0]):
        _packed_advance(h, c, tokens[t], cell, embed, Wxs, sxs, Whs, shs, bxs, bhs, xg, hw, quantized)
    if tokens.shape[0] > 0:
        _packed_head(logits, h, Wy, sy, by, quantized)


@kernel
def generate_tokens_packed(
    out,
    logits,
    h,
    c,
    token,
    uniforms,
    temperature,
    top_k,
    top_p,
    greedy,
    cell,
    weights,
    xg,
    hw,
    quantized,
    probs,
    ranked,
):
    # generate_tokens from packed weights (see the section header); xg, hw (G), quantized
    # workspaces
    embed, Wxs, sxs, Whs, shs, bxs, bhs, Wy, sy, by = weights
    _round_states(quantized, h, Whs[0])
    for n in range(out.shape[0]):
        _packed_advance(h, c, token, cell, embed, Wxs, sxs, Whs, shs, bxs, bhs, xg, hw, quantized)
        _packed_head(logits, h, Wy, sy, by, quantized)
        token = draw_token(logits, probs, ranked, uniforms[n], temperature, top_k, top_p, greedy)
        out[n] = token


# --------------------------------------------------------------------------- packed generation on parts
# On parts (``bounds``: P+1 unit offsets), packed generation opens one parallel region for a
# whole chunk of tokens and hands the work between the threads as claimed jobs
# (numrnn.kernels.claims): each layer's parts, then (generating) the head with the draw, each a
# job a token. A thread tries its own part of a layer first (the same part every token, so its
# rows of the weights stay in its core's cache), then any part no thread has taken, then waits
# for the layer's parts to be done; a waiting thread spins about 30 us, then gives its core away
# between looks (claims.wait_for), so a program busy on that core is not shut out. Each part is
# _packed_advance_part on its units, the one-thread kernels' step on all of them, so both give
# the same bits on any number of threads. The states a token reads and those it writes are apart
# (two buffers, the token's parity picking which is which), so no copy waits for every part.
# Opening a region for every layer of every token instead cost about 3 us each (OpenMP, Zen 3):
# at C's 2 x 512 from int8 weights as long as the layer's products (two threads generated 1.05x
# as fast as one that way). Measured on the Zen 3 (2 threads, 3,000 characters, medians of 5,
# chars/s, a region a layer -> one a chunk): int8 C rnn 33,078 -> 50,054, C gru 15,608 -> 17,960,
# C lstm 12,097 -> 13,822, D 13,848 -> 14,463; bf16 C rnn 30,251 -> 36,528.


@parallel_kernel
def _packed_region(out, tokens, logits, states, token, uniforms, draw, cell, weights, bounds, xg, hw, jobs):
    # The region of feed_tokens_packed_parallel (out empty: the steps read ``tokens``, the head
    # runs after the last) and generate_tokens_packed_parallel (the steps read ``token``, then
    # each drawn id; out (N) the ids). states: (hb, qb, x_rows, c), hb (2, L, H) and qb (2, L + 1,
    # max(E, H)) the two state buffers (token n reads buffer n % 2 and writes the other), x_rows
    # (P, max(E, H)) each part's rounded embedding row, c (L, H) the cell state; draw:
    # (temperature, top_k, top_p, greedy); jobs: (probs, ranked, taken, done), taken and done
    # (L * P + 1) the jobs' claims (job layer * P + part, then the head)
    hb, qb, x_rows, c = states
    probs, ranked, taken, done = jobs
    embed, Wxs, sxs, Whs, shs, bxs, bhs, Wy, sy, by = weights
    L = hb.shape[1]
    parts = bounds.shape[0] - 1
    head = L * parts
    feeding = out.shape[0] == 0
    steps = tokens.shape[0] if feeding else out.shape[0]
    for thread in numba.prange(parts):
        for n in range(steps):
            h_read, h_written = hb[n % 2], hb[1 - n % 2]
            q_read, q_written = qb[n % 2], qb[1 - n % 2]
            if feeding:
                step_token = tokens[n]
            else:
                step_token = token if n == 0 else out[n - 1]
            for layer in range(L):
                layer_weights = (Wxs[layer], sxs[layer], Whs[layer], shs[layer], bxs[layer], bhs[layer])
                for k in range(parts):
                    p = (thread + k) % parts
                    if claims.claim(taken, layer * parts + p, n):
                        inputs = _packed_inputs(
                            q_read,
                            h_read,
                            q_written,
                            h_written,
                            x_rows[p],
                            layer,
                            step_token,
                            embed,
                            Wxs[layer],
                            Whs[layer],
                        )
                        step = (
                            h_read,
                            c,
                            h_written[layer],
                            q_written[1 + layer],
                            layer,
                            step_token,
                            cell,
                            embed,
                        )
                        _packed_advance_part(*step, *layer_weights, *inputs, xg, hw, bounds[p], bounds[p + 1])
                        claims.finish(done, layer * parts + p, n)
                for p in range(parts):
                    claims.wait_for(done, layer * parts + p, n)
            # every layer of step n is done (each thread waited for it): the next step may write
            # the buffer this one read. Feeding, the head runs once, as job step 0 after the last.
            if not feeding or n == steps - 1:
                head_step = 0 if feeding else n
                if claims.claim(taken, head, head_step):
                    _packed_head(logits, h_written, Wy, sy, by, q_written)
                    if not feeding:
                        out[n] = draw_token(logits, probs, ranked, uniforms[n], *draw)
                    claims.finish(done, head, head_step)
                claims.wait_for(done, head, head_step)


@kernel
def _run_region(
    out, tokens, logits, h, c, token, uniforms, draw, cell, weights, bounds, xg, hw, quantized, probs, ranked
):
    # _packed_region's buffers, made here (a few kilobytes a chunk), h's state in and out
    steps = tokens.shape[0] if out.shape[0] == 0 else out.shape[0]
    if steps == 0:
        return
    L, H = h.shape
    parts = bounds.shape[0] - 1
    hb = np.empty((2, L, H), h.dtype)
    hb[0] = h
    qb = np.zeros((2, quantized.shape[0], quantized.shape[1]), quantized.dtype)
    _round_states(qb[0], hb[0], weights[3][0])
    x_rows = np.zeros((parts, quantized.shape[1]), quantized.dtype)
    taken = np.full(L * parts + 1, -1, np.int64)
    done = np.full(L * parts + 1, -1, np.int64)
    states, jobs = (hb, qb, x_rows, c), (probs, ranked, taken, done)
    _packed_region(out, tokens, logits, states, token, uniforms, draw, cell, weights, bounds, xg, hw, jobs)
    h[:] = hb[steps % 2]


@kernel
def feed_tokens_packed_parallel(logits, h, c, tokens, cell, weights, bounds, xg, hw, quantized):
    # feed_tokens_packed on parts, in one parallel region (see the section header); bounds (P+1)
    # the parts' first units; xg, hw (G), quantized workspaces
    no_ids, no_floats = np.empty(0, np.int64), np.empty(0, logits.dtype)
    draw = (np.float64(1.0), np.int64(0), np.float64(1.0), False)  # no draws when feeding
    region = (no_ids, tokens, logits, h, c, np.int64(0), np.empty(0, np.float64), draw, cell)
    _run_region(*region, weights, bounds, xg, hw, quantized, no_floats, no_floats)


@kernel
def generate_tokens_packed_parallel(
    out,
    logits,
    h,
    c,
    token,
    uniforms,
    temperature,
    top_k,
    top_p,
    greedy,
    cell,
    weights,
    bounds,
    xg,
    hw,
    quantized,
    probs,
    ranked,
):
    # generate_tokens_packed on parts, in one parallel region (see the section header); bounds
    # (P+1) the parts' first units; xg, hw (G), quantized workspaces
    draw = (temperature, top_k, top_p, greedy)
    region = (out, np.empty(0, np.int64), logits, h, c, token, uniforms, draw, cell)
    _run_region(*region, weights, bounds, xg, hw, quantized, probs, ranked)
