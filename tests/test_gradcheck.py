"""The gradcheck API: it passes on the real kernels and catches a broken backward."""

import math
import types

import numpy as np
import pytest

from numrnn.gradcheck import (
    DEFAULT_TOLERANCE,
    numeric_gradient,
    relative_error,
    ridders_derivative,
    run_gradcheck,
)
from numrnn.kernels import cpu


def test_every_cell_layer_and_loss_passes():
    report = run_gradcheck(seed=0)
    combos = {(row.cell, row.layers, row.loss) for row in report.rows}
    losses = ("lm", "classify", "classify-bi", "one-to-one", "generate")
    losses += ("translate", "translate-dot", "translate-general", "translate-additive")
    assert combos == {(c, l, s) for c in ("rnn", "lstm", "gru") for l in (1, 2) for s in losses}
    tensors = {
        row.tensor for row in report.rows if row.cell == "lstm" and row.layers == 2 and row.loss == "generate"
    }
    assert {"embed.weight", "rnn.weight_hh_l1", "cond.h0", "cond.c0", "cond.input"} <= tensors
    assert "h0" not in tensors  # the initial state is cond.h0's rows, checked as parameters
    tensors = {
        row.tensor for row in report.rows if row.cell == "lstm" and row.layers == 2 and row.loss == "lm"
    }
    assert {"embed.weight", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "head.bias", "h0", "c0"} <= tensors
    tensors = {row.tensor for row in report.rows if row.layers == 2 and row.loss == "classify-bi"}
    assert {"embed.weight", "rnn.weight_ih_l1_reverse", "rnn.weight_hh_l0_reverse", "h0"} <= tensors
    tensors = {row.tensor for row in report.rows if row.cell == "lstm" and row.layers == 2}
    assert {
        "attention.weight",
        "attention.key",
        "attention.query",
        "attention.v",
        "combine.weight",
    } <= tensors
    assert {"encoder.rnn.weight_hh_l1_reverse", "bridge.h.weight", "bridge.c.weight"} <= tensors
    assert {"decoder.embed.weight", "decoder.rnn.weight_hh_l1", "encoder.embed.weight"} <= tensors
    assert report.ok
    assert report.worst() < DEFAULT_TOLERANCE
    assert all(row.max_abs_error < 1e-10 for row in report.rows)


def _broken_kernels(name, wrap):
    """The CPU kernel module with one function replaced by ``wrap(original)``."""
    broken = types.SimpleNamespace(**{k: getattr(cpu, k) for k in dir(cpu) if not k.startswith("__")})
    setattr(broken, name, wrap(getattr(cpu, name)))
    return broken


def test_a_flipped_sign_in_a_backward_is_caught():
    def flip_recurrent_bias(original):
        def rnn_backward(dxg, dh0, dWh, dbh, *rest):
            before = dbh.copy()
            original(dxg, dh0, dWh, dbh, *rest)
            dbh[...] = before - (dbh - before)  # the bias gradient with its sign flipped

        return rnn_backward

    report = run_gradcheck(cells=("rnn",), kernels=_broken_kernels("rnn_backward", flip_recurrent_bias))
    assert not report.ok
    failing = {row.tensor for row in report.rows if not row.ok}
    assert {"rnn.bias_hh_l0", "encoder.rnn.bias_hh_l0", "decoder.rnn.bias_hh_l0"} <= failing
    assert all(name.split(".")[-1].startswith("bias_hh_l") for name in failing), failing
    assert all(row.max_rel_error > 0.1 for row in report.rows if not row.ok)


def test_a_wrong_initial_state_gradient_is_caught():
    def drop_carry(original):
        def lstm_backward(dgates, dh0, dc0, *rest):
            original(dgates, dh0, dc0, *rest)
            dc0 *= 0.5

        return lstm_backward

    report = run_gradcheck(
        cells=("lstm",),
        layer_counts=(1,),
        losses=("lm",),
        kernels=_broken_kernels("lstm_backward", drop_carry),
    )
    assert [row.tensor for row in report.rows if not row.ok] == ["c0"]


def test_relative_error_definition():
    assert relative_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert relative_error([1.0], [-1.0]) == 1.0
    assert relative_error([2.0], [1.0]) == pytest.approx(1 / 3)
    assert relative_error([1e-13], [0.0]) == pytest.approx(1e-6)  # floor 1e-7 in the denominator
    assert relative_error([1e-8], [2e-8]) == pytest.approx(0.1)  # a real error of a tiny element fails


def test_ridders_derivative_is_accurate():
    x = np.array([0.7, -1.3])
    f = lambda: math.sin(x[0]) * math.exp(x[1])  # noqa: E731
    assert ridders_derivative(f, x, (0,)) == pytest.approx(math.cos(0.7) * math.exp(-1.3), rel=1e-12)
    grad = numeric_gradient(f, x)
    np.testing.assert_allclose(
        grad, [math.cos(0.7) * math.exp(-1.3), math.sin(0.7) * math.exp(-1.3)], rtol=1e-12
    )
    np.testing.assert_array_equal(x, [0.7, -1.3])  # restored


def test_rows_report_json_shape():
    report = run_gradcheck(cells=("gru",), layer_counts=(1,), losses=("classify",))
    data = report.to_dict()
    assert data["ok"] is True
    assert set(data["rows"][0]) == {
        "cell",
        "layers",
        "loss",
        "tensor",
        "max_rel_error",
        "max_abs_error",
        "ok",
    }
    assert [r["tensor"] for r in data["rows"]] == [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",
        "head.weight",
        "head.bias",
        "h0",
    ]
