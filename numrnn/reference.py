"""Plain-numpy float64 reference of every cell and layer, forward and backward.

Written for clarity, not speed, and independently of the kernels: tests compare the kernels
with it, and it is itself checked against finite differences. The training path never
imports this module.

Shapes use the kernels' letters and layouts: x (T, B, D), h0/c0 (B, H), hs (T, B, H),
Wx (D, G), Wh (H, G), bx/bh (G); gate orders and formulas are PyTorch's (see
``numrnn.kernels.pointwise``). Each ``*_forward`` returns its outputs and a cache; each
``*_backward`` takes the gradients of the outputs (``dhs`` for every step, ``dhT``/``dcT``
for the last state) and returns a dict of gradients keyed by input name.
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------- cells


def rnn_forward(x, h0, Wx, Wh, bx, bh):
    T = x.shape[0]
    hs = np.zeros((T,) + h0.shape)
    h = h0
    for t in range(T):
        h = np.tanh(x[t] @ Wx + bx + h @ Wh + bh)
        hs[t] = h
    return hs, (x, h0, Wx, Wh, hs)


def rnn_backward(dhs, dhT, cache):
    x, h0, Wx, Wh, hs = cache
    grads = _zero_grads(x=x, h0=h0, Wx=Wx, Wh=Wh, bx=Wx[0], bh=Wh[0])
    dh = dhT.copy()
    for t in reversed(range(x.shape[0])):
        h_prev = hs[t - 1] if t > 0 else h0
        da = (dhs[t] + dh) * (1.0 - hs[t] ** 2)
        _accumulate_affine(grads, t, da, da, x, h_prev, Wx)
        dh = da @ Wh.T
    grads["h0"] = dh
    return grads


def lstm_forward(x, h0, c0, Wx, Wh, bx, bh):
    T = x.shape[0]
    H = h0.shape[1]
    hs = np.zeros((T,) + h0.shape)
    cs = np.zeros((T,) + h0.shape)
    acts = []
    h, c = h0, c0
    for t in range(T):
        a = x[t] @ Wx + bx + h @ Wh + bh
        i = sigmoid(a[:, :H])
        f = sigmoid(a[:, H : 2 * H])
        g = np.tanh(a[:, 2 * H : 3 * H])
        o = sigmoid(a[:, 3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[t], cs[t] = h, c
        acts.append((i, f, g, o))
    return hs, cs, (x, h0, c0, Wx, Wh, hs, cs, acts)


def lstm_backward(dhs, dhT, dcT, cache):
    x, h0, c0, Wx, Wh, hs, cs, acts = cache
    grads = _zero_grads(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, bx=Wx[0], bh=Wh[0])
    dh, dc = dhT.copy(), dcT.copy()
    for t in reversed(range(x.shape[0])):
        i, f, g, o = acts[t]
        h_prev = hs[t - 1] if t > 0 else h0
        c_prev = cs[t - 1] if t > 0 else c0
        dh_t = dhs[t] + dh
        tanh_c = np.tanh(cs[t])
        dc_t = dc + dh_t * o * (1.0 - tanh_c**2)
        da = np.concatenate(
            [
                dc_t * g * i * (1.0 - i),
                dc_t * c_prev * f * (1.0 - f),
                dc_t * i * (1.0 - g**2),
                dh_t * tanh_c * o * (1.0 - o),
            ],
            axis=1,
        )
        _accumulate_affine(grads, t, da, da, x, h_prev, Wx)
        dh = da @ Wh.T
        dc = dc_t * f
    grads["h0"], grads["c0"] = dh, dc
    return grads


def gru_forward(x, h0, Wx, Wh, bx, bh):
    T = x.shape[0]
    H = h0.shape[1]
    hs = np.zeros((T,) + h0.shape)
    steps = []
    h = h0
    for t in range(T):
        ax = x[t] @ Wx + bx
        ah = h @ Wh + bh
        r = sigmoid(ax[:, :H] + ah[:, :H])
        z = sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[:, 2 * H :] + r * ah[:, 2 * H :])
        h = (1.0 - z) * n + z * h
        hs[t] = h
        steps.append((r, z, n, ah[:, 2 * H :]))
    return hs, (x, h0, Wx, Wh, hs, steps)


def gru_backward(dhs, dhT, cache):
    x, h0, Wx, Wh, hs, steps = cache
    grads = _zero_grads(x=x, h0=h0, Wx=Wx, Wh=Wh, bx=Wx[0], bh=Wh[0])
    dh = dhT.copy()
    for t in reversed(range(x.shape[0])):
        r, z, n, h_n = steps[t]
        h_prev = hs[t - 1] if t > 0 else h0
        dh_t = dhs[t] + dh
        dn = dh_t * (1.0 - z) * (1.0 - n**2)
        dz = dh_t * (h_prev - n) * z * (1.0 - z)
        dr = dn * h_n * r * (1.0 - r)
        dax = np.concatenate([dr, dz, dn], axis=1)
        dah = np.concatenate([dr, dz, dn * r], axis=1)
        _accumulate_affine(grads, t, dax, dah, x, h_prev, Wx)
        dh = dh_t * z + dah @ Wh.T
    grads["h0"] = dh
    return grads


def _zero_grads(**arrays):
    return {name: np.zeros_like(value) for name, value in arrays.items()}


def _accumulate_affine(grads, t, dax, dah, x, h_prev, Wx):
    """Gradients of x_t @ Wx + bx (from dax) and h_prev @ Wh + bh (from dah) at step t."""
    grads["x"][t] = dax @ Wx.T
    grads["Wx"] += x[t].T @ dax
    grads["bx"] += dax.sum(axis=0)
    grads["Wh"] += h_prev.T @ dah
    grads["bh"] += dah.sum(axis=0)


# --------------------------------------------------------------------------- the other layers


def linear_forward(x, W, b):
    return x @ W + b


def linear_backward(dy, x, W):
    return {"x": dy @ W.T, "W": x.T @ dy, "b": dy.sum(axis=0)}


def embed_forward(tokens, W):
    return W[tokens]


def embed_backward(dout, tokens, vocab_size):
    dW = np.zeros((vocab_size, dout.shape[-1]))
    np.add.at(dW, tokens.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dW


def onehot(tokens, vocab_size):
    return np.eye(vocab_size)[tokens]


# --------------------------------------------------------------------------- attention
# queries (B, T, A), keys (B, S, A), values (B, S, D), lengths (B): batch-major, as the kernels.


def attention_forward(queries, keys, values, lengths, v=None):
    """Masked attention: scores q . k (or, with ``v``, Bahdanau's v . tanh(q + k)), softmax
    over each row's first lengths[b] positions, context = weights @ values. Returns
    (weights (B, T, S), context (B, T, D)) and a cache."""
    S = keys.shape[1]
    if v is None:
        scores = np.einsum("bta,bsa->bts", queries, keys)
    else:
        scores = np.einsum("btsa,a->bts", np.tanh(queries[:, :, None, :] + keys[:, None, :, :]), v)
    mask = np.arange(S)[None, None, :] < np.asarray(lengths)[:, None, None]
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    context = np.einsum("bts,bsd->btd", weights, values)
    return weights, context, (queries, keys, values, v, weights)


def attention_backward(dcontext, cache):
    """Gradients of queries, keys, values (and v) from the context's."""
    queries, keys, values, v, weights = cache
    grads = {"values": np.einsum("bts,btd->bsd", weights, dcontext)}
    dweights = np.einsum("btd,bsd->bts", dcontext, values)
    dscores = weights * (dweights - (weights * dweights).sum(axis=2, keepdims=True))
    if v is None:
        grads["queries"] = np.einsum("bts,bsa->bta", dscores, keys)
        grads["keys"] = np.einsum("bts,bta->bsa", dscores, queries)
    else:
        th = np.tanh(queries[:, :, None, :] + keys[:, None, :, :])  # (B, T, S, A)
        g = dscores[..., None] * v * (1.0 - th**2)
        grads["queries"] = g.sum(axis=2)
        grads["keys"] = g.sum(axis=1)
        grads["v"] = np.einsum("bts,btsa->a", dscores, th)
    return grads


def beam_extend(logits, scores):
    """One beam-search step (see kernels.cpu.beam_extend): (best (R, K) flat ids h * V + v,
    their log-probabilities (R, K)) of each row's K best extensions, by a stable sort."""
    R, K = scores.shape
    logits = logits.astype(np.float64)
    peak = logits.max(axis=1, keepdims=True)
    logp = (logits - peak) - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
    totals = (scores.reshape(-1, 1) + logp).reshape(R, -1)
    best = np.argsort(-totals, axis=1, kind="stable")[:, :K]
    return best, np.take_along_axis(totals, best, axis=1)


def softmax_xent(logits, targets):
    """Mean cross-entropy over the rows whose target is >= 0, and its gradient."""
    keep = targets >= 0
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    count = max(int(keep.sum()), 1)
    losses = -np.log(probs[np.arange(len(targets)), np.where(keep, targets, 0)])
    loss = float((losses * keep).sum() / count)
    dlogits = probs.copy()
    dlogits[np.arange(len(targets)), np.where(keep, targets, 0)] -= 1.0
    dlogits *= keep[:, None] / count
    return loss, dlogits


# --------------------------------------------------------------------------- a whole model

FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}


def model_loss(cell, weights, tokens, targets, h0, c0=None, masks=None, last_only=False):
    """Loss and gradients of a stacked model, in plain numpy.

    weights: ``embed`` (V, E) or absent for one-hot input; ``Wx{l}``, ``Wh{l}``, ``bx{l}``,
    ``bh{l}`` per layer; ``Wy`` (H, K), ``by`` (K). tokens (T, B) ints; h0, c0 (L, B, H);
    masks: per layer below the top, a (T, B, H) dropout multiplier or None.
    last_only: classify from the top layer's last state (targets (B,)), else one target per
    step (targets (T, B)). Returns (loss, grads) with grads keyed like weights plus h0, c0.
    """
    L = h0.shape[0]
    T, B = tokens.shape
    if "embed" in weights:
        x = embed_forward(tokens, weights["embed"])
    else:
        x = onehot(tokens, weights["Wx0"].shape[0])
    caches, inputs = [], []
    for layer in range(L):
        inputs.append(x)
        args = (weights[f"Wx{layer}"], weights[f"Wh{layer}"], weights[f"bx{layer}"], weights[f"bh{layer}"])
        if cell == "lstm":
            hs, _, cache = lstm_forward(x, h0[layer], c0[layer], *args)
        else:
            hs, cache = FORWARD[cell](x, h0[layer], *args)
        caches.append(cache)
        x = hs * masks[layer] if masks is not None and layer < L - 1 and masks[layer] is not None else hs
    top = x
    H = top.shape[2]
    feats = top[-1] if last_only else top.reshape(T * B, H)
    logits = linear_forward(feats, weights["Wy"], weights["by"])
    loss, dlogits = softmax_xent(logits, targets.reshape(-1))
    head = linear_backward(dlogits, feats, weights["Wy"])
    grads = {"Wy": head["W"], "by": head["b"]}
    dtop = np.zeros_like(top)
    if last_only:
        dtop[-1] = head["x"]
    else:
        dtop = head["x"].reshape(T, B, H)
    dh0 = np.zeros_like(h0)
    dc0 = np.zeros_like(h0)
    zeros = np.zeros((B, H))
    for layer in reversed(range(L)):
        if layer < L - 1 and masks is not None and masks[layer] is not None:
            dtop = dtop * masks[layer]
        if cell == "lstm":
            g = lstm_backward(dtop, zeros, zeros, caches[layer])
            dc0[layer] = g["c0"]
        else:
            g = {"rnn": rnn_backward, "gru": gru_backward}[cell](dtop, zeros, caches[layer])
        dh0[layer] = g["h0"]
        for name in ("Wx", "Wh", "bx", "bh"):
            grads[f"{name}{layer}"] = g[name]
        dtop = g["x"]
    if "embed" in weights:
        grads["embed"] = embed_backward(dtop, tokens, weights["embed"].shape[0])
    grads["h0"] = dh0
    if cell == "lstm":
        grads["c0"] = dc0
    return loss, grads
