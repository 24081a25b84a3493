"""Level 5: PyTorch parity. Identical weights in torch.nn.RNN/LSTM/GRU give the same outputs,
losses and gradients (float64). Skipped when torch is not installed."""

import numpy as np
import pytest

from numrnn.params import to_torch
from tests.test_model import make_case

torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")
import torch.nn.functional as F  # noqa: E402

RTOL = 1e-9
ATOL = 1e-11
TORCH_CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def torch_modules(model):
    cfg = model.config
    tensors = {k: torch.from_numpy(v) for k, v in to_torch(model.weights).items()}
    width = cfg.embed or cfg.vocab_size
    kwargs = {"nonlinearity": "tanh"} if cfg.cell == "rnn" else {}
    rnn = TORCH_CELLS[cfg.cell](width, cfg.hidden, num_layers=cfg.layers, batch_first=False,
                                dtype=torch.float64, **kwargs)
    rnn.load_state_dict({k[len("rnn."):]: v for k, v in tensors.items() if k.startswith("rnn.")})
    head = torch.nn.Linear(cfg.hidden, cfg.outputs, dtype=torch.float64)
    head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
    embed = None
    if cfg.embed:
        embed = torch.nn.Embedding(cfg.vocab_size, cfg.embed, dtype=torch.float64)
        embed.load_state_dict({"weight": tensors["embed.weight"]})
    return embed, rnn, head


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embed,last_only", [(4, False), (0, True)])
def test_same_weights_same_outputs_losses_and_gradients(cell, layers, embed, last_only, rng):
    model, tokens, targets, state = make_case(cell, rng, layers, embed, last_only)
    result = model.loss_and_grad(tokens, targets, state, last_only=last_only)

    embed_mod, rnn, head = torch_modules(model)
    tok = torch.from_numpy(tokens)
    x = embed_mod(tok) if embed_mod is not None else F.one_hot(tok, model.config.vocab_size).double()
    h0 = torch.tensor(state.h, requires_grad=True)
    c0 = torch.tensor(state.c, requires_grad=True) if cell == "lstm" else None
    out, final = rnn(x, (h0, c0) if cell == "lstm" else h0)
    if last_only:
        loss = F.cross_entropy(head(out[-1]), torch.from_numpy(targets))
    else:
        loss = F.cross_entropy(head(out).reshape(-1, model.config.vocab_size),
                               torch.from_numpy(targets).reshape(-1))
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=RTOL)
    final_h = final[0] if cell == "lstm" else final
    np.testing.assert_allclose(result.state.h, final_h.detach().numpy(), rtol=RTOL, atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(result.state.c, final[1].detach().numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(result.dstate.c, c0.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.dstate.h, h0.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model._workspace(*tokens.shape).hs[-1][1:], out.detach().numpy(),
                               rtol=RTOL, atol=ATOL)

    torch_grads = {f"rnn.{k}": p.grad for k, p in rnn.named_parameters()}
    torch_grads.update({f"head.{k}": p.grad for k, p in head.named_parameters()})
    if embed_mod is not None:
        torch_grads["embed.weight"] = embed_mod.weight.grad
    mine = to_torch(model.dweights)
    assert set(mine) == set(torch_grads)
    for name, grad in torch_grads.items():
        np.testing.assert_allclose(mine[name], grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
