"""CUDA kernels (numba.cuda): launchers with the names and arguments of ``cpu.py``'s kernels.

The cell math is ``pointwise.py``'s, compiled as device functions. The element-wise work of a
step (a cell's gates for every running row and unit) is a ``cuda.jit`` kernel over
``cuda.grid(2)`` (rows x units) with a bounds check; the launchers are host functions that
loop over time and launch one such kernel per step after that step's matrix product.

The launchers take arrays in the backend's memory, ``xp``'s: on a GPU CuPy arrays, which
numba's kernels read in place (``__cuda_array_interface__``), and which the networks keep for
a whole run (``numrnn.model.Network``); ``to_device``/``to_host`` are the crossings. Launchers
that loop over time read the per-step row counts (``active``) on the host. Matrix products go
through ``_gemm``: on a GPU, cuBLAS through CuPy on the same arrays (no copies, on the default
stream numba launches on); under numba's simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) the
arrays are host memory made as strict as a GPU's (``simulated.py``) and the product is
numpy's. A hand-written GEMM kernel is not the product path.

Differences from the CPU kernels, none of them in results: the first step's product from a
zero initial state is computed (the CPU skips it after checking the state on the host).

Importing this module needs numba-cuda (the ``cuda`` extra, or the test extra); it is loaded
only when ``--device cuda`` asks for it (``numrnn.kernels.get_backend``).
"""

import math

import numba
import numpy as np
from numba import cuda

from numrnn.cells import CELL_TABLE
from numrnn.kernels import pointwise

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
THREADS = (16, 16)  # threads per block over (rows, units); the simulator tests patch it small

if SIMULATED:
    # Host memory as strict as the GPU's (simulated.py): host arrays cannot mix in.
    from numrnn.kernels.simulated import to_device, to_host, xp
else:
    try:
        import cupy as xp
    except ImportError:  # get_backend refuses --device cuda without CuPy; compiling PTX needs none
        xp = None
    try:
        from numba.cuda.core import config as _cuda_config
    except ImportError:  # numba-cuda before 0.2x kept it in numba's own config
        _cuda_config = numba.config

    # CuPy's operations and numba's launches share the legacy default stream, which orders
    # them; numba's default would synchronise the host on every CuPy array it is given.
    _cuda_config.CUDA_ARRAY_INTERFACE_SYNC = 0

    def to_device(array, dtype=None):
        """``array`` as a device array (a copy from the host; none when already there)."""
        return xp.ascontiguousarray(xp.asarray(array, dtype=dtype))

    def to_host(array):
        """``array`` as a host numpy array (a copy from the device)."""
        return xp.asnumpy(array)


_cell = pointwise.build(lambda f: cuda.jit(device=True)(f))
rnn_cell = _cell.rnn_cell
rnn_cell_backward = _cell.rnn_cell_backward
lstm_cell = _cell.lstm_cell
lstm_cell_backward = _cell.lstm_cell_backward
gru_cell = _cell.gru_cell
gru_cell_backward = _cell.gru_cell_backward


def _grid(rows, columns):
    """(blocks, threads) covering rows x columns with THREADS-sized blocks."""
    tr, tc = THREADS
    return (max(1, -(-rows // tr)), max(1, -(-columns // tc))), (tr, tc)


# --------------------------------------------------------------------------- matrix products


def _gemm(out, a, b, *, trans_a=False, trans_b=False, accumulate=False):
    """out (M, N) = (+= with accumulate) op(a) @ op(b), op transposing when asked."""
    if out.shape[0] == 0:
        return
    if SIMULATED:
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if accumulate:
            out += product
        else:
            out[...] = product
        return
    import cupy
    from cupy import cublas

    o, x, y = cupy.asarray(out), cupy.asarray(a), cupy.asarray(b)
    cublas.gemm(
        "T" if trans_a else "N", "T" if trans_b else "N", x, y, out=o, beta=1.0 if accumulate else 0.0
    )


# --------------------------------------------------------------------------- element-wise helpers


@cuda.jit
def _copy_kernel(dst, src):
    # dst (R, C) = src (R, C)
    b, j = cuda.grid(2)
    if b < dst.shape[0] and j < dst.shape[1]:
        dst[b, j] = src[b, j]


@cuda.jit
def _hold_kernel(next_state, state, n):
    # rows n.. of a step keep their state: next_state[b] = state[b] for b >= n
    b, j = cuda.grid(2)
    if n <= b < next_state.shape[0] and j < next_state.shape[1]:
        next_state[b, j] = state[b, j]


@cuda.jit
def _pass_kernel(dpre_t, dh_carry, dhs_t, n):
    # rows n.. of a step that held its state: no gradient reaches its gates (dpre_t (B, G) rows
    # zeroed) and the gradient from above flows on to the previous state (dh_carry += dhs_t)
    b, j = cuda.grid(2)
    if n <= b < dpre_t.shape[0]:
        if j < dpre_t.shape[1]:
            dpre_t[b, j] = 0.0
        if j < dh_carry.shape[1]:
            dh_carry[b, j] += dhs_t[b, j]


@cuda.jit
def _column_sums_kernel(db, rows):
    # db (G) += the column sums of rows (N, G); one thread per column (the grid's first row)
    b, j = cuda.grid(2)
    if b == 0 and j < db.shape[0]:
        total = db[j] * 0.0
        for n in range(rows.shape[0]):
            total += rows[n, j]
        db[j] += total


def _copy(dst, src):
    blocks, threads = _grid(dst.shape[0], dst.shape[1])
    _copy_kernel[blocks, threads](dst, src)


def _hold(states, t, n):
    B, H = states.shape[1], states.shape[2]
    if n < B:
        blocks, threads = _grid(B, H)
        _hold_kernel[blocks, threads](states[t + 1], states[t], n)


def _pass(dpre_t, dh_carry, dhs_t, n):
    B = dpre_t.shape[0]
    if n < B:
        blocks, threads = _grid(B, max(dpre_t.shape[1], dh_carry.shape[1]))
        _pass_kernel[blocks, threads](dpre_t, dh_carry, dhs_t, n)


def _rows(a):
    # (T, B, X) -> (T*B, X)
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])


def _accumulate_recurrent(dWh, dbh, hs, dpre):
    # dWh (H, G) += hs[:T] rows.T @ dpre rows; dbh (G) += column sums of dpre; neither when dWh
    # has no rows (the caller adds both: stacked_weight_grads)
    if dWh.shape[0] == 0:
        return
    T = dpre.shape[0]
    _gemm(dWh, _rows(hs[:T]), _rows(dpre), trans_a=True, accumulate=True)
    blocks, threads = _grid(1, dbh.shape[0])
    _column_sums_kernel[blocks, threads](dbh, _rows(dpre))


def _recurrent_product(hw, h_prev, Wh):
    # hw (n, G) = h_prev (n, H) @ Wh (H, G)
    _gemm(hw, h_prev, Wh)


# --------------------------------------------------------------------------- RNN


@cuda.jit
def _rnn_step(h_next, xg_t, hw, bh, n):
    # h_next (B, H)[:n] = tanh(xg_t + hw + bh)
    b, j = cuda.grid(2)
    if b < n and j < h_next.shape[1]:
        h_next[b, j] = rnn_cell(xg_t[b, j] + hw[b, j] + bh[j])


@cuda.jit
def _rnn_step_backward(dxg_t, h_t, dhs_t, dh_carry, n):
    # dxg_t (B, H)[:n] = the gradient of the pre-activations of the running rows
    b, j = cuda.grid(2)
    if b < n and j < dxg_t.shape[1]:
        dxg_t[b, j] = rnn_cell_backward(h_t[b, j], dhs_t[b, j] + dh_carry[b, j])


def rnn_forward(hs, xg, active, Wh, bh, hw, packed):
    """As ``cpu.rnn_forward``: hs (T+1, B, H) in/out, xg (T, B, H), active (T) on the host,
    Wh (H, H), bh (H), hw (B, H) workspace (packed unused: cuBLAS reads Wh as it is)."""
    T, B, H = xg.shape
    blocks, threads = _grid(B, H)
    for t in range(T):
        n = int(active[t])
        _recurrent_product(hw[:n], hs[t, :n], Wh)
        _hold(hs, t, n)
        _rnn_step[blocks, threads](hs[t + 1], xg[t], hw, bh, n)


def rnn_backward(dxg, dh0, dWh, dbh, dhs, dhT, hs, active, initial_grad, Wh, scratch, packed):
    """As ``cpu.rnn_backward`` (scratch and packed unused: the products need no workspace here)."""
    T, B, H = dhs.shape
    blocks, threads = _grid(B, H)
    _copy(dh0, dhT)
    for t in range(T - 1, -1, -1):
        n = int(active[t])
        _pass(dxg[t], dh0, dhs[t], n)
        _rnn_step_backward[blocks, threads](dxg[t], hs[t + 1], dhs[t], dh0, n)
        if t > 0 or initial_grad:
            _gemm(dh0[:n], dxg[t, :n], Wh, trans_b=True)
    _accumulate_recurrent(dWh, dbh, hs, dxg)


# --------------------------------------------------------------------------- LSTM


@cuda.jit
def _lstm_step(hs_next, cs_next, c_prev, gates_t, hw, bh, n):
    # gates_t (B, 4H)[:n] in: x_t Wx + bx; out: the activated gates i, f, g, o
    b, j = cuda.grid(2)
    H = hs_next.shape[1]
    if b < n and j < H:
        g = gates_t[b]
        w = hw[b]
        i, f, gg, o, c, h = lstm_cell(
            g[j] + w[j] + bh[j],
            g[H + j] + w[H + j] + bh[H + j],
            g[2 * H + j] + w[2 * H + j] + bh[2 * H + j],
            g[3 * H + j] + w[3 * H + j] + bh[3 * H + j],
            c_prev[b, j],
        )
        g[j] = i
        g[H + j] = f
        g[2 * H + j] = gg
        g[3 * H + j] = o
        cs_next[b, j] = c
        hs_next[b, j] = h


@cuda.jit
def _lstm_step_backward(dgates_t, dc_carry, gates_t, c_prev, c_t, dhs_t, dh_carry, n):
    b, j = cuda.grid(2)
    H = c_t.shape[1]
    if b < n and j < H:
        g = gates_t[b]
        d = dgates_t[b]
        da_i, da_f, da_g, da_o, dc_prev = lstm_cell_backward(
            g[j],
            g[H + j],
            g[2 * H + j],
            g[3 * H + j],
            c_prev[b, j],
            c_t[b, j],
            dhs_t[b, j] + dh_carry[b, j],
            dc_carry[b, j],
        )
        d[j] = da_i
        d[H + j] = da_f
        d[2 * H + j] = da_g
        d[3 * H + j] = da_o
        dc_carry[b, j] = dc_prev


def lstm_forward(hs, cs, gates, active, Wh, bh, hw, packed):
    """As ``cpu.lstm_forward`` (packed unused)."""
    T, B, G = gates.shape
    blocks, threads = _grid(B, G // 4)
    for t in range(T):
        n = int(active[t])
        _recurrent_product(hw[:n], hs[t, :n], Wh)
        _hold(hs, t, n)
        _hold(cs, t, n)
        _lstm_step[blocks, threads](hs[t + 1], cs[t + 1], cs[t], gates[t], hw, bh, n)


def lstm_backward(
    dgates, dh0, dc0, dWh, dbh, dhs, dhT, dcT, hs, cs, gates, active, initial_grad, Wh, scratch, packed
):
    """As ``cpu.lstm_backward`` (scratch and packed unused)."""
    T, B, G = gates.shape
    blocks, threads = _grid(B, G // 4)
    _copy(dh0, dhT)
    _copy(dc0, dcT)
    for t in range(T - 1, -1, -1):
        n = int(active[t])
        _pass(dgates[t], dh0, dhs[t], n)
        _lstm_step_backward[blocks, threads](dgates[t], dc0, gates[t], cs[t], cs[t + 1], dhs[t], dh0, n)
        if t > 0 or initial_grad:
            _gemm(dh0[:n], dgates[t, :n], Wh, trans_b=True)
    _accumulate_recurrent(dWh, dbh, hs, dgates)


# --------------------------------------------------------------------------- GRU


@cuda.jit
def _gru_step(hs_next, h_prev, gates_t, hn_t, hw, bh, n):
    # gates_t (B, 3H)[:n] in: x_t Wx + bx; out: the activated gates r, z, n
    # hn_t (B, H)[:n] out: h_prev Wh_n + bh_n
    b, j = cuda.grid(2)
    H = hs_next.shape[1]
    if b < n and j < H:
        g = gates_t[b]
        w = hw[b]
        h_n = w[2 * H + j] + bh[2 * H + j]
        r, z, nn, h = gru_cell(
            g[j], g[H + j], g[2 * H + j], w[j] + bh[j], w[H + j] + bh[H + j], h_n, h_prev[b, j]
        )
        g[j] = r
        g[H + j] = z
        g[2 * H + j] = nn
        hn_t[b, j] = h_n
        hs_next[b, j] = h


@cuda.jit
def _gru_step_backward(dxg_t, dhg_t, dh_carry, gates_t, hn_t, h_prev, dhs_t, n):
    # dxg_t, dhg_t (B, 3H)[:n] out; dh_carry (B, H)[:n] in/out: the direct path to h_prev
    b, j = cuda.grid(2)
    H = hn_t.shape[1]
    if b < n and j < H:
        g = gates_t[b]
        da_r, da_z, da_n, dh_n, dh_prev = gru_cell_backward(
            g[j], g[H + j], g[2 * H + j], hn_t[b, j], h_prev[b, j], dhs_t[b, j] + dh_carry[b, j]
        )
        dx = dxg_t[b]
        dh = dhg_t[b]
        dx[j] = da_r
        dx[H + j] = da_z
        dx[2 * H + j] = da_n
        dh[j] = da_r
        dh[H + j] = da_z
        dh[2 * H + j] = dh_n
        dh_carry[b, j] = dh_prev


@cuda.jit
def _zero_rows_kernel(a, n):
    # a (B, C): rows n.. zeroed
    b, j = cuda.grid(2)
    if n <= b < a.shape[0] and j < a.shape[1]:
        a[b, j] = 0.0


def gru_forward(hs, gates, hn, active, Wh, bh, hw, packed):
    """As ``cpu.gru_forward`` (packed unused)."""
    T, B, G = gates.shape
    blocks, threads = _grid(B, G // 3)
    for t in range(T):
        n = int(active[t])
        _recurrent_product(hw[:n], hs[t, :n], Wh)
        _hold(hs, t, n)
        _gru_step[blocks, threads](hs[t + 1], hs[t], gates[t], hn[t], hw, bh, n)


def gru_backward(dxg, dh0, dWh, dbh, dhs, dhT, hs, gates, hn, active, initial_grad, Wh, dhg, scratch, packed):
    """As ``cpu.gru_backward`` (scratch and packed unused)."""
    T, B, G = gates.shape
    blocks, threads = _grid(B, G // 3)
    _copy(dh0, dhT)
    for t in range(T - 1, -1, -1):
        n = int(active[t])
        _pass(dxg[t], dh0, dhs[t], n)
        if n < B:
            zero_blocks, zero_threads = _grid(B, G)
            _zero_rows_kernel[zero_blocks, zero_threads](dhg[t], n)
        _gru_step_backward[blocks, threads](dxg[t], dhg[t], dh0, gates[t], hn[t], hs[t], dhs[t], n)
        if t > 0 or initial_grad:
            # The previous state also has a direct path (already in dh0): add to it.
            _gemm(dh0[:n], dhg[t, :n], Wh, trans_b=True, accumulate=True)
    _accumulate_recurrent(dWh, dbh, hs, dhg)


# --------------------------------------------------------------------------- dense and lookup layers


@cuda.jit
def _bias_kernel(y, b):
    # y (N, K) += b (K)
    n, k = cuda.grid(2)
    if n < y.shape[0] and k < y.shape[1]:
        y[n, k] += b[k]


@cuda.jit
def _gather_kernel(out, tokens, W):
    # out (N, E) = W[tokens[n]]
    n, e = cuda.grid(2)
    if n < out.shape[0] and e < out.shape[1]:
        out[n, e] = W[tokens[n], e]


@cuda.jit
def _scatter_add_kernel(dW, dout, tokens):
    # dW (V, E) += dout rows scattered to rows tokens[n] (atomic: tokens repeat)
    n, e = cuda.grid(2)
    if n < dout.shape[0] and e < dout.shape[1]:
        cuda.atomic.add(dW, (tokens[n], e), dout[n, e])


def bias_forward(y, b):
    """As ``cpu.bias_forward``: y (N, K) += b (K)."""
    blocks, threads = _grid(y.shape[0], y.shape[1])
    _bias_kernel[blocks, threads](y, b)


def bias_backward(db, dy):
    """As ``cpu.bias_backward``: db (K) += the column sums of dy (N, K)."""
    blocks, threads = _grid(1, db.shape[0])
    _column_sums_kernel[blocks, threads](db, dy)


def linear_forward(y, x, W, b):
    """As ``cpu.linear_forward``: y (N, K) = x (N, D) @ W (D, K) + b."""
    _gemm(y, x, W)
    bias_forward(y, b)


def linear_backward(dx, dW, db, dy, x, W, scratch):
    """As ``cpu.linear_backward`` (scratch unused): dW += x.T @ dy and db += column sums of dy
    unless dW has no rows, dx = dy @ W.T unless dx has no rows."""
    if dW.shape[0] > 0:
        _gemm(dW, x, dy, trans_a=True, accumulate=True)
        bias_backward(db, dy)
    if dx.shape[0] > 0:
        _gemm(dx, dy, W, trans_b=True)


def stacked_weight_grads(dWx, dbx, dWh, dbh, x, hs, dpre, scratch, joined):
    """As ``cpu.stacked_weight_grads`` (scratch and joined unused): dWx += x rows.T @ dpre rows,
    dWh += hs[:T] rows.T @ dpre rows, dbx and dbh += column sums of dpre; two products here,
    which cuBLAS runs without the CPU's copy."""
    _gemm(dWx, _rows(x), _rows(dpre), trans_a=True, accumulate=True)
    bias_backward(dbx, _rows(dpre))
    _accumulate_recurrent(dWh, dbh, hs, dpre)


def matmul(y, x, W):
    """As ``cpu.matmul``: y = x @ W."""
    _gemm(y, x, W)


def matmul_backward(dx, dW, dy, x, W, scratch):
    """As ``cpu.matmul_backward`` (scratch unused): dx = dy @ W.T, dW += x.T @ dy."""
    _gemm(dW, x, dy, trans_a=True, accumulate=True)
    _gemm(dx, dy, W, trans_b=True)


def embed_forward(out, tokens, W):
    """As ``cpu.embed_forward``: out (N, E) = rows tokens (N) of W (V, E)."""
    blocks, threads = _grid(out.shape[0], out.shape[1])
    _gather_kernel[blocks, threads](out, tokens, W)


def embed_backward(dW, dout, tokens):
    """As ``cpu.embed_backward``: dW (V, E) += dout scattered to the rows tokens[n]."""
    blocks, threads = _grid(dout.shape[0], dout.shape[1])
    _scatter_add_kernel[blocks, threads](dW, dout, tokens)


# --------------------------------------------------------------------------- loss


@cuda.jit(device=True)
def _xent_row(losses, dlogits, logits, n, targets, scale, with_grad):
    # Row n of cpu.softmax_xent_fused (dlogits unused without with_grad; it may be logits).
    V = logits.shape[1]
    target = targets[n]
    if target < 0:
        losses[n] = 0.0
        if with_grad:
            for v in range(V):
                dlogits[n, v] = 0.0
        return
    target_logit = logits[n, target]  # before dlogits (maybe logits itself) is written
    peak = logits[n, 0]
    for v in range(1, V):
        peak = max(peak, logits[n, v])
    total = 0.0
    for v in range(V):
        total += math.exp(logits[n, v] - peak)
    losses[n] = math.log(total) + peak - target_logit
    if with_grad:
        inv = scale / total
        for v in range(V):
            dlogits[n, v] = math.exp(logits[n, v] - peak) * inv
        dlogits[n, target] -= scale


@cuda.jit
def _softmax_xent_kernel(losses, dlogits, logits, targets, scale, with_grad):
    # one thread per row
    n, column = cuda.grid(2)
    if column == 0 and n < logits.shape[0]:
        _xent_row(losses, dlogits, logits, n, targets, scale, with_grad)


@cuda.jit
def _softmax_xent_in_place_kernel(losses, logits, targets, scale):
    # one thread per row; the gradient overwrites the logits
    n, column = cuda.grid(2)
    if column == 0 and n < logits.shape[0]:
        _xent_row(losses, logits, logits, n, targets, scale, True)


def softmax_xent_forward(losses, logits, targets):
    """As ``cpu.softmax_xent_forward``."""
    blocks, threads = _grid(logits.shape[0], 1)
    _softmax_xent_kernel[blocks, threads](losses, logits, logits, targets, 0.0, False)


def softmax_xent_fused(losses, dlogits, logits, targets, scale):
    """As ``cpu.softmax_xent_fused`` (dlogits may be logits: the gradient in place)."""
    blocks, threads = _grid(logits.shape[0], 1)
    if dlogits is logits:
        # One array, not the same one twice: the simulator copies each array argument in and
        # out on its own (its device memory is host memory), and the second copy back would
        # undo the first. (On a GPU one pointer passed twice would do.)
        _softmax_xent_in_place_kernel[blocks, threads](losses, logits, targets, scale)
    else:
        _softmax_xent_kernel[blocks, threads](losses, dlogits, logits, targets, scale, True)


# --------------------------------------------------------------------------- attention
# (B, T, S) batch-major as on the CPU; the per-row products are batched products.


def _bmm(out, a, b, *, trans_a=False, trans_b=False):
    """out (B, M, N) = op(a[r]) @ op(b[r]) for every r (a batched product)."""
    if out.shape[0] == 0:
        return
    if SIMULATED:
        out[...] = np.matmul(a.transpose(0, 2, 1) if trans_a else a, b.transpose(0, 2, 1) if trans_b else b)
        return
    import cupy

    x, y = cupy.asarray(a), cupy.asarray(b)
    cupy.matmul(
        x.transpose(0, 2, 1) if trans_a else x, y.transpose(0, 2, 1) if trans_b else y, out=cupy.asarray(out)
    )


def _grouped(keys, rows, group):
    # keys (B / group, S, A) -> (rows, S, A): row b reads keys[b // group]
    if group == 1:
        return keys
    return keys[xp.arange(rows) // group]


def attention_scores(scores, queries, keys, group):
    """As ``cpu.attention_scores``: scores (B, T, S) = queries[b] @ keys[b // group].T."""
    _bmm(scores, queries, _grouped(keys, scores.shape[0], group), trans_b=True)


def attention_scores_backward(dqueries, dkeys, dscores, queries, keys):
    """As ``cpu.attention_scores_backward``."""
    _bmm(dqueries, dscores, keys)
    _bmm(dkeys, dscores, queries, trans_a=True)


def attention_context(context, weights, values, group):
    """As ``cpu.attention_context``: context (B, T, D) = weights[b] @ values[b // group]."""
    _bmm(context, weights, _grouped(values, weights.shape[0], group))


@cuda.jit
def _softmax_rows_kernel(weights, lengths):
    # weights (B, T, S): each (b, t) row's softmax over its first lengths[b] positions, 0 after
    b, t = cuda.grid(2)
    if b >= weights.shape[0] or t >= weights.shape[1]:
        return
    n = lengths[b]
    row = weights[b, t]
    peak = row[0]
    for i in range(1, n):
        peak = max(peak, row[i])
    total = 0.0
    for i in range(n):
        row[i] = math.exp(row[i] - peak)
        total += row[i]
    for i in range(n):
        row[i] /= total
    for i in range(n, row.shape[0]):
        row[i] = 0.0


def attention_softmax(weights, lengths):
    """As ``cpu.attention_softmax``."""
    blocks, threads = _grid(weights.shape[0], weights.shape[1])
    _softmax_rows_kernel[blocks, threads](weights, lengths)


@cuda.jit
def _softmax_rows_backward_kernel(dscores, weights):
    # dscores (B, T, S) in: the weights' gradient; out: the scores' (through the softmax)
    b, t = cuda.grid(2)
    if b >= weights.shape[0] or t >= weights.shape[1]:
        return
    w = weights[b, t]
    dw = dscores[b, t]
    inner = 0.0
    for i in range(w.shape[0]):
        inner += w[i] * dw[i]
    for i in range(w.shape[0]):
        dw[i] = w[i] * (dw[i] - inner)


def attention_context_backward(dscores, dvalues, dcontext, weights, values):
    """As ``cpu.attention_context_backward``."""
    _bmm(dvalues, weights, dcontext, trans_a=True)
    _bmm(dscores, dcontext, values, trans_b=True)
    blocks, threads = _grid(weights.shape[0], weights.shape[1])
    _softmax_rows_backward_kernel[blocks, threads](dscores, weights)


@cuda.jit
def _additive_scores_kernel(scores, queries, keys, v, group):
    # one thread per (b, t) row: scores[b, t, i] = v . tanh(queries[b, t] + keys[b // group, i])
    b, t = cuda.grid(2)
    if b >= scores.shape[0] or t >= scores.shape[1]:
        return
    q = queries[b, t]
    for i in range(scores.shape[2]):
        k = keys[b // group, i]
        total = 0.0
        for a in range(v.shape[0]):
            total += v[a] * math.tanh(q[a] + k[a])
        scores[b, t, i] = total


@cuda.jit
def _additive_backward_kernel(dqueries, dkeys, dv, dscores, queries, keys, v):
    # one thread per (b, t) row; dqueries (B, T, A) written, dkeys and dv added to (atomic:
    # every step of a row reaches the same keys)
    b, t = cuda.grid(2)
    if b >= dscores.shape[0] or t >= dscores.shape[1]:
        return
    q = queries[b, t]
    dq = dqueries[b, t]
    for a in range(dq.shape[0]):
        dq[a] = 0.0
    for i in range(dscores.shape[2]):
        ds = dscores[b, t, i]
        if ds == 0.0:
            continue  # a masked position
        k = keys[b, i]
        for a in range(v.shape[0]):
            th = math.tanh(q[a] + k[a])
            g = ds * v[a] * (1.0 - th * th)
            dq[a] += g
            cuda.atomic.add(dkeys, (b, i, a), g)
            cuda.atomic.add(dv, a, ds * th)


@cuda.jit
def _zero3_kernel(a):
    b, i = cuda.grid(2)
    if b < a.shape[0] and i < a.shape[1]:
        for j in range(a.shape[2]):
            a[b, i, j] = 0.0


def additive_scores(scores, queries, keys, v, group):
    """As ``cpu.additive_scores``."""
    blocks, threads = _grid(scores.shape[0], scores.shape[1])
    _additive_scores_kernel[blocks, threads](scores, queries, keys, v, group)


def additive_scores_backward(dqueries, dkeys, dv, dscores, queries, keys, v):
    """As ``cpu.additive_scores_backward``."""
    blocks, threads = _grid(dkeys.shape[0], dkeys.shape[1])
    _zero3_kernel[blocks, threads](dkeys)
    blocks, threads = _grid(dscores.shape[0], dscores.shape[1])
    _additive_backward_kernel[blocks, threads](dqueries, dkeys, dv, dscores, queries, keys, v)


# --------------------------------------------------------------------------- beam search


@cuda.jit
def _beam_extend_kernel(best, new_scores, logits, scores):
    # one thread per input r (see cpu.beam_extend)
    r, column = cuda.grid(2)
    R, K = scores.shape
    if column != 0 or r >= R:
        return
    V = logits.shape[1]
    top = new_scores[r]
    ids = best[r]
    for j in range(K):
        top[j] = -math.inf
        ids[j] = j
    for h in range(K):
        base = scores[r, h]
        if base == -math.inf:
            continue
        row = logits[r * K + h]
        peak = numba.float64(row[0])
        for v in range(1, V):
            peak = max(peak, numba.float64(row[v]))
        total = 0.0
        for v in range(V):
            total += math.exp(numba.float64(row[v]) - peak)
        log_total = math.log(total)
        for v in range(V):
            value = base + ((numba.float64(row[v]) - peak) - log_total)
            if value > top[K - 1]:
                j = K - 1
                while j > 0 and value > top[j - 1]:
                    top[j] = top[j - 1]
                    ids[j] = ids[j - 1]
                    j -= 1
                top[j] = value
                ids[j] = h * V + v


def beam_extend(best, new_scores, logits, scores):
    """As ``cpu.beam_extend``."""
    blocks, threads = _grid(scores.shape[0], 1)
    _beam_extend_kernel[blocks, threads](best, new_scores, logits, scores)


# --------------------------------------------------------------------------- generation (batch 1)
# One block of SAMPLER_THREADS threads runs the whole loop (cpu.generate_tokens' arithmetic):
# per layer its threads share the gate columns' products, then the units' cell updates, then
# the head's outputs; thread 0 draws the token (the CPU's draw, the same uniforms: the same
# text but where float rounding differs at a tie). The state stays where the arrays are.

SAMPLER_THREADS = 128
CELL_LSTM, CELL_GRU = CELL_TABLE["lstm"].code, CELL_TABLE["gru"].code


@cuda.jit(device=True)
def _advance_block(h, c, token, cell, embed, Wxs, Whs, bxs, bhs, xg, hw):
    # h, c (L, H) in/out: the state after reading token; xg, hw (1, G) workspaces
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    L, H = h.shape
    for layer in range(L):
        Wx, Wh, bx, bh = Wxs[layer], Whs[layer], bxs[layer], bhs[layer]
        G = Wh.shape[1]
        for g in range(tid, G, threads):
            if layer == 0 and embed.shape[0] == 0:
                x = Wx[token, g]  # one-hot input: the token's row
            elif layer == 0:
                x = embed[token, 0] * Wx[0, g]
                for e in range(1, embed.shape[1]):
                    x += embed[token, e] * Wx[e, g]
            else:
                x = h[layer - 1, 0] * Wx[0, g]
                for d in range(1, H):
                    x += h[layer - 1, d] * Wx[d, g]
            xg[0, g] = x + bx[g]
            w = h[layer, 0] * Wh[0, g]
            for k in range(1, H):
                w += h[layer, k] * Wh[k, g]
            hw[0, g] = w
        cuda.syncthreads()  # every product read the old state
        for j in range(tid, H, threads):
            a, w = xg[0], hw[0]
            if cell == CELL_LSTM:
                _, _, _, _, c_j, h_j = lstm_cell(
                    a[j] + w[j] + bh[j],
                    a[H + j] + w[H + j] + bh[H + j],
                    a[2 * H + j] + w[2 * H + j] + bh[2 * H + j],
                    a[3 * H + j] + w[3 * H + j] + bh[3 * H + j],
                    c[layer, j],
                )
                c[layer, j] = c_j
            elif cell == CELL_GRU:
                _, _, _, h_j = gru_cell(
                    a[j],
                    a[H + j],
                    a[2 * H + j],
                    w[j] + bh[j],
                    w[H + j] + bh[H + j],
                    w[2 * H + j] + bh[2 * H + j],
                    h[layer, j],
                )
            else:
                h_j = rnn_cell(a[j] + w[j] + bh[j])
            h[layer, j] = h_j
        cuda.syncthreads()


@cuda.jit(device=True)
def _head_block(logits, h, Wy, by):
    # logits (K) = h[top] @ Wy + by, the block's threads sharing the outputs
    top = h.shape[0] - 1
    for k in range(cuda.threadIdx.x, logits.shape[0], cuda.blockDim.x):
        total = h[top, 0] * Wy[0, k]
        for j in range(1, h.shape[1]):
            total += h[top, j] * Wy[j, k]
        logits[k] = total + by[k]
    cuda.syncthreads()


@cuda.jit(device=True)
def _draw(logits, probs, ranked, u, temperature, top_k, top_p, greedy):
    # cpu.draw_token, on one thread: argmax, or the softmax with temperature, top-k then top-p
    # filtering (ties settled towards the lowest index) and the inverse CDF at u
    K = logits.shape[0]
    best = 0
    for k in range(1, K):
        if logits[k] > logits[best]:
            best = k
    if greedy:
        return best
    peak = logits[best]
    for k in range(K):
        probs[k] = math.exp((logits[k] - peak) / temperature)
    total = 0.0
    for k in range(K):
        total += probs[k]
    for k in range(K):
        probs[k] /= total
    if 0 < top_k < K or top_p < 1.0:
        # ranked: the probabilities in decreasing order (insertion sort: K is a vocabulary)
        for k in range(K):
            value = probs[k]
            r = k
            while r > 0 and ranked[r - 1] < value:
                ranked[r] = ranked[r - 1]
                r -= 1
            ranked[r] = value
        kept = top_k if 0 < top_k < K else K
        if top_p < 1.0:
            total = 0.0
            for r in range(kept):
                total += ranked[r]
            cumulative = 0.0
            for r in range(kept):
                cumulative += ranked[r]
                if cumulative >= top_p * total:
                    kept = r + 1
                    break
        threshold = ranked[kept - 1]
        ties_left = 0
        for r in range(kept):
            if ranked[r] == threshold:
                ties_left += 1
        for k in range(K):
            if probs[k] > threshold:
                continue
            if probs[k] == threshold and ties_left > 0:
                ties_left -= 1
                continue
            probs[k] = 0.0
    total = 0.0
    for k in range(K):
        total += probs[k]
    target = u * total
    cumulative = 0.0
    last = 0
    for k in range(K):
        if probs[k] > 0.0:
            cumulative += probs[k]
            last = k
            if cumulative > target:
                return k
    return last


@cuda.jit
def _generate_kernel(
    out, lengths, logits, h, c, h0, c0, token, uniforms, temperature, top_k, top_p, greedy, stop, cell,
    embed, Wxs, Whs, bxs, bhs, Wy, by, xg, hw, probs, ranked,
):  # fmt: skip
    # S sequences of at most M draws (out (S, M), uniforms (S, M)); each starts from h0, c0
    # when stop >= 0 (generate_until: a sequence ends at the stop token, not stored), or goes
    # on from h, c (generate_tokens: S is 1, stop is -1, h0 and c0 empty, the state is left
    # after the draws)
    shared = cuda.shared.array(2, numba.int64)  # the current token; whether the sequence ended
    tid = cuda.threadIdx.x
    S, M = out.shape
    L, H = h.shape
    for s in range(S):
        if stop >= 0:
            for i in range(tid, L * H, cuda.blockDim.x):
                h[i // H, i % H] = h0[i // H, i % H]
                c[i // H, i % H] = c0[i // H, i % H]
        if tid == 0:
            shared[0] = token
            shared[1] = 0
        cuda.syncthreads()
        n = 0
        while n < M:
            _advance_block(h, c, shared[0], cell, embed, Wxs, Whs, bxs, bhs, xg, hw)
            _head_block(logits, h, Wy, by)
            if tid == 0:
                drawn = _draw(logits, probs, ranked, uniforms[s, n], temperature, top_k, top_p, greedy)
                if drawn == stop:
                    shared[1] = 1
                else:
                    out[s, n] = drawn
                    shared[0] = drawn
            cuda.syncthreads()
            if shared[1] == 1:
                break
            n += 1
        if tid == 0:
            lengths[s] = n
        cuda.syncthreads()


@cuda.jit
def _feed_kernel(logits, h, c, tokens, cell, embed, Wxs, Whs, bxs, bhs, Wy, by, xg, hw):
    # cpu.feed_tokens: the state advanced over tokens; the head's logits after the last
    for t in range(tokens.shape[0]):
        _advance_block(h, c, tokens[t], cell, embed, Wxs, Whs, bxs, bhs, xg, hw)
    if tokens.shape[0] > 0:
        _head_block(logits, h, Wy, by)


def _no_lengths(S):
    return xp.zeros(S, np.int64)


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
    """As ``cpu.generate_tokens``: N draws from h, c (left after them), one block of threads."""
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    N = out.shape[0]
    _generate_kernel[1, SAMPLER_THREADS](
        out.reshape(1, N), _no_lengths(1), logits, h, c, h[:0], c[:0], token,
        uniforms.reshape(1, N), temperature, top_k, top_p, greedy, -1, cell,
        embed, Wxs, Whs, bxs, bhs, Wy, by, xg, hw, probs, ranked,
    )  # fmt: skip


def generate_until(
    out, lengths, logits, h, c, h0, c0, token, uniforms, temperature, top_k, top_p, greedy, stop, cell,
    weights, xg, hw, probs, ranked,
):  # fmt: skip
    """As ``cpu.generate_until``."""
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    _generate_kernel[1, SAMPLER_THREADS](
        out, lengths, logits, h, c, h0, c0, token, uniforms, temperature, top_k, top_p, greedy, stop, cell,
        embed, Wxs, Whs, bxs, bhs, Wy, by, xg, hw, probs, ranked,
    )  # fmt: skip


def feed_tokens(logits, h, c, tokens, cell, weights, xg, hw):
    """As ``cpu.feed_tokens``."""
    embed, Wxs, Whs, bxs, bhs, Wy, by = weights
    _feed_kernel[1, SAMPLER_THREADS](logits, h, c, tokens, cell, embed, Wxs, Whs, bxs, bhs, Wy, by, xg, hw)


# --------------------------------------------------------------------------- gradient norm and optimizers
# Flat (P) buffers, one thread per element; the norm is a tree of per-block partial sums.


@cuda.jit
def _square_sums_kernel(partial, grads):
    # partial (blocks) out: each block's sum of grads[p]**2 (float64), a 1-D grid
    shared = cuda.shared.array(256, numba.float64)
    p = cuda.grid(1)
    tid = cuda.threadIdx.x
    value = 0.0
    if p < grads.shape[0]:
        value = grads[p] * grads[p]
    shared[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            shared[tid] += shared[tid + width]
        cuda.syncthreads()
        width //= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = shared[0]


@cuda.jit
def _scale_kernel(grads, factor):
    p = cuda.grid(1)
    if p < grads.shape[0]:
        grads[p] *= factor


REDUCE_THREADS = 256  # a power of 2, the shared array's size


def _flat_grid(size):
    return max(1, -(-size // REDUCE_THREADS)), REDUCE_THREADS


def global_norm(grads):
    """As ``cpu.global_norm``: the Euclidean norm of grads (P), a host float."""
    blocks, threads = _flat_grid(grads.shape[0])
    partial = xp.zeros(blocks, np.float64)
    _square_sums_kernel[blocks, threads](partial, grads)
    return math.sqrt(float(partial.sum()))


def clip_global_norm(grads, max_norm):
    """As ``cpu.clip_global_norm``: scales grads to a norm of at most max_norm; returns the norm."""
    norm = global_norm(grads)
    if norm > max_norm:
        blocks, threads = _flat_grid(grads.shape[0])
        _scale_kernel[blocks, threads](grads, max_norm / (norm + 1e-6))
    return norm


@cuda.jit
def _adam_kernel(params, grads, m, v, beta1, beta2, eps, step_size, bias2_sqrt):
    p = cuda.grid(1)
    if p < params.shape[0]:
        g = grads[p]
        m[p] = beta1 * m[p] + (1.0 - beta1) * g
        v[p] = beta2 * v[p] + (1.0 - beta2) * g * g
        params[p] -= step_size * m[p] / (math.sqrt(v[p]) / bias2_sqrt + eps)


@cuda.jit
def _adagrad_kernel(params, grads, sum_sq, lr, eps):
    p = cuda.grid(1)
    if p < params.shape[0]:
        g = grads[p]
        sum_sq[p] += g * g
        params[p] -= lr * g / (math.sqrt(sum_sq[p]) + eps)


@cuda.jit
def _rmsprop_kernel(params, grads, mean_sq, lr, alpha, eps):
    p = cuda.grid(1)
    if p < params.shape[0]:
        g = grads[p]
        mean_sq[p] = alpha * mean_sq[p] + (1.0 - alpha) * g * g
        params[p] -= lr * g / (math.sqrt(mean_sq[p]) + eps)


@cuda.jit
def _sgd_kernel(params, grads, velocity, lr, momentum):
    p = cuda.grid(1)
    if p < params.shape[0]:
        velocity[p] = momentum * velocity[p] + grads[p]
        params[p] -= lr * velocity[p]


def adam_update(params, grads, m, v, lr, beta1, beta2, eps, step):
    """As ``cpu.adam_update`` (the bias corrections computed once on the host)."""
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    blocks, threads = _flat_grid(params.shape[0])
    _adam_kernel[blocks, threads](params, grads, m, v, beta1, beta2, eps, lr / bias1, bias2_sqrt)


def adagrad_update(params, grads, sum_sq, lr, eps):
    """As ``cpu.adagrad_update``."""
    blocks, threads = _flat_grid(params.shape[0])
    _adagrad_kernel[blocks, threads](params, grads, sum_sq, lr, eps)


def rmsprop_update(params, grads, mean_sq, lr, alpha, eps):
    """As ``cpu.rmsprop_update``."""
    blocks, threads = _flat_grid(params.shape[0])
    _rmsprop_kernel[blocks, threads](params, grads, mean_sq, lr, alpha, eps)


def sgd_update(params, grads, velocity, lr, momentum):
    """As ``cpu.sgd_update``."""
    blocks, threads = _flat_grid(params.shape[0])
    _sgd_kernel[blocks, threads](params, grads, velocity, lr, momentum)


# The kernels every launcher above compiles, with the argument types of their float32 and
# float64 launches (the PTX test compiles each for real hardware).
def kernel_signatures(dtype):
    """{name: (kernel, numba signature)} of this module's cuda.jit kernels for ``dtype``."""
    from numba import types

    f = numba.from_dtype(np.dtype(dtype))
    m2 = types.Array(f, 2, "C")
    m2a = types.Array(f, 2, "A")
    v = types.Array(f, 1, "C")
    v64 = types.Array(types.float64, 1, "C")
    ids = types.Array(types.intp, 1, "C")
    i, x = types.intp, types.float64
    m3 = types.Array(f, 3, "C")
    layers = types.UniTuple(m2, 2)
    biases = types.UniTuple(v, 2)
    ids64 = types.Array(types.int64, 1, "C")
    draws = types.Array(types.int64, 2, "C")
    b = types.boolean
    generation = (layers, layers, biases, biases, m2, v, m2, m2, v, v)  # ... Wy, by, xg, hw, probs, ranked
    m64 = types.Array(types.float64, 2, "C")
    ids2 = types.Array(types.intp, 2, "C")
    return {
        "_generate_kernel": (
            _generate_kernel,
            (draws, ids64, v, m2, m2, m2, m2, i, types.Array(types.float64, 2, "C"), x, i, x, b, i, i, m2)
            + generation,
        ),
        "_feed_kernel": (_feed_kernel, (v, m2, m2, ids64, i, m2) + generation[:-2]),
        "_softmax_rows_kernel": (_softmax_rows_kernel, (m3, ids)),
        "_softmax_rows_backward_kernel": (_softmax_rows_backward_kernel, (m3, m3)),
        "_additive_scores_kernel": (_additive_scores_kernel, (m3, m3, m3, v, i)),
        "_additive_backward_kernel": (_additive_backward_kernel, (m3, m3, v, m3, m3, m3, v)),
        "_zero3_kernel": (_zero3_kernel, (m3,)),
        "_beam_extend_kernel": (_beam_extend_kernel, (ids2, m64, m2, m64)),
        "_bias_kernel": (_bias_kernel, (m2, v)),
        "_gather_kernel": (_gather_kernel, (m2, ids, m2)),
        "_scatter_add_kernel": (_scatter_add_kernel, (m2, m2, ids)),
        "_softmax_xent_kernel": (_softmax_xent_kernel, (v, m2, m2, ids, x, types.boolean)),
        "_softmax_xent_in_place_kernel": (_softmax_xent_in_place_kernel, (v, m2, ids, x)),
        "_square_sums_kernel": (_square_sums_kernel, (v64, v)),
        "_scale_kernel": (_scale_kernel, (v, x)),
        "_adam_kernel": (_adam_kernel, (v, v, v, v, x, x, x, x, x)),
        "_adagrad_kernel": (_adagrad_kernel, (v, v, v, x, x)),
        "_rmsprop_kernel": (_rmsprop_kernel, (v, v, v, x, x, x)),
        "_sgd_kernel": (_sgd_kernel, (v, v, v, x, x)),
        "_copy_kernel": (_copy_kernel, (m2a, m2a)),
        "_hold_kernel": (_hold_kernel, (m2, m2, i)),
        "_pass_kernel": (_pass_kernel, (m2, m2, m2, i)),
        "_column_sums_kernel": (_column_sums_kernel, (v, m2)),
        "_zero_rows_kernel": (_zero_rows_kernel, (m2, i)),
        "_rnn_step": (_rnn_step, (m2, m2, m2a, v, i)),
        "_rnn_step_backward": (_rnn_step_backward, (m2, m2, m2, m2, i)),
        "_lstm_step": (_lstm_step, (m2, m2, m2, m2, m2a, v, i)),
        "_lstm_step_backward": (_lstm_step_backward, (m2, m2, m2, m2, m2, m2, m2, i)),
        "_gru_step": (_gru_step, (m2, m2, m2, m2, m2a, v, i)),
        "_gru_step_backward": (_gru_step_backward, (m2, m2, m2, m2, m2, m2, m2, i)),
    }
