"""A stacked recurrent model: orchestration over layers and time, no I/O.

    tokens (T, B) -> embedding (V, E) or one-hot -> L recurrent layers (rnn | lstm | gru)
    -> dropout between layers (training only) -> head (H, K) -> softmax cross-entropy

Two losses: ``last_only=False`` is many-to-many (a target per step: a language model);
``last_only=True`` is many-to-one (classify from the top layer's last state). The kernels do
the arithmetic (``numrnn.kernels``); this module allocates their buffers once per (T, B)
and calls them in order.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from numrnn.cells import CELLS, GATES_PER_CELL
from numrnn.errors import ConfigError
from numrnn.kernels import get_backend
from numrnn.params import model_layout


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. ``embed=0`` feeds one-hot vectors; ``output_size=0`` means vocab_size."""

    cell: str = "lstm"
    vocab_size: int = 65
    hidden: int = 256
    layers: int = 2
    embed: int = 64
    output_size: int = 0
    dropout: float = 0.0

    def validate(self):
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        for name in ("vocab_size", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("embed", "output_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        return self

    @property
    def gate_width(self):
        return GATES_PER_CELL[self.cell] * self.hidden

    @property
    def outputs(self):
        return self.output_size or self.vocab_size

    def layer_input_width(self, layer):
        if layer > 0:
            return self.hidden
        return self.embed or self.vocab_size


@dataclass
class State:
    """Recurrent state of every layer: h (L, B, H) and, for the LSTM, c (L, B, H)."""

    h: np.ndarray
    c: Optional[np.ndarray] = None

    def copy(self):
        return State(self.h.copy(), None if self.c is None else self.c.copy())


@dataclass
class LossResult:
    loss: float          # mean cross-entropy over the targets, nats
    state: State         # the state after the last step, to carry into the next chunk
    dstate: Optional[State] = None  # gradient of the loss with respect to the initial state


class _Workspace:
    """Every buffer the kernels need for one (T, B), allocated once and reused."""

    def __init__(self, config, T, B, dtype):
        L, H, G, K = config.layers, config.hidden, config.gate_width, config.outputs
        E, V = config.embed, config.vocab_size
        zeros = lambda *shape: np.zeros(shape, dtype=dtype)  # noqa: E731
        # Layer 0's input projection of an embedding, embed[token] @ Wx + bx, takes one of V
        # values: with fewer than T*B of them, computing the (V, G) table and looking rows up
        # is the same arithmetic with fewer multiplications (a GEMM of V rows, not T*B).
        self.input_table = bool(E) and V <= T * B
        self.table = zeros(V, G) if self.input_table else None
        self.dtable = zeros(V, G) if self.input_table else None
        self.dembed = zeros(V, E) if self.input_table else None
        self.emb = zeros(T, B, E) if E and not self.input_table else None
        self.demb = zeros(T, B, E) if E and not self.input_table else None
        self.gates = [zeros(T, B, G) for _ in range(L)]
        self.hs = [zeros(T + 1, B, H) for _ in range(L)]
        self.cs = [zeros(T + 1, B, H) for _ in range(L)] if config.cell == "lstm" else None
        self.hn = [zeros(T, B, H) for _ in range(L)] if config.cell == "gru" else None
        self.dropped = [zeros(T, B, H) for _ in range(L - 1)] if config.dropout else None
        self.masks = [zeros(T, B, H) for _ in range(L - 1)] if config.dropout else None
        self.logits_seq = zeros(T * B, K)
        self.logits_last = zeros(B, K)
        self.losses_seq = zeros(T * B)
        self.losses_last = zeros(B)
        self.dgates = zeros(T, B, G)
        self.dhg = zeros(T, B, G) if config.cell == "gru" else None
        self.dhs = zeros(T, B, H)
        self.dh0 = zeros(L, B, H)
        self.dc0 = zeros(L, B, H)
        self.zero_bh = zeros(B, H)
        self.hw = zeros(B, G)
        D0 = config.layer_input_width(0)
        # The largest kernel workspace: linear_backward's (D, K) product, a cell backward's
        # (H, G) product or its (H, B) per-step carry, the head's (H, K).
        self.scratch = zeros(max(D0 * G, H * G, H * B, H * K, 1))
        self.used_dropout = False


class Model:
    """Parameters, gradients and the forward/backward passes of one stacked model.

    ``params`` and ``grads`` are flat arrays; ``weights`` and ``dweights`` name views into them
    (PyTorch's names, this library's (in, out) layouts, see ``numrnn.params``).
    """

    def __init__(self, config, dtype=np.float32, device="cpu", kernels=None):
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, not {self.dtype}")
        # kernels: a module to use instead of the device's backend (tests inject broken ones).
        self.kernels = kernels if kernels is not None else get_backend(device)
        self.layout = model_layout(config)
        self.params = self.layout.zeros(self.dtype)
        self.grads = self.layout.zeros(self.dtype)
        self.weights = self.layout.views(self.params)
        self.dweights = self.layout.views(self.grads)
        self._workspaces = {}

    # ------------------------------------------------------------------ set-up

    def init_weights(self, rng):
        """PyTorch's default initialisation, drawn from ``rng`` (a numpy Generator)."""
        cfg = self.config
        for name, view in self.weights.items():
            if name == "embed.weight":
                view[...] = rng.standard_normal(view.shape)
            else:
                fan_in = cfg.hidden
                bound = 1.0 / np.sqrt(fan_in)
                view[...] = rng.uniform(-bound, bound, view.shape)
        return self

    def zero_state(self, batch):
        shape = (self.config.layers, batch, self.config.hidden)
        c = np.zeros(shape, self.dtype) if self.config.cell == "lstm" else None
        return State(np.zeros(shape, self.dtype), c)

    def _workspace(self, T, B):
        key = (T, B)
        if key not in self._workspaces:
            self._workspaces[key] = _Workspace(self.config, T, B, self.dtype)
        return self._workspaces[key]

    # ------------------------------------------------------------------ passes

    def loss(self, tokens, targets, state=None, *, last_only=False):
        """Mean cross-entropy without gradients (evaluation); dropout is off."""
        return self._run(tokens, targets, state, last_only=last_only, grad=False)

    def loss_and_grad(self, tokens, targets, state=None, *, last_only=False, dstate=None,
                      train=False, rng=None, zero_grad=True):
        """Mean cross-entropy and its gradient, left in ``grads`` (``+=`` unless zero_grad).

        tokens: (T, B) integer ids. targets: (T, B) ids for many-to-many, (B,) class ids for
        many-to-one (``last_only``); a target below 0 is ignored. state: the initial state
        (zeros when None). dstate: the gradient reaching the final state from a later chunk
        (truncated BPTT across calls), zeros when None. train: apply dropout, drawing masks
        from ``rng``. Returns the loss, the final state and the initial state's gradient.
        """
        return self._run(tokens, targets, state, last_only=last_only, grad=True,
                         dstate=dstate, train=train, rng=rng, zero_grad=zero_grad)

    def _run(self, tokens, targets, state, *, last_only, grad, dstate=None, train=False,
             rng=None, zero_grad=True):
        cfg = self.config
        tokens = np.ascontiguousarray(tokens, dtype=np.intp)
        T, B = tokens.shape
        targets = np.ascontiguousarray(targets, dtype=np.intp).reshape(-1)
        expected = B if last_only else T * B
        if targets.shape[0] != expected:
            raise ValueError(f"targets have {targets.shape[0]} entries, expected {expected}")
        if state is None:
            state = self.zero_state(B)
        ws = self._workspace(T, B)
        use_dropout = train and cfg.dropout > 0 and cfg.layers > 1
        if use_dropout and rng is None:
            raise ValueError("training with dropout needs an rng")
        self._forward(ws, tokens.reshape(-1), state, use_dropout, rng)

        top = ws.hs[-1]
        feats = top[T] if last_only else top[1:].reshape(T * B, cfg.hidden)
        logits = ws.logits_last if last_only else ws.logits_seq
        losses = ws.losses_last if last_only else ws.losses_seq
        k = self.kernels
        k.linear_forward(logits, feats, self.weights["head.weight"], self.weights["head.bias"])
        count = max(int(np.count_nonzero(targets >= 0)), 1)
        if grad:
            # dlogits overwrite the logits in place.
            k.softmax_xent_fused(losses, logits, logits, targets, 1.0 / count)
        else:
            k.softmax_xent_forward(losses, logits, targets)
        loss = float(losses.sum(dtype=np.float64)) / count
        final = State(
            np.stack([hs[T] for hs in ws.hs]),
            None if ws.cs is None else np.stack([cs[T] for cs in ws.cs]),
        )
        if not grad:
            return LossResult(loss, final)
        if zero_grad:
            self.grads[...] = 0.0
        dstate0 = self._backward(ws, tokens.reshape(-1), feats, logits, last_only, dstate, use_dropout)
        return LossResult(loss, final, dstate0)

    def _forward(self, ws, tokens, state, use_dropout, rng):
        cfg, k, w = self.config, self.kernels, self.weights
        T, B = ws.dhs.shape[:2]
        ws.used_dropout = use_dropout
        for layer in range(cfg.layers):
            gates = ws.gates[layer]
            gate_rows = gates.reshape(T * B, cfg.gate_width)
            Wx, bx = w[f"rnn.weight_ih_l{layer}"], w[f"rnn.bias_ih_l{layer}"]
            if layer == 0 and ws.input_table:
                k.linear_forward(ws.table, w["embed.weight"], Wx, bx)
                k.embed_forward(gate_rows, tokens, ws.table)
            elif layer == 0 and cfg.embed:
                emb_rows = ws.emb.reshape(T * B, cfg.embed)
                k.embed_forward(emb_rows, tokens, w["embed.weight"])
                k.linear_forward(gate_rows, emb_rows, Wx, bx)
            elif layer == 0:
                # One-hot input: x @ Wx is the row of Wx for each token.
                k.embed_forward(gate_rows, tokens, Wx)
                k.bias_forward(gate_rows, bx)
            else:
                x = self._layer_input(ws, layer)
                k.linear_forward(gate_rows, x.reshape(T * B, cfg.hidden), Wx, bx)
            hs = ws.hs[layer]
            hs[0] = state.h[layer]
            Wh, bh = w[f"rnn.weight_hh_l{layer}"], w[f"rnn.bias_hh_l{layer}"]
            if cfg.cell == "rnn":
                k.rnn_forward(hs, gates, Wh, bh, ws.hw)
            elif cfg.cell == "lstm":
                ws.cs[layer][0] = state.c[layer]
                k.lstm_forward(hs, ws.cs[layer], gates, Wh, bh, ws.hw)
            else:
                k.gru_forward(hs, gates, ws.hn[layer], Wh, bh, ws.hw)
            if use_dropout and layer < cfg.layers - 1:
                keep = 1.0 - cfg.dropout
                mask = ws.masks[layer]
                mask[...] = (rng.random(mask.shape) < keep) / keep
                np.multiply(hs[1:], mask, out=ws.dropped[layer])

    def _layer_input(self, ws, layer):
        """The (T, B, H) input of layer >= 1: the layer below's outputs, after dropout."""
        if ws.used_dropout:
            return ws.dropped[layer - 1]
        return ws.hs[layer - 1][1:]

    def _backward(self, ws, tokens, feats, dlogits, last_only, dstate, use_dropout):
        cfg, k, w, dw = self.config, self.kernels, self.weights, self.dweights
        T, B, H = ws.dhs.shape
        dhs = ws.dhs
        if last_only:
            dhs[...] = 0.0
            k.linear_backward(dhs[T - 1], dw["head.weight"], dw["head.bias"], dlogits, feats,
                              w["head.weight"], ws.scratch)
        else:
            k.linear_backward(dhs.reshape(T * B, H), dw["head.weight"], dw["head.bias"], dlogits,
                              feats, w["head.weight"], ws.scratch)
        dgates = ws.dgates
        dgate_rows = dgates.reshape(T * B, cfg.gate_width)
        for layer in reversed(range(cfg.layers)):
            Wh = w[f"rnn.weight_hh_l{layer}"]
            dWh, dbh = dw[f"rnn.weight_hh_l{layer}"], dw[f"rnn.bias_hh_l{layer}"]
            dhT = ws.zero_bh if dstate is None else np.ascontiguousarray(dstate.h[layer], self.dtype)
            hs = ws.hs[layer]
            if cfg.cell == "rnn":
                k.rnn_backward(dgates, ws.dh0[layer], dWh, dbh, dhs, dhT, hs, Wh, ws.scratch)
            elif cfg.cell == "lstm":
                dcT = ws.zero_bh if dstate is None else np.ascontiguousarray(dstate.c[layer], self.dtype)
                k.lstm_backward(dgates, ws.dh0[layer], ws.dc0[layer], dWh, dbh, dhs, dhT, dcT, hs,
                                ws.cs[layer], ws.gates[layer], Wh, ws.scratch)
            else:
                k.gru_backward(dgates, ws.dh0[layer], dWh, dbh, dhs, dhT, hs, ws.gates[layer],
                               ws.hn[layer], Wh, ws.dhg, ws.scratch)
            Wx = w[f"rnn.weight_ih_l{layer}"]
            dWx, dbx = dw[f"rnn.weight_ih_l{layer}"], dw[f"rnn.bias_ih_l{layer}"]
            if layer > 0:
                x = self._layer_input(ws, layer).reshape(T * B, H)
                # dhs now becomes the gradient of the layer below's outputs.
                k.linear_backward(dhs.reshape(T * B, H), dWx, dbx, dgate_rows, x, Wx, ws.scratch)
                if use_dropout:
                    dhs *= ws.masks[layer - 1]
            elif ws.input_table:
                # Gradients through the table: sum the rows of each token, then the small
                # (V, E) x (E, G) product's backward.
                ws.dtable[...] = 0.0
                k.embed_backward(ws.dtable, dgate_rows, tokens)
                k.linear_backward(ws.dembed, dWx, dbx, ws.dtable, w["embed.weight"], Wx, ws.scratch)
                dw["embed.weight"] += ws.dembed
            elif cfg.embed:
                demb_rows = ws.demb.reshape(T * B, cfg.embed)
                emb_rows = ws.emb.reshape(T * B, cfg.embed)
                k.linear_backward(demb_rows, dWx, dbx, dgate_rows, emb_rows, Wx, ws.scratch)
                k.embed_backward(dw["embed.weight"], demb_rows, tokens)
            else:
                k.embed_backward(dWx, dgate_rows, tokens)
                k.bias_backward(dbx, dgate_rows)
        dc0 = ws.dc0.copy() if cfg.cell == "lstm" else None
        return State(ws.dh0.copy(), dc0)
