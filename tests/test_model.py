"""model.py and params.py: stacking, dropout, input paths and losses against the reference."""

import numpy as np
import pytest

from numrnn import reference as ref
from numrnn.errors import ConfigError
from numrnn.model import Model, ModelConfig, State
from numrnn.params import from_torch, to_torch
from numrnn.tasks.classify import Classifier

F64_RTOL = 1e-10
F64_ATOL = 1e-12
F32_RTOL = 1e-4
CELLS = ["rnn", "lstm", "gru"]


def reference_weights(model, views=None):
    """The model's weights (or other named views, e.g. its gradients) under
    reference.model_loss's names."""
    w = model.weights if views is None else views
    out = {"Wy": w["head.weight"], "by": w["head.bias"]}
    if "embed.weight" in w:
        out["embed"] = w["embed.weight"]
    for layer in range(model.config.layers):
        for mine, theirs in (("weight_ih", "Wx"), ("weight_hh", "Wh"), ("bias_ih", "bx"), ("bias_hh", "bh")):
            out[f"{theirs}{layer}"] = w[f"rnn.{mine}_l{layer}"]
    return out


def make_case(cell, rng, layers=2, embed=4, last_only=False, dropout=0.0, dtype=np.float64, T=5, B=3):
    V, K = 7, 3
    config = ModelConfig(
        cell=cell,
        vocab_size=V,
        hidden=4,
        layers=layers,
        embed=embed,
        output_size=K if last_only else 0,
        dropout=dropout,
    )
    model = (Classifier if last_only else Model)(config, dtype).init_weights(rng)
    tokens = rng.integers(0, V, (T, B))
    targets = rng.integers(0, K, B) if last_only else rng.integers(0, V, (T, B))
    state = model.zero_state(B)
    state.h[...] = rng.uniform(-0.5, 0.5, state.h.shape)
    if state.c is not None:
        state.c[...] = rng.uniform(-0.5, 0.5, state.c.shape)
    return model, tokens, targets, state


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("embed", [0, 4])
@pytest.mark.parametrize("last_only", [False, True])
# V = 7: with 5 x 3 rows layer 0 reads an embedding through the (V, G) lookup table, with
# 2 x 3 rows it multiplies the looked-up embeddings; a batch of 9 is wider than the rnn's
# gates (the backward's (H, B) workspace outgrows the (H, G) one).
@pytest.mark.parametrize("T, B, table", [(5, 3, True), (2, 3, False), (4, 9, True)])
def test_loss_and_gradients_match_reference(cell, layers, embed, last_only, T, B, table, rng):
    model, tokens, targets, state = make_case(cell, rng, layers, embed, last_only, T=T, B=B)
    result = model.loss_and_grad(tokens, targets, state=state)
    stack = model._workspace(T, B).stack
    assert stack.embedding[0].table == (table and embed > 0)
    # a stacked LSTM layer's two weight gradients run as one product (stacked_weight_grads)
    assert (stack.joined is not None) == (cell == "lstm" and layers > 1)
    loss, grads = ref.model_loss(
        cell, reference_weights(model), tokens, targets, state.h, state.c, last_only=last_only
    )
    assert result.loss == pytest.approx(loss, rel=F64_RTOL)
    mine = reference_weights(model, model.dweights)
    for name, grad in mine.items():
        np.testing.assert_allclose(grad, grads[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)
    np.testing.assert_allclose(result.dstate.h, grads["h0"], rtol=F64_RTOL, atol=F64_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(result.dstate.c, grads["c0"], rtol=F64_RTOL, atol=F64_ATOL)
    # Evaluation gives the same loss and final state without touching the gradients.
    before = model.grads.copy()
    evaluated = model.loss(tokens, targets, state=state)
    assert evaluated.loss == pytest.approx(result.loss, rel=F64_RTOL)
    np.testing.assert_array_equal(evaluated.state.h, result.state.h)
    np.testing.assert_array_equal(model.grads, before)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_matches_reference_with_the_same_masks(cell, rng):
    model, tokens, targets, state = make_case(cell, rng, layers=3, dropout=0.4)
    result = model.loss_and_grad(tokens, targets, state, train=True, rng=np.random.default_rng(5))
    masks = [m.copy() for m in model._workspace(*tokens.shape).stack.masks] + [None]
    assert all(np.isin(m, [0.0, 1 / 0.6]).all() for m in masks[:-1])
    loss, grads = ref.model_loss(cell, reference_weights(model), tokens, targets, state.h, state.c, masks)
    assert result.loss == pytest.approx(loss, rel=F64_RTOL)
    np.testing.assert_allclose(model.dweights["rnn.weight_ih_l0"], grads["Wx0"], rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(result.dstate.h, grads["h0"], rtol=F64_RTOL, atol=F64_ATOL)
    # Without train=True there is no dropout.
    plain = model.loss(tokens, targets, state).loss
    assert plain == pytest.approx(
        ref.model_loss(cell, reference_weights(model), tokens, targets, state.h, state.c)[0], rel=F64_RTOL
    )


@pytest.mark.parametrize("cell", CELLS)
def test_float32_model_close_to_float64(cell, rng):
    model64, tokens, targets, state = make_case(cell, rng)
    model32 = Model(model64.config, np.float32)
    model32.params[...] = model64.params
    r64 = model64.loss_and_grad(tokens, targets, state)
    state32 = State(state.h.astype(np.float32), None if state.c is None else state.c.astype(np.float32))
    r32 = model32.loss_and_grad(tokens, targets, state32)
    assert model32.grads.dtype == np.float32
    assert r32.loss == pytest.approx(r64.loss, rel=F32_RTOL)
    np.testing.assert_allclose(model32.grads, model64.grads, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_across_calls_equals_one_call(cell, rng):
    model, tokens, targets, state = make_case(cell, rng, T=6)
    whole = model.loss_and_grad(tokens, targets, state)
    whole_grads = model.grads.copy()
    # Two chunks: the state goes forward, the state's gradient comes back; each chunk's mean
    # is over its own half, so halve to match the whole mean.
    first = model.loss(tokens[:3], targets[:3], state)
    second = model.loss_and_grad(tokens[3:], targets[3:], first.state)
    grads_second = model.grads.copy()
    model.loss_and_grad(tokens[:3], targets[:3], state, dstate=second.dstate)
    total = (model.grads + grads_second) / 2
    np.testing.assert_allclose(total, whole_grads, rtol=1e-9, atol=F64_ATOL)
    assert (first.loss + second.loss) / 2 == pytest.approx(whole.loss, rel=F64_RTOL)
    np.testing.assert_array_equal(second.state.h, whole.state.h)


def test_ignored_targets_do_not_count(rng):
    model, tokens, targets, state = make_case("gru", rng)
    masked = targets.copy()
    masked[0] = -1
    loss, _ = ref.model_loss("gru", reference_weights(model), tokens, masked, state.h)
    assert model.loss_and_grad(tokens, masked, state).loss == pytest.approx(loss, rel=F64_RTOL)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("zero_start", [False, True])
def test_without_the_state_gradient_the_parameter_gradients_are_unchanged(cell, last_only, zero_start, rng):
    """state_grad=False (a training step) skips the initial state's gradient, nothing else."""
    model, tokens, targets, state = make_case(cell, rng, layers=2, last_only=last_only)
    if zero_start:
        state = model.zero_state(tokens.shape[1])
    wanted = model.loss_and_grad(tokens, targets, state=state)
    grads = model.grads.copy()
    skipped = model.loss_and_grad(tokens, targets, state=state, state_grad=False)
    assert skipped.dstate is None and wanted.dstate is not None
    assert skipped.loss == wanted.loss
    np.testing.assert_array_equal(model.grads, grads)


def test_gradients_accumulate_unless_zeroed(rng):
    model, tokens, targets, state = make_case("lstm", rng)
    model.loss_and_grad(tokens, targets, state)
    once = model.grads.copy()
    model.loss_and_grad(tokens, targets, state, zero_grad=False)
    np.testing.assert_allclose(model.grads, 2 * once, rtol=F64_RTOL)


def test_torch_layout_round_trip(rng):
    model, *_ = make_case("gru", rng)
    tensors = to_torch(model.weights)
    assert tensors["rnn.weight_ih_l0"].shape == (12, 4)  # (3H, E) as in torch.nn.GRU
    assert tensors["head.weight"].shape == (7, 4)  # (V, H) as in torch.nn.Linear
    assert tensors["embed.weight"].shape == (7, 4)
    other = Model(model.config, np.float64)
    from_torch(other.weights, tensors)
    np.testing.assert_array_equal(other.params, model.params)


@pytest.mark.parametrize(
    "field,value",
    [
        ("cell", "transformer"),
        ("hidden", 0),
        ("layers", 0),
        ("embed", -1),
        ("dropout", 1.0),
        ("vocab_size", 0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        Model(ModelConfig(**{field: value}))


def test_dropout_training_needs_an_rng(rng):
    model, tokens, targets, state = make_case("rnn", rng, dropout=0.5)
    with pytest.raises(ValueError, match="rng"):
        model.loss_and_grad(tokens, targets, state, train=True)


def test_attention_is_for_translators():
    with pytest.raises(ConfigError, match="translator"):
        Model(ModelConfig(attention="dot"))


# --------------------------------------------------------------------------- devices


def test_devices_resolve_without_a_silent_fallback(monkeypatch):
    """cpu is the CPU; cuda is cuda, or a DeviceError saying why; auto is the GPU only when
    one is usable, else the CPU with the reason (None when numba-cuda is not installed)."""
    import sys

    from numrnn import kernels
    from numrnn.errors import DeviceError
    from numrnn.kernels import cpu

    assert kernels.resolve_device("cpu") == ("cpu", None) and kernels.get_backend("cpu") is cpu
    assert kernels.resolve_device("cuda") == ("cuda", None)
    with pytest.raises(DeviceError, match="unknown device 'tpu'; choose one of: auto, cpu, cuda"):
        kernels.resolve_device("tpu")
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(kernels, "_has_numba_cuda", lambda: False)
    assert kernels.resolve_device("auto") == ("cpu", None)
    with pytest.raises(DeviceError, match=r"needs numba-cuda and CuPy: pip install 'numrnn\[cuda\]'"):
        kernels.get_backend("cuda")
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
    from numba import cuda

    monkeypatch.setattr(kernels, "_has_numba_cuda", lambda: True)
    monkeypatch.setattr(kernels, "_driver_present", lambda: False)  # (asked before numba-cuda)
    assert kernels.resolve_device("auto") == (
        "cpu",
        "no CUDA GPU found (no NVIDIA driver: libcuda cannot be loaded)",
    )
    with pytest.raises(DeviceError, match=r"^no CUDA GPU found \(no NVIDIA driver.* --device cpu$"):
        kernels.get_backend("cuda")
    monkeypatch.setattr(kernels, "_driver_present", lambda: True)  # a driver, but no GPU
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    assert kernels.resolve_device("auto") == ("cpu", "no CUDA GPU found (numba-cuda sees none)")
    assert kernels.get_backend("auto") is cpu
    with pytest.raises(DeviceError, match="^no CUDA GPU found .* --device cpu$"):
        kernels.get_backend("cuda")
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "cupy", None)  # a GPU without CuPy
    assert kernels.resolve_device("auto")[0] == "cpu"
    assert "needs CuPy" in kernels.resolve_device("auto")[1]


@pytest.mark.skipif(
    __import__("numba").config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here: nothing to split"
)
@pytest.mark.parametrize("cell", CELLS)
def test_a_training_step_gives_the_same_bits_on_one_thread_or_two(cell, rng):
    """Large enough that the recurrences run on parts and the dense products in halves: the
    thread count (which the governor changes under load) never changes a loss or a gradient,
    so a resumed run is bit-identical whatever the threads."""
    import numba

    config = ModelConfig(cell=cell, vocab_size=30, hidden=96, layers=2, embed=16)
    model = Model(config, np.float32).init_weights(rng)
    tokens = rng.integers(0, 30, (10, 48))
    targets = rng.integers(0, 30, (10, 48))
    state = model.zero_state(48)
    state.h[...] = rng.uniform(-0.5, 0.5, state.h.shape)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            result = model.loss_and_grad(tokens, targets, state)
            runs.append((result.loss, model.grads.copy()))
    finally:
        numba.set_num_threads(before)
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
