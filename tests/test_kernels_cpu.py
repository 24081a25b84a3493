"""Level 2 and 4: the CPU kernels against the numpy reference, and chained equals batched."""

import numba
import numpy as np
import pytest

from numrnn import reference as ref
from numrnn.cells import GATES_PER_CELL
from numrnn.kernels import cpu
from tests.helpers import cell_case, recurrence_split

F64_RTOL = 1e-10
F64_ATOL = 1e-12
F32_RTOL = 1e-4
F32_ATOL = 1e-5
CELLS = ["rnn", "lstm", "gru"]


class LayerRun:
    """One cell layer driven through the kernels exactly as model.py drives it."""

    def __init__(self, cell, case, dtype, active=None):
        self.cell = cell
        self.c = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in case.items()}
        self.dtype = dtype
        T, B, _ = self.c["x"].shape
        H = self.c["h0"].shape[1]
        self.T, self.B, self.H, self.G = T, B, H, GATES_PER_CELL[cell] * H
        D = self.c["x"].shape[2]
        self.scratch = np.zeros(max(4096, 2 * H * self.G, 2 * D * self.G, H * B), dtype)
        self.packed = np.zeros(cpu.packed_weight_size(H, self.G, dtype), dtype)
        self.active = np.full(T, B, np.intp) if active is None else np.asarray(active, np.intp)

    def forward(self, h0=None, c0=None):
        c, T, B, H, G = self.c, self.T, self.B, self.H, self.G
        self.hs = np.zeros((T + 1, B, H), self.dtype)
        self.hs[0] = c["h0"] if h0 is None else h0
        self.gates = np.zeros((T, B, G), self.dtype)
        cpu.linear_forward(self.gates.reshape(T * B, G), c["x"].reshape(T * B, -1), c["Wx"], c["bx"])
        self.xg = self.gates.copy()
        hw = np.zeros((B, G), self.dtype)
        if self.cell == "rnn":
            cpu.rnn_forward(self.hs, self.xg, self.active, c["Wh"], c["bh"], hw, self.packed)
        elif self.cell == "lstm":
            self.cs = np.zeros((T + 1, B, H), self.dtype)
            self.cs[0] = c["c0"] if c0 is None else c0
            cpu.lstm_forward(self.hs, self.cs, self.gates, self.active, c["Wh"], c["bh"], hw, self.packed)
        else:
            self.hn = np.zeros((T, B, H), self.dtype)
            cpu.gru_forward(self.hs, self.gates, self.hn, self.active, c["Wh"], c["bh"], hw, self.packed)
        return self

    def backward(self, dhs, dhT, dcT, initial_grad=True, weight_grad=True):
        # without weight_grad the kernels get weight gradients of no rows (the stacked layers'
        # calls): the returned ones stay zero
        c, T, B, H, G = self.c, self.T, self.B, self.H, self.G
        dhs, dhT, dcT = (np.ascontiguousarray(a, self.dtype) for a in (dhs, dhT, dcT))
        g = {name: np.zeros_like(c[name]) for name in ("Wx", "Wh", "bx", "bh")}

        def dW(name):
            return g[name] if weight_grad else np.empty((0,) + g[name].shape[1:], self.dtype)

        dxg = np.zeros((T, B, G), self.dtype)
        g["h0"] = np.zeros((B, H), self.dtype)
        if self.cell == "rnn":
            cpu.rnn_backward(
                dxg,
                g["h0"],
                dW("Wh"),
                dW("bh"),
                dhs,
                dhT,
                self.hs,
                self.active,
                initial_grad,
                c["Wh"],
                self.scratch,
                self.packed,
            )
        elif self.cell == "lstm":
            g["c0"] = np.zeros((B, H), self.dtype)
            cpu.lstm_backward(
                dxg,
                g["h0"],
                g["c0"],
                dW("Wh"),
                dW("bh"),
                dhs,
                dhT,
                dcT,
                self.hs,
                self.cs,
                self.gates,
                self.active,
                initial_grad,
                c["Wh"],
                self.scratch,
                self.packed,
            )
        else:
            cpu.gru_backward(
                dxg,
                g["h0"],
                dW("Wh"),
                dW("bh"),
                dhs,
                dhT,
                self.hs,
                self.gates,
                self.hn,
                self.active,
                initial_grad,
                c["Wh"],
                np.zeros((T, B, G), self.dtype),
                self.scratch,
                self.packed,
            )
        g["x"] = np.zeros_like(c["x"])
        cpu.linear_backward(
            g["x"].reshape(T * B, -1),
            dW("Wx"),
            dW("bx"),
            dxg.reshape(T * B, G),
            c["x"].reshape(T * B, -1),
            c["Wx"],
            self.scratch,
        )
        g["dxg"] = dxg
        return g


def _reference(cell, case, dhs, dhT, dcT):
    args = (case["Wx"], case["Wh"], case["bx"], case["bh"])
    if cell == "lstm":
        hs, cs, cache = ref.lstm_forward(case["x"], case["h0"], case["c0"], *args)
        return hs, cs, cache, ref.lstm_backward(dhs, dhT, dcT, cache)
    hs, cache = ref.FORWARD[cell](case["x"], case["h0"], *args)
    backward = {"rnn": ref.rnn_backward, "gru": ref.gru_backward}[cell]
    return hs, None, cache, backward(dhs, dhT, cache)


def _grads_of_outputs(rng, T, B, H):
    return rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [1, 5])
def test_float64_matches_reference(cell, T, rng):
    case = cell_case(cell, rng, T=T)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, 3, 4)
    hs, cs, cache, grads = _reference(cell, case, dhs, dhT, dcT)
    run = LayerRun(cell, case, np.float64).forward()
    got = run.backward(dhs, dhT, dcT)
    np.testing.assert_allclose(run.hs[1:], hs, rtol=F64_RTOL, atol=F64_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(run.cs[1:], cs, rtol=F64_RTOL, atol=F64_ATOL)
        acts = np.stack([np.concatenate(a, axis=1) for a in cache[7]])
        np.testing.assert_allclose(run.gates, acts, rtol=F64_RTOL, atol=F64_ATOL)
    if cell == "gru":
        steps = cache[5]
        np.testing.assert_allclose(
            run.gates, np.stack([np.concatenate(s[:3], axis=1) for s in steps]), rtol=F64_RTOL, atol=F64_ATOL
        )
        np.testing.assert_allclose(run.hn, np.stack([s[3] for s in steps]), rtol=F64_RTOL, atol=F64_ATOL)
    for name in grads:
        np.testing.assert_allclose(got[name], grads[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_reference(cell, rng):
    case = cell_case(cell, rng, T=6)
    dhs, dhT, dcT = _grads_of_outputs(rng, 6, 3, 4)
    hs, cs, _, grads = _reference(cell, case, dhs, dhT, dcT)
    run = LayerRun(cell, case, np.float32).forward()
    got = run.backward(dhs, dhT, dcT)
    assert run.hs.dtype == np.float32 and got["Wh"].dtype == np.float32
    np.testing.assert_allclose(run.hs[1:], hs, rtol=F32_RTOL, atol=F32_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(run.cs[1:], cs, rtol=F32_RTOL, atol=F32_ATOL)
    for name in grads:
        np.testing.assert_allclose(got[name], grads[name], rtol=F32_RTOL, atol=F32_ATOL, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize(
    "dtype,rtol,atol", [(np.float64, F64_RTOL, F64_ATOL), (np.float32, F32_RTOL, F32_ATOL)]
)
def test_zero_initial_state_matches_reference(cell, T, dtype, rtol, atol, rng):
    """From the zero state the kernels skip the first step's recurrent product and its rows of
    the weight gradient; the results are the reference's."""
    case = cell_case(cell, rng, T=T)
    case["h0"][...] = 0.0
    case["c0"][...] = 0.0
    dhs, dhT, dcT = _grads_of_outputs(rng, T, 3, 4)
    hs, cs, _, grads = _reference(cell, case, dhs, dhT, dcT)
    run = LayerRun(cell, case, dtype).forward()
    got = run.backward(dhs, dhT, dcT)
    np.testing.assert_allclose(run.hs[1:], hs, rtol=rtol, atol=atol)
    if cell == "lstm":
        np.testing.assert_allclose(run.cs[1:], cs, rtol=rtol, atol=atol)
    for name in grads:
        np.testing.assert_allclose(got[name], grads[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [1, 5])
def test_skipping_the_initial_gradient_leaves_the_others_unchanged(cell, T, rng):
    case = cell_case(cell, rng, T=T)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, 3, 4)
    run = LayerRun(cell, case, np.float64).forward()
    wanted = run.backward(dhs, dhT, dcT, initial_grad=True)
    skipped = run.backward(dhs, dhT, dcT, initial_grad=False)
    assert not np.allclose(skipped["h0"], wanted["h0"])  # the skipped product mattered
    for name in ("Wx", "Wh", "bx", "bh", "x", "dxg"):
        np.testing.assert_array_equal(skipped[name], wanted[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[5, 3, 1], [5, 5, 2], [2, 2, 2]])
@pytest.mark.parametrize("initial_grad", [True, False])
def test_rows_that_ended_hold_their_state_and_pass_their_gradient(cell, lengths, initial_grad, rng):
    """Packed sequences: with rows sorted longest first, step t computes only the first
    active[t] rows. Each row then equals the row computed alone over its own length, its
    state holds past its end, and its padded steps get no gradient."""
    T, B = 5, 3
    lengths = np.array(lengths)
    active = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)
    case = cell_case(cell, rng, T=T, B=B)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, B, 4)
    dhs[np.arange(T)[:, None] >= lengths[None, :]] = 0.0  # nothing reaches a padded output
    packed = LayerRun(cell, case, np.float64, active=active).forward()
    got = packed.backward(dhs, dhT, dcT, initial_grad)
    totals = {name: 0.0 for name in ("Wx", "Wh", "bx", "bh")}
    for b, n in enumerate(lengths):
        row = {
            k: v[:n, b : b + 1] if k == "x" else v[b : b + 1] if k in ("h0", "c0") else v
            for k, v in case.items()
        }
        alone = LayerRun(cell, row, np.float64).forward()
        grads = alone.backward(dhs[:n, b : b + 1], dhT[b : b + 1], dcT[b : b + 1], initial_grad)
        np.testing.assert_allclose(packed.hs[1 : n + 1, b], alone.hs[1:, 0], rtol=F64_RTOL, atol=F64_ATOL)
        np.testing.assert_array_equal(packed.hs[n + 1 :, b], np.broadcast_to(packed.hs[n, b], (T - n, 4)))
        if cell == "lstm":
            np.testing.assert_array_equal(packed.cs[n + 1 :, b], np.broadcast_to(packed.cs[n, b], (T - n, 4)))
        np.testing.assert_allclose(got["x"][:n, b], grads["x"][:, 0], rtol=F64_RTOL, atol=F64_ATOL)
        assert not got["dxg"][n:, b].any()
        if initial_grad:
            np.testing.assert_allclose(got["h0"][b], grads["h0"][0], rtol=F64_RTOL, atol=F64_ATOL)
        for name in totals:
            totals[name] = totals[name] + grads[name]
    for name, total in totals.items():
        np.testing.assert_allclose(got[name], total, rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("chunks", [[1] * 6, [2, 4], [3, 1, 2]])
def test_chained_calls_equal_one_call(cell, chunks, rng):
    """Truncated BPTT is repeated calls: chunks with carried state and dh/dc equal one call."""
    T = sum(chunks)
    case = cell_case(cell, rng, T=T)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, 3, 4)
    whole = LayerRun(cell, case, np.float64).forward()
    whole_grads = whole.backward(dhs, dhT, dcT)

    runs, start = [], 0
    h, c = case["h0"], case["c0"]
    for length in chunks:
        part = dict(case, x=case["x"][start : start + length])
        run = LayerRun(cell, part, np.float64).forward(h, c)
        h = run.hs[-1]
        c = run.cs[-1] if cell == "lstm" else c
        runs.append((start, length, run))
        start += length
    chained_hs = np.concatenate([run.hs[1:] for _, _, run in runs])
    np.testing.assert_array_equal(chained_hs, whole.hs[1:])

    carried_h, carried_c = dhT, dcT
    totals = {name: 0.0 for name in ("Wx", "Wh", "bx", "bh")}
    dx = np.zeros_like(case["x"])
    for start, length, run in reversed(runs):
        g = run.backward(dhs[start : start + length], carried_h, carried_c)
        carried_h, carried_c = g["h0"], g.get("c0", carried_c)
        for name in totals:
            totals[name] = totals[name] + g[name]
        dx[start : start + length] = g["x"]
    np.testing.assert_allclose(carried_h, whole_grads["h0"], rtol=F64_RTOL, atol=F64_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(carried_c, whole_grads["c0"], rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(dx, whole_grads["x"], rtol=F64_RTOL, atol=F64_ATOL)
    for name, total in totals.items():
        np.testing.assert_allclose(total, whole_grads[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)


def test_backward_accumulates_into_parameter_gradients(rng):
    case = cell_case("lstm", rng)
    dhs, dhT, dcT = _grads_of_outputs(rng, 4, 3, 4)
    run = LayerRun("lstm", case, np.float64).forward()
    once = run.backward(dhs, dhT, dcT)
    dWh = once["Wh"].copy()
    dbh = once["bh"].copy()
    dxg = np.zeros_like(run.gates)
    cpu.lstm_backward(
        dxg,
        np.zeros((3, 4)),
        np.zeros((3, 4)),
        dWh,
        dbh,
        dhs,
        dhT,
        dcT,
        run.hs,
        run.cs,
        run.gates,
        run.active,
        True,
        run.c["Wh"],
        run.scratch,
        run.packed,
    )
    np.testing.assert_allclose(dWh, 2 * once["Wh"], rtol=F64_RTOL)
    np.testing.assert_allclose(dbh, 2 * once["bh"], rtol=F64_RTOL)


# --------------------------------------------------------------------------- the recurrences on parts
# Past cpu._PARALLEL_WORK a step's product runs on Wh's packed panels, split into parts (one
# numba thread each): runs of the rows when the batch fills them (cpu._PART_ROWS rows a part),
# else parts of the units. The tiny cases above run the plain product. B = 48 is more than four
# tiles of rows and not a multiple of one; H = 70 and 130 leave a ragged last panel.

SPLITS = {"rows": (48, 70), "units": (16, 130)}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("cell", CELLS)
# float32 sums of 48-row products: gradients of a few units carry errors of a few 1e-5
@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, F64_RTOL, F64_ATOL), (np.float32, 1e-3, 2e-4)])
@pytest.mark.parametrize("zero_start", [False, True])
def test_parts_match_reference(split, cell, dtype, rtol, atol, zero_start, rng):
    B, H = SPLITS[split]
    assert recurrence_split(cell, dtype, B, H) == split
    T = 3
    case = cell_case(cell, rng, T=T, B=B, H=H)
    if zero_start:
        case["h0"][...] = 0.0
        case["c0"][...] = 0.0
    dhs, dhT, dcT = _grads_of_outputs(rng, T, B, H)
    hs, cs, _, grads = _reference(cell, case, dhs, dhT, dcT)
    run = LayerRun(cell, case, dtype).forward()
    got = run.backward(dhs, dhT, dcT)
    np.testing.assert_allclose(run.hs[1:], hs, rtol=rtol, atol=atol)
    if cell == "lstm":
        np.testing.assert_allclose(run.cs[1:], cs, rtol=rtol, atol=atol)
    for name in grads:
        np.testing.assert_allclose(got[name], grads[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("cell", CELLS)
def test_parts_hold_the_rows_that_ended(split, cell, rng):
    """Packed sequences on parts: each row equals the row computed alone (the plain product);
    with the split by rows, rows end inside both runs and at their border."""
    B, H = SPLITS[split]
    assert recurrence_split(cell, np.float64, B, H) == split
    T = 3
    lengths = np.sort(rng.integers(1, T + 1, B))[::-1]
    lengths[:2] = T
    lengths[B // 2 - 1 :] = np.minimum(lengths[B // 2 - 1 :], 2)  # one run's last row ends early
    lengths[-3:] = 1
    active = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)
    case = cell_case(cell, rng, T=T, B=B, H=H)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, B, H)
    dhs[np.arange(T)[:, None] >= lengths[None, :]] = 0.0
    packed = LayerRun(cell, case, np.float64, active=active).forward()
    got = packed.backward(dhs, dhT, dcT)
    for b in (0, 7, B // 2 - 1, B // 2, B - 1):
        n = lengths[b]
        row = {
            k: v[:n, b : b + 1] if k == "x" else v[b : b + 1] if k in ("h0", "c0") else v
            for k, v in case.items()
        }
        alone = LayerRun(cell, row, np.float64).forward()
        grads = alone.backward(dhs[:n, b : b + 1], dhT[b : b + 1], dcT[b : b + 1])
        np.testing.assert_allclose(packed.hs[1 : n + 1, b], alone.hs[1:, 0], rtol=F64_RTOL, atol=F64_ATOL)
        assert (packed.hs[n + 1 :, b] == packed.hs[n, b]).all()
        np.testing.assert_allclose(got["x"][:n, b], grads["x"][:, 0], rtol=F64_RTOL, atol=F64_ATOL)
        np.testing.assert_allclose(got["h0"][b], grads["h0"][0], rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here: nothing to split")
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("cell", CELLS)
def test_parts_give_the_same_bits_on_one_thread_or_two(split, cell, rng):
    """The thread governor may change numba's thread count between steps: a result never
    depends on it, so resuming stays bit-exact."""
    B, H = SPLITS[split]
    assert recurrence_split(cell, np.float32, B, H) == split
    T = 4
    case = cell_case(cell, rng, T=T, B=B, H=H)
    dhs, dhT, dcT = _grads_of_outputs(rng, T, B, H)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            run = LayerRun(cell, case, np.float32).forward()
            results.append((run.hs, run.backward(dhs, dhT, dcT)))
    finally:
        numba.set_num_threads(before)
    (hs_one, grads_one), (hs_two, grads_two) = results
    np.testing.assert_array_equal(hs_one, hs_two)
    for name in grads_one:
        np.testing.assert_array_equal(grads_one[name], grads_two[name], err_msg=name)


def _recurrence_on(cell, case, parts, by_rows):
    """A layer's forward and backward (the recurrence alone) on ``parts`` parts, split by rows
    or by units as asked, through the kernels' own parallel functions: (hs, dxg, dh0, dc0)."""
    c = {k: np.ascontiguousarray(v, np.float32) for k, v in case.items()}
    T, B, _ = c["x"].shape
    H = c["h0"].shape[1]
    G = GATES_PER_CELL[cell] * H
    Wh, bh, active = c["Wh"], c["bh"], np.full(T, B, np.intp)
    hs, cs = np.zeros((T + 1, B, H), np.float32), np.zeros((T + 1, B, H), np.float32)
    hs[0], cs[0] = c["h0"], c["c0"]
    gates = (c["x"].reshape(T * B, -1) @ c["Wx"] + c["bx"]).reshape(T, B, G)
    hn, hw = np.zeros((T, B, H), np.float32), np.zeros((B, G), np.float32)
    packed = np.zeros(cpu.packed_weight_size(H, G, np.float32), np.float32)
    cpu.microkernel.pack(packed, Wh, GATES_PER_CELL[cell])
    if by_rows:
        if cell == "rnn":
            cpu._rnn_forward_rows(hs, gates, active, Wh, bh, hw, packed, False, parts)
        elif cell == "lstm":
            cpu._lstm_forward_rows(hs, cs, gates, active, Wh, bh, hw, packed, False, parts)
        else:
            cpu._gru_forward_rows(hs, gates, hn, active, Wh, bh, hw, packed, False, parts)
    else:
        for t in range(T):
            if cell == "rnn":
                cpu._rnn_forward_parts(hs, gates, Wh, bh, hw, packed, t, B, False, parts)
            elif cell == "lstm":
                cpu._lstm_forward_parts(hs, cs, gates, Wh, bh, hw, packed, t, B, False, parts)
            else:
                cpu._gru_forward_parts(hs, gates, hn, Wh, bh, hw, packed, t, B, False, parts)
    rng = np.random.default_rng(1)
    dhs = rng.standard_normal((T, B, H)).astype(np.float32)
    dxg, dhg = np.zeros((T, B, G), np.float32), np.zeros((T, B, G), np.float32)
    dh0, dc0 = rng.standard_normal((B, H)).astype(np.float32), np.zeros((B, H), np.float32)
    scratch = np.zeros(H * max(8 * H, B), np.float32)
    cpu.microkernel.pack(packed, Wh.T, 1)
    if by_rows:
        if cell == "rnn":
            cpu._rnn_backward_rows(dxg, dh0, dhs, hs, active, True, Wh, packed, scratch, parts)
        elif cell == "lstm":
            cpu._lstm_backward_rows(dxg, dh0, dc0, dhs, cs, gates, active, True, Wh, packed, scratch, parts)
        else:
            cpu._gru_backward_rows(
                dxg, dh0, dhs, hs, gates, hn, dhg, active, True, Wh, packed, scratch, parts
            )
        return hs, dxg, dh0, dc0
    for t in [*range(T - 1, -1, -1), -1]:  # t = -1: step 0's product into dh0
        n, m = (B, B if t + 1 < T else 0) if t >= 0 else (0, B)
        if cell == "rnn":
            cpu._rnn_backward_parts(dxg, dh0, dhs, hs, Wh, packed, scratch, t, n, m, parts)
        elif cell == "lstm":
            cpu._lstm_backward_parts(dxg, dh0, dc0, dhs, cs, gates, Wh, packed, scratch, t, n, m, parts)
        else:
            cpu._gru_backward_parts(dxg, dh0, dhs, hs, gates, hn, dhg, Wh, packed, scratch, t, n, m, parts)
    return hs, dxg, dh0, dc0


@pytest.mark.parametrize("cell", CELLS)
def test_any_part_count_or_split_gives_the_same_bits(cell, rng):
    """How many parts a recurrence runs on follows the vector width (machines differ), and
    which split it takes follows Wh's size: every count and both splits give the same bits."""
    T, B, H = 3, 48, 130  # H = 130: 9 panels in float32 with AVX2 (5 with AVX-512), a ragged last
    case = cell_case(cell, rng, T=T, B=B, H=H)
    first = _recurrence_on(cell, case, 2, by_rows=False)
    assert np.isfinite(first[1]).all() and np.abs(first[1]).max() > 0
    for parts, by_rows in [(3, False), (4, False), (2, True), (3, True), (4, True)]:
        for name, a, b in zip(("hs", "dxg", "dh0", "dc0"), first, _recurrence_on(cell, case, parts, by_rows)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, {parts} parts, by rows {by_rows}")


def test_parts_of_128_units_and_large_weights_split_by_units():
    f32 = np.zeros(1, np.float32)
    # a part for every 128 units, two at the least (whatever the vector width)
    assert cpu._part_count(50, 512, 2048, 512, f32) == 4  # C's LSTM layer
    assert cpu._part_count(64, 1024, 4096, 1024, f32) == 8  # D's
    assert cpu._part_count(50, 128, 512, 128, f32) == 2  # B's
    # runs of rows while Wh stays near (C's 4 MB LSTM weight), parts of units past it (D's 16 MB)
    assert cpu._by_rows(50, 4, np.zeros((512, 2048), np.float32))
    assert not cpu._by_rows(64, 8, np.zeros((1024, 4096), np.float32))
    assert not cpu._by_rows(64, 2, np.zeros((1024, 4096), np.float32))
    assert not cpu._by_rows(39, 4, np.zeros((512, 2048), np.float32))  # fewer than 10 rows a part


@pytest.mark.parametrize("cell", CELLS)
def test_the_splits_give_the_same_bits(cell, rng):
    """Runs of rows and parts of units compute each output as the same chain of multiply-adds:
    a batch split by rows equals its halves run alone (too few rows to split by rows; by
    units), bit for bit."""
    B, H = 48, 130
    case = cell_case(cell, rng, T=4, B=B, H=H)
    assert recurrence_split(cell, np.float32, B, H) == "rows"
    whole = LayerRun(cell, case, np.float32).forward()
    for rows in (slice(0, 12), slice(36, 48)):
        half = {k: v[:, rows] if k == "x" else v[rows] if k in ("h0", "c0") else v for k, v in case.items()}
        assert recurrence_split(cell, np.float32, 12, H) == "units"
        alone = LayerRun(cell, half, np.float32).forward()
        np.testing.assert_array_equal(whole.hs[:, rows], alone.hs)


# --------------------------------------------------------------------------- the other kernels


@pytest.mark.parametrize("dtype,rtol", [(np.float64, F64_RTOL), (np.float32, F32_RTOL)])
def test_linear_matches_reference(dtype, rtol, rng):
    x, W, b, dy = (rng.standard_normal(s).astype(dtype) for s in [(7, 5), (5, 3), (3,), (7, 3)])
    y = np.zeros((7, 3), dtype)
    cpu.linear_forward(y, x, W, b)
    np.testing.assert_allclose(y, ref.linear_forward(x, W, b), rtol=rtol, atol=rtol)
    dx, dW, db = np.zeros_like(x), np.ones_like(W), np.ones_like(b)  # ones: backward accumulates
    cpu.linear_backward(dx, dW, db, dy, x, W, np.zeros(64, dtype))
    expected = ref.linear_backward(dy.astype(np.float64), x, W)
    np.testing.assert_allclose(dx, expected["x"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dW, expected["W"] + 1, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(db, expected["b"] + 1, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, F64_RTOL), (np.float32, F32_RTOL)])
@pytest.mark.parametrize("T,B,D,H", [(3, 2, 4, 5), (10, 20, 24, 32)], ids=["whole", "two-parts"])
def test_stacked_weight_grads_match_two_products(T, B, D, H, dtype, rtol, rng):
    # A stacked layer's [x_t | h_{t-1}] product equals the input's and the recurrence's own
    # (the larger shape runs on two parts: cpu._dense_parts); the gradients accumulate.
    G = 4 * H
    x, hs, dpre = (rng.standard_normal(s).astype(dtype) for s in [(T, B, D), (T + 1, B, H), (T, B, G)])
    assert cpu._dense_parts(T * B, D + H, G) == (2 if T == 10 else 1)
    dWx, dWh, dbx, dbh = (np.ones(s, dtype) for s in [(D, G), (H, G), G, G])
    scratch = np.full(2 * (D + H + 1) * G, np.nan, dtype)  # overwritten before it is read
    joined = np.full(T * B * (D + H), np.nan, dtype)
    cpu.stacked_weight_grads(dWx, dbx, dWh, dbh, x, hs, dpre, scratch, joined)
    rows = dpre.reshape(T * B, G).astype(np.float64)
    np.testing.assert_allclose(dWx, x.reshape(T * B, D).T @ rows + 1, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dWh, hs[:T].reshape(T * B, H).T @ rows + 1, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dbx, rows.sum(axis=0) + 1, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(dbh, dbx)


@pytest.mark.parametrize("cell", CELLS)
def test_weight_gradients_of_no_rows_are_skipped(cell, rng):
    # The stacked layers' calls (layers.py): a cell backward given dWh of no rows and
    # linear_backward given dW of no rows add no weight or bias gradient and compute the rest.
    case = cell_case(cell, rng)
    dhs, dhT, dcT = _grads_of_outputs(rng, 4, 3, 4)
    run = LayerRun(cell, case, np.float64).forward()
    whole = run.backward(dhs, dhT, dcT)
    skipped = run.backward(dhs, dhT, dcT, weight_grad=False)
    for name in ("Wx", "Wh", "bx", "bh"):
        assert not skipped[name].any(), name
        assert whole[name].any(), name
    for name in ("dxg", "h0", "x") + (("c0",) if cell == "lstm" else ()):
        np.testing.assert_array_equal(skipped[name], whole[name], err_msg=name)


def test_embedding_and_onehot_projection_match_reference(rng):
    V, E, N = 6, 4, 9
    W = rng.standard_normal((V, E))
    tokens = rng.integers(0, V, N)
    out = np.zeros((N, E))
    cpu.embed_forward(out, tokens, W)
    np.testing.assert_array_equal(out, ref.embed_forward(tokens, W))
    np.testing.assert_allclose(out, ref.onehot(tokens, V) @ W, rtol=F64_RTOL)
    dout = rng.standard_normal((N, E))
    dW = np.zeros((V, E))
    cpu.embed_backward(dW, dout, tokens)
    np.testing.assert_allclose(dW, ref.embed_backward(dout, tokens, V), rtol=F64_RTOL)
    b, db = rng.standard_normal(E), np.zeros(E)
    shifted = out.copy()
    cpu.bias_forward(shifted, b)
    np.testing.assert_allclose(shifted, out + b, rtol=F64_RTOL)
    cpu.bias_backward(db, dout)
    np.testing.assert_allclose(db, dout.sum(axis=0), rtol=F64_RTOL)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, F64_RTOL), (np.float32, F32_RTOL)])
def test_softmax_xent_matches_reference(dtype, rtol, rng):
    logits = (rng.standard_normal((6, 5)) * 4).astype(dtype)
    targets = np.array([0, 4, -1, 2, 2, 1])
    expected_loss, expected_grad = ref.softmax_xent(logits.astype(np.float64), targets)
    losses = np.zeros(6, dtype)
    cpu.softmax_xent_forward(losses, logits, targets)
    assert losses[2] == 0.0
    assert losses.sum() / 5 == pytest.approx(expected_loss, rel=rtol)
    fused_losses, dlogits = np.zeros(6, dtype), np.zeros_like(logits)
    cpu.softmax_xent_fused(fused_losses, dlogits, logits, targets, 1.0 / 5)
    np.testing.assert_allclose(fused_losses, losses, rtol=rtol)
    np.testing.assert_allclose(dlogits, expected_grad, rtol=rtol, atol=rtol)
    in_place = logits.copy()
    cpu.softmax_xent_fused(fused_losses, in_place, in_place, targets, 1.0 / 5)
    np.testing.assert_allclose(in_place, expected_grad, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fused_losses, losses, rtol=rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, F64_RTOL), (np.float32, F32_RTOL)])
def test_softmax_xent_fused_splits_large_batches_without_changing_a_bit(dtype, rtol, rng):
    # Above _PARALLEL_LOSS_WORK the rows are split between two threads; an odd row count puts
    # the split inside the batch and an ignored row on each side.
    N, V = 401, 65
    assert N * V >= cpu._PARALLEL_LOSS_WORK
    logits = (rng.standard_normal((N, V)) * 4).astype(dtype)
    targets = rng.integers(0, V, N)
    targets[[3, 250]] = -1
    split, split_losses = logits.copy(), np.zeros(N, dtype)
    cpu.softmax_xent_fused(split_losses, split, split, targets, 1.0 / N)
    whole, whole_losses = logits.copy(), np.zeros(N, dtype)
    cpu._softmax_xent_in_place(whole_losses, whole, targets, 1.0 / N, 0, N)
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_array_equal(split_losses, whole_losses)
    expected_loss, expected_grad = ref.softmax_xent(logits.astype(np.float64), targets)
    assert split_losses.sum() / (N - 2) == pytest.approx(expected_loss, rel=rtol)
    np.testing.assert_allclose(split * N / (N - 2), expected_grad, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embed_forward_splits_large_lookups_without_changing_a_bit(dtype, rng):
    # From _PARALLEL_COPY_WORK elements the rows are copied on two threads; an odd row count
    # puts the split inside the batch.
    V, E, N = 7, 128, 1_201
    assert N * E >= cpu._PARALLEL_COPY_WORK
    W = rng.standard_normal((V, E)).astype(dtype)
    tokens = rng.integers(0, V, N)
    out = np.full((N, E), np.nan, dtype)
    cpu.embed_forward(out, tokens, W)
    np.testing.assert_array_equal(out, ref.embed_forward(tokens, W))


def test_softmax_xent_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]])
    losses = np.zeros(1)
    cpu.softmax_xent_forward(losses, logits, np.array([1]))
    assert losses[0] == pytest.approx(1000.0)


def test_clip_global_norm(rng):
    grads = rng.standard_normal(50)
    norm = float(np.linalg.norm(grads))
    assert cpu.global_norm(grads) == pytest.approx(norm, rel=F64_RTOL)
    small = grads.copy()
    assert cpu.clip_global_norm(small, norm * 2) == pytest.approx(norm, rel=F64_RTOL)
    np.testing.assert_array_equal(small, grads)  # under the limit: untouched
    clipped = grads.copy()
    cpu.clip_global_norm(clipped, 1.0)
    assert np.linalg.norm(clipped) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), grads / norm, rtol=F64_RTOL)


# --------------------------------------------------------------------------- attention


def _attention_case(rng, dtype, B=3, T=4, S=5, A=6, D=4):
    u = lambda *shape: rng.uniform(-1.0, 1.0, shape).astype(dtype)  # noqa: E731
    return u(B, T, A), u(B, S, A), u(B, S, D), u(A), u(B, T, D), np.array([5, 3, 1])


def _kernel_attention(queries, keys, values, v, dcontext, lengths, additive):
    B, T, _ = queries.shape
    S, D = values.shape[1:]
    weights = np.zeros((B, T, S), queries.dtype)
    if additive:
        cpu.additive_scores(weights, queries, keys, v, 1)
    else:
        cpu.attention_scores(weights, queries, keys, 1)
    cpu.attention_softmax(weights, lengths)
    context = np.zeros((B, T, D), queries.dtype)
    cpu.attention_context(context, weights, values, 1)
    dscores, dvalues = np.zeros_like(weights), np.zeros_like(values)
    cpu.attention_context_backward(dscores, dvalues, dcontext, weights, values)
    dqueries, dkeys = np.zeros_like(queries), np.zeros_like(keys)
    grads = {"values": dvalues}
    if additive:
        grads["v"] = np.ones_like(v)  # accumulates: starts at 1
        cpu.additive_scores_backward(dqueries, dkeys, grads["v"], dscores, queries, keys, v)
        grads["v"] -= 1.0
    else:
        cpu.attention_scores_backward(dqueries, dkeys, dscores, queries, keys)
    grads.update(queries=dqueries, keys=dkeys)
    return weights, context, grads


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize(
    "dtype,rtol,atol", [(np.float64, F64_RTOL, F64_ATOL), (np.float32, F32_RTOL, F32_ATOL)]
)
@pytest.mark.parametrize("T", [4, 1])  # T 1: step decoding's loops instead of BLAS
def test_attention_matches_reference(additive, dtype, rtol, atol, T, rng):
    queries, keys, values, v, dcontext, lengths = _attention_case(rng, dtype, T=T)
    weights, context, grads = _kernel_attention(queries, keys, values, v, dcontext, lengths, additive)
    as64 = lambda a: a.astype(np.float64)  # noqa: E731
    ref_weights, ref_context, cache = ref.attention_forward(
        as64(queries), as64(keys), as64(values), lengths, as64(v) if additive else None
    )
    np.testing.assert_allclose(weights, ref_weights, rtol=rtol, atol=atol)
    np.testing.assert_allclose(context, ref_context, rtol=rtol, atol=atol)
    assert np.all(weights[2, :, 1:] == 0.0)  # a row of length 1 attends only to its first position
    expected = ref.attention_backward(as64(dcontext), cache)
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, expected[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, F64_RTOL), (np.float32, F32_RTOL)])
def test_matmul_matches_reference(dtype, rtol, rng):
    x, W, dy = (rng.standard_normal(s).astype(dtype) for s in [(7, 5), (5, 3), (7, 3)])
    y = np.zeros((7, 3), dtype)
    cpu.matmul(y, x, W)
    np.testing.assert_allclose(y, x @ W, rtol=rtol, atol=rtol)
    dx, dW = np.full_like(x, np.nan), np.ones_like(W)  # dx is overwritten, dW accumulates
    cpu.matmul_backward(dx, dW, dy, x, W, np.zeros(15, dtype))
    expected = ref.linear_backward(dy.astype(np.float64), x.astype(np.float64), W.astype(np.float64))
    np.testing.assert_allclose(dx, expected["x"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dW, 1.0 + expected["W"], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_beam_extend_matches_reference(dtype, rng):
    R, K, V = 4, 3, 7
    logits = (3 * rng.standard_normal((R * K, V))).astype(dtype)
    scores = -rng.uniform(0, 5, (R, K))
    scores[1, 1:] = -np.inf  # a row with one live hypothesis
    scores[2, 0] = -np.inf  # a dead slot before live ones
    best, new_scores = np.full((R, K), -1, np.intp), np.full((R, K), np.nan)
    cpu.beam_extend(best, new_scores, logits, scores)
    ref_best, ref_scores = ref.beam_extend(logits, scores)
    np.testing.assert_array_equal(best, ref_best)
    np.testing.assert_allclose(new_scores, ref_scores, rtol=1e-12)
    # Fewer than K extensions (V = 2 < K with one live hypothesis): -inf after the real ones.
    cpu.beam_extend(best[:1, :], new_scores[:1, :], logits[:K, :2], np.array([[0.0, -np.inf, -np.inf]]))
    assert np.isfinite(new_scores[0, :2]).all() and new_scores[0, 2] == -np.inf
    assert sorted(best[0, :2]) == [0, 1]


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("T", [3, 1])
def test_grouped_attention_equals_repeated_sources(additive, T, rng):
    """group rows of queries reading one source row each (a beam's hypotheses) equal the
    same sources repeated group times."""
    group = 3
    queries, keys, values, v, _, lengths = _attention_case(rng, np.float64, B=6, T=T)
    keys, values, lengths = keys[:2], values[:2], np.repeat([5, 2], group)
    outputs = []
    for g, (k, vals) in (
        (group, (keys, values)),
        (1, (np.repeat(keys, group, 0), np.repeat(values, group, 0))),
    ):
        weights = np.zeros((6, T, 5))
        if additive:
            cpu.additive_scores(weights, queries, k, v, g)
        else:
            cpu.attention_scores(weights, queries, k, g)
        cpu.attention_softmax(weights, lengths)
        context = np.zeros((6, T, values.shape[2]))
        cpu.attention_context(context, weights, vals, g)
        outputs.append((weights, context))
    for grouped, repeated in zip(*outputs):
        np.testing.assert_allclose(grouped, repeated, rtol=1e-12, atol=1e-14)
