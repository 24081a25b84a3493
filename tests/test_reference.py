"""Level 1: the plain-numpy reference against finite differences, float64."""

import numpy as np
import pytest

from numrnn import reference as ref
from numrnn.gradcheck import numeric_gradient, relative_error
from tests.helpers import cell_case

REL_TOL = 1e-6


def _cell_objective(cell, case, dhs, dhT, dcT):
    """sum(hs * dhs) + sum(h_T * dhT) (+ sum(c_T * dcT)) and the reference's gradients."""

    def forward():
        if cell == "lstm":
            hs, cs, cache = ref.lstm_forward(
                case["x"], case["h0"], case["c0"], case["Wx"], case["Wh"], case["bx"], case["bh"]
            )
            return np.sum(hs * dhs) + np.sum(hs[-1] * dhT) + np.sum(cs[-1] * dcT), cache
        hs, cache = ref.FORWARD[cell](case["x"], case["h0"], case["Wx"], case["Wh"], case["bx"], case["bh"])
        return np.sum(hs * dhs) + np.sum(hs[-1] * dhT), cache

    _, cache = forward()
    if cell == "lstm":
        grads = ref.lstm_backward(dhs, dhT, dcT, cache)
    else:
        grads = {"rnn": ref.rnn_backward, "gru": ref.gru_backward}[cell](dhs, dhT, cache)
    return (lambda: forward()[0]), grads


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T", [1, 4])
def test_cell_gradients_match_finite_differences(cell, T, rng):
    case = cell_case(cell, rng, T=T, B=2, D=3, H=3)
    dhs = rng.standard_normal((T, 2, 3))
    dhT = rng.standard_normal((2, 3))
    dcT = rng.standard_normal((2, 3))
    objective, grads = _cell_objective(cell, case, dhs, dhT, dcT)
    names = ["x", "h0", "Wx", "Wh", "bx", "bh"] + (["c0"] if cell == "lstm" else [])
    for name in names:
        numeric = numeric_gradient(objective, case[name])
        assert relative_error(grads[name], numeric) < REL_TOL, name


def test_softmax_xent_gradient_matches_finite_differences(rng):
    logits = rng.standard_normal((5, 4))
    targets = np.array([0, 3, -1, 2, 1])  # -1 is ignored
    loss, dlogits = ref.softmax_xent(logits, targets)
    numeric = numeric_gradient(lambda: ref.softmax_xent(logits, targets)[0], logits)
    assert relative_error(dlogits, numeric) < REL_TOL
    assert np.all(dlogits[2] == 0.0)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[[0, 1, 3, 4], [0, 3, 2, 1]]))
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embed", [True, False])
@pytest.mark.parametrize("last_only", [True, False])
def test_model_loss_gradients_match_finite_differences(cell, embed, last_only, rng):
    V, E, H, K, L, T, B = 5, 3, 3, 2, 2, 3, 2
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell] * H
    weights = {
        "Wy": rng.uniform(-1, 1, (H, K if last_only else V)),
        "by": rng.uniform(-1, 1, K if last_only else V),
    }
    if embed:
        weights["embed"] = rng.standard_normal((V, E))
    for layer in range(L):
        width = (E if embed else V) if layer == 0 else H
        weights[f"Wx{layer}"] = rng.uniform(-1, 1, (width, G))
        weights[f"Wh{layer}"] = rng.uniform(-1, 1, (H, G))
        weights[f"bx{layer}"] = rng.uniform(-1, 1, G)
        weights[f"bh{layer}"] = rng.uniform(-1, 1, G)
    tokens = rng.integers(0, V, (T, B))
    targets = rng.integers(0, K, B) if last_only else rng.integers(0, V, (T, B))
    h0 = rng.uniform(-0.5, 0.5, (L, B, H))
    c0 = rng.uniform(-0.5, 0.5, (L, B, H)) if cell == "lstm" else None
    masks = [(rng.random((T, B, H)) < 0.7) / 0.7, None]  # dropout between layers 0 and 1
    _, grads = ref.model_loss(cell, weights, tokens, targets, h0, c0, masks, last_only)

    def objective():
        return ref.model_loss(cell, weights, tokens, targets, h0, c0, masks, last_only)[0]

    tensors = dict(weights, h0=h0)
    if c0 is not None:
        tensors["c0"] = c0
    for name, value in tensors.items():
        assert relative_error(grads[name], numeric_gradient(objective, value)) < REL_TOL, name


@pytest.mark.parametrize("additive", [False, True])
def test_attention_gradients_match_finite_differences(additive, rng):
    B, T, S, A, D = 2, 3, 4, 3, 2
    case = {
        "queries": rng.standard_normal((B, T, A)),
        "keys": rng.standard_normal((B, S, A)),
        "values": rng.standard_normal((B, S, D)),
    }
    if additive:
        case["v"] = rng.standard_normal(A)
    lengths = np.array([4, 2])
    dcontext = rng.standard_normal((B, T, D))

    def objective():
        return np.sum(ref.attention_forward(**case, lengths=lengths)[1] * dcontext)

    weights, _, cache = ref.attention_forward(**case, lengths=lengths)
    assert np.all(weights[1, :, 2:] == 0.0)  # padded positions get no attention
    np.testing.assert_allclose(weights.sum(axis=2), 1.0)
    grads = ref.attention_backward(dcontext, cache)
    assert np.all(grads["values"][1, 2:] == 0.0) and np.all(grads["keys"][1, 2:] == 0.0)
    for name, value in case.items():
        assert relative_error(grads[name], numeric_gradient(objective, value)) < REL_TOL, name
