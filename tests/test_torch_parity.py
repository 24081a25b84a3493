"""Level 5: PyTorch parity. Identical weights in torch.nn.RNN/LSTM/GRU give the same outputs,
losses and gradients (float64). The torch side is the benchmarks' twin (benchmarks/twins.py),
so the model the benchmarks compare against is the one checked here. Skipped when torch is not
installed."""

import numpy as np
import pytest

from numrnn.model import Model, ModelConfig
from numrnn.params import to_torch
from numrnn.tasks.classify import Classifier
from tests.test_model import make_case

torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")
import torch.nn.functional as F  # noqa: E402

from benchmarks.twins import CharClassifier, CharLM, ConditionalCharLM  # noqa: E402  (imports torch)

RTOL = 1e-9
ATOL = 1e-11


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embed,last_only", [(4, False), (0, True)])
def test_same_weights_same_outputs_losses_and_gradients(cell, layers, embed, last_only, rng):
    model, tokens, targets, state = make_case(cell, rng, layers, embed, last_only)
    result = model.loss_and_grad(tokens, targets, state=state)

    twin = CharLM.from_numrnn(model)
    h0 = torch.tensor(state.h, requires_grad=True)
    c0 = torch.tensor(state.c, requires_grad=True) if cell == "lstm" else None
    out, final = twin.features(torch.from_numpy(tokens), (h0, c0) if cell == "lstm" else h0)
    if last_only:
        loss = F.cross_entropy(twin.head(out[-1]), torch.from_numpy(targets))
    else:
        loss = F.cross_entropy(
            twin.head(out).reshape(-1, model.config.vocab_size), torch.from_numpy(targets).reshape(-1)
        )
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=RTOL)
    final_h = final[0] if cell == "lstm" else final
    np.testing.assert_allclose(result.state.h, final_h.detach().numpy(), rtol=RTOL, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(result.state.c, final[1].detach().numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(result.dstate.c, c0.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.dstate.h, h0.grad.numpy(), rtol=RTOL, atol=ATOL)
    top_layer_hs = model._workspace(*tokens.shape).stack.hs[(layers - 1, 0)]
    np.testing.assert_allclose(top_layer_hs[1:], out.detach().numpy(), rtol=RTOL, atol=ATOL)

    torch_grads = {name: p.grad for name, p in twin.named_parameters()}
    mine = to_torch(model.dweights)
    assert set(mine) == set(torch_grads)
    for name, grad in torch_grads.items():
        np.testing.assert_allclose(mine[name], grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("embed", [0, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_classifier_over_packed_sequences_matches_torch(cell, layers, bidirectional, embed, weighted, rng):
    # A padded batch of different lengths (one row of the full T, the others shorter and in no
    # order), padded with random ids: torch reads it packed, so only the real steps count.
    V, C, T, B = 7, 3, 6, 5
    config = ModelConfig(
        cell=cell,
        vocab_size=V,
        hidden=4,
        layers=layers,
        embed=embed,
        output_size=C,
        bidirectional=bidirectional,
    )
    model = Classifier(config, np.float64).init_weights(rng)
    tokens = rng.integers(0, V, (T, B))
    lengths = np.array([3, T, 1, 4, 2])
    targets = rng.integers(0, C, B)
    weights = rng.uniform(0.2, 3.0, C) if weighted else None
    state = model.zero_state(B)
    state.h[...] = rng.uniform(-0.5, 0.5, state.h.shape)
    if state.c is not None:
        state.c[...] = rng.uniform(-0.5, 0.5, state.c.shape)
    result = model.loss_and_grad(tokens, targets, lengths, state, class_weights=weights)
    logits = model.logits(tokens, lengths, state)

    twin = CharClassifier.from_numrnn(model)
    h0 = torch.tensor(state.h, requires_grad=True)
    c0 = torch.tensor(state.c, requires_grad=True) if cell == "lstm" else None
    twin_logits, final = twin(torch.from_numpy(tokens), lengths, (h0, c0) if cell == "lstm" else h0)
    loss = torch.nn.CrossEntropyLoss(weight=None if weights is None else torch.from_numpy(weights))(
        twin_logits, torch.from_numpy(targets)
    )
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=RTOL)
    np.testing.assert_allclose(logits, twin_logits.detach().numpy(), rtol=RTOL, atol=ATOL)
    final_h = final[0] if cell == "lstm" else final
    np.testing.assert_allclose(result.state.h, final_h.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.dstate.h, h0.grad.numpy(), rtol=RTOL, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(result.state.c, final[1].detach().numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(result.dstate.c, c0.grad.numpy(), rtol=RTOL, atol=ATOL)

    torch_grads = {name: p.grad for name, p in twin.named_parameters()}
    mine = to_torch(model.dweights)
    assert set(mine) == set(torch_grads)
    for name, grad in torch_grads.items():
        assert grad is not None, name
        np.testing.assert_allclose(mine[name], grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(
    "condition,layers,embed", [("input", 1, 4), ("input", 2, 0), ("state", 2, 4), ("both", 2, 4)]
)
def test_conditional_generator_matches_torch(cell, condition, layers, embed, rng):
    # A generator's batch (numrnn.tasks.generate.sequences): right-padded, targets -1 past each
    # row's end, labels repeated; the twin reads the label as numrnn's Conditioning does.
    V, C, T, B = 7, 3, 6, 5
    config = ModelConfig(
        cell=cell,
        vocab_size=V,
        hidden=4,
        layers=layers,
        embed=embed,
        output_size=V - 1,
        condition=condition,
        condition_classes=C,
    )
    model = Model(config, np.float64).init_weights(rng)
    tokens = rng.integers(0, V - 1, (T, B))
    tokens[0] = V - 1  # the start token
    targets = rng.integers(0, V - 1, (T, B))
    lengths = np.array([6, 2, 4, 1, 3])
    targets[np.arange(T)[:, None] >= lengths[None, :]] = -1
    labels = np.array([2, 0, 2, 1, 2])
    result = model.loss_and_grad(tokens, targets, labels=labels)

    twin = ConditionalCharLM.from_numrnn(model)
    logits, final = twin(torch.from_numpy(tokens), torch.from_numpy(labels))
    loss = F.cross_entropy(logits.reshape(-1, V - 1), torch.from_numpy(targets).reshape(-1), ignore_index=-1)
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=RTOL)
    final_h = final[0] if cell == "lstm" else final
    np.testing.assert_allclose(result.state.h, final_h.detach().numpy(), rtol=RTOL, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(result.state.c, final[1].detach().numpy(), rtol=RTOL, atol=ATOL)
    torch_grads = twin.numrnn_tensors(grads=True)
    mine = to_torch(model.dweights)
    assert set(mine) == set(torch_grads)
    for name, grad in torch_grads.items():
        np.testing.assert_allclose(mine[name], grad, rtol=RTOL, atol=ATOL, err_msg=name)
