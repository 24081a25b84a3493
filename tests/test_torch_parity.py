"""Level 5: PyTorch parity. Identical weights in torch.nn.RNN/LSTM/GRU give the same outputs,
losses and gradients (float64). The torch side is the benchmarks' twin (benchmarks/twins.py),
so the model the benchmarks compare against is the one checked here. Skipped when torch is not
installed."""

import numpy as np
import pytest

from numrnn.params import to_torch
from tests.test_model import make_case

torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")
import torch.nn.functional as F  # noqa: E402

from benchmarks.twins import CharLM  # noqa: E402  (imports torch)

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
        loss = F.cross_entropy(twin.head(out).reshape(-1, model.config.vocab_size),
                               torch.from_numpy(targets).reshape(-1))
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
