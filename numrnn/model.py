"""Models as stacks of layers over one flat parameter buffer: orchestration, no I/O.

``Network`` is the base: its layers' parameter entries, concatenated, make the flat
``params`` and ``grads`` buffers (named views in ``weights``/``dweights``), on one kernel
backend. ``Model`` is the many-to-many network every generating task uses:

    tokens (T, B) -> embedding (V, E) or one-hot -> L recurrent layers (rnn | lstm | gru)
    -> dropout between layers (training only) -> head (H, K) -> softmax cross-entropy per step

A conditioned ``Model`` (``config.condition``: state, input or both) also reads a label per
row (``labels``) through a ``Conditioning`` layer: a learnt initial state per label, a learnt
per-label row added to layer 0's gate pre-activations at every step, or both.

The kernels do the arithmetic (``numrnn.kernels``); the layers (``numrnn.layers``) allocate
their buffers once per (T, B) and call them in order. Tasks (``numrnn.tasks``) assemble other
networks from the same layers (a classifier reads the head once per sequence).
"""

from dataclasses import dataclass

import numpy as np

from numrnn.cells import CELLS  # noqa: F401 (re-exported)
from numrnn.configs import ModelConfig  # noqa: F401 (re-exported)
from numrnn.errors import ConfigError
from numrnn.kernels import get_backend
from numrnn.layers import Conditioning, Embedding, Linear, RecurrentStack
from numrnn.params import ParamLayout, from_torch


@dataclass
class State:
    """Recurrent state of every layer: h (L, B, H) and, for the LSTM, c (L, B, H)."""

    h: np.ndarray
    c: np.ndarray | None = None

    def copy(self):
        return State(self.h.copy(), None if self.c is None else self.c.copy())

    @classmethod
    def from_dict(cls, tensors):
        return cls(tensors["h"], tensors.get("c"))

    def to_dict(self):
        return {"h": self.h} if self.c is None else {"h": self.h, "c": self.c}


@dataclass
class LossResult:
    loss: float  # mean cross-entropy over the targets, nats
    state: State  # the state after the last step, to carry into the next chunk
    dstate: State | None = None  # gradient of the loss with respect to the initial state


def _checked_lengths(lengths, targets):
    """lengths (B) as intp, checked against targets (T, B): 1..T, padding targets ignored."""
    T, B = targets.shape
    lengths = np.asarray(lengths, np.intp)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be {B} values in 1..{T}")
    if (targets[np.arange(T)[:, None] >= lengths[None, :]] >= 0).any():
        raise ValueError("targets past a row's length must be ignored (below 0)")
    return lengths


def mean_cross_entropy(k, ws, targets, grad):
    """The mean cross-entropy of ``ws.logits`` (N, V) against targets (N, on the host), those
    below 0 ignored, with ``ws.losses`` (N) as workspace; with grad, ``ws.logits`` becomes the
    loss's gradient (dlogits overwrite the logits in place). The loss is the one value that
    crosses to the host."""
    count = max(int(np.count_nonzero(targets >= 0)), 1)
    targets = k.to_device(targets)
    if grad:
        k.softmax_xent_fused(ws.losses, ws.logits, ws.logits, targets, 1.0 / count)
    else:
        k.softmax_xent_forward(ws.losses, ws.logits, targets)
    return float(ws.losses.sum(dtype=np.float64)) / count


def standard_layers(config):
    """The embedding, recurrent stack and head a ``ModelConfig`` describes, then its
    ``Conditioning`` layer when ``config.condition`` is not "none" (last, so the other
    layers' entries and initial weights are those of the unconditioned model)."""
    if config.attention != "none" or config.decoder_hidden:
        raise ConfigError("attention and decoder_hidden describe a translator (numrnn.tasks.translate)")
    embedding = Embedding("embed", config.vocab_size, config.embed)
    stack = RecurrentStack(
        "rnn",
        config.cell,
        embedding,
        config.hidden,
        config.layers,
        dropout=config.dropout,
        bidirectional=config.bidirectional,
    )
    head = Linear("head", stack.output_width, config.outputs)
    if config.condition == "none":
        return embedding, stack, head
    return embedding, stack, head, Conditioning("cond", config.condition, config.condition_classes, stack)


def model_layout(config):
    """The parameter layout of the network a ``ModelConfig`` describes."""
    return ParamLayout([entry for layer in standard_layers(config) for entry in layer.entries()])


class Network:
    """Layers over one flat parameter buffer, on one kernel backend.

    ``params`` and ``grads`` are flat arrays; ``weights`` and ``dweights`` name views into them
    (PyTorch's names, this library's (in, out) layouts, see ``numrnn.params``). They live in
    the backend's memory (``kernels.xp``: numpy, or the GPU's through CuPy) for the network's
    life; ``host_weights`` and ``load_torch_weights`` are the crossings.
    """

    def __init__(self, layers, dtype=np.float32, device="cpu", kernels=None):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, not {self.dtype}")
        # kernels: a module to use instead of the device's backend (tests inject broken ones).
        self.kernels = kernels if kernels is not None else get_backend(device)
        self.xp = self.kernels.xp
        self.layers = list(layers)
        self.layout = ParamLayout([entry for layer in self.layers for entry in layer.entries()])
        self.params = self.layout.zeros(self.dtype, self.xp)
        self.grads = self.layout.zeros(self.dtype, self.xp)
        self.weights = self.layout.views(self.params)
        self.dweights = self.layout.views(self.grads)
        self._workspaces = {}

    def init_weights(self, rng):
        """PyTorch's default initialisation, drawn from ``rng`` (a numpy Generator), layer by
        layer in the order of the parameter buffer (drawn on the host, then copied)."""
        host = self.layout.zeros(self.dtype)
        views = self.layout.views(host)
        for layer in self.layers:
            layer.init(views, rng)
        self.params[...] = self.kernels.to_device(host)
        return self

    def on_device(self, state):
        """``state`` (a ``State``) in this network's memory (a checkpoint's carried state is on
        the host); no copy when it already is."""
        return State.from_dict(
            {name: self.kernels.to_device(value) for name, value in state.to_dict().items()}
        )

    def host_weights(self):
        """The weights as named views of a host copy of ``params`` (checkpoints, reports)."""
        return self.layout.views(self.kernels.to_host(self.params))

    def load_torch_weights(self, tensors):
        """Set the weights from tensors in PyTorch's layout by state_dict name (a checkpoint's)."""
        host = self.layout.zeros(self.dtype)
        from_torch(self.layout.views(host), tensors)
        self.params[...] = self.kernels.to_device(host)
        return self

    def _workspace(self, T, B):
        key = (T, B)
        if key not in self._workspaces:
            self._workspaces[key] = self._new_workspace(T, B)
        return self._workspaces[key]

    def _new_workspace(self, T, B):
        raise NotImplementedError


class _Workspace:
    """Every buffer one (T, B) needs, allocated once and reused (in ``xp``'s memory)."""

    def __init__(self, stack, T, B, K, dtype, xp):
        H = stack.hidden
        self.stack = stack.workspace(T, B, dtype, scratch=H * K, xp=xp)  # the head's (H, K) product
        self.logits = xp.zeros((T * B, K), dtype)
        self.losses = xp.zeros(T * B, dtype)

    @property
    def input_table(self):
        """Whether layer 0 reads the embedding through the (V, G) lookup table."""
        return self.stack.embedding[0].table


class Model(Network):
    """The many-to-many network: a softmax over ``outputs`` at every step (language models)."""

    def __init__(self, config, dtype=np.float32, device="cpu", kernels=None):
        self.config = config.validate()
        if config.bidirectional:
            raise ConfigError(
                "a model with a target per step reads left to right; bidirectional stacks are for classifiers"
            )
        layers = standard_layers(config)
        self.embedding, self.stack, self.head = layers[:3]
        self.conditioning = layers[3] if len(layers) > 3 else None
        super().__init__(layers, dtype, device, kernels)

    def zero_state(self, batch):
        return State.from_dict(self.stack.zero_state(batch, self.dtype, self.xp))

    def initial_state(self, labels):
        """The state a conditioned model starts from for ``labels`` (B,): each label's learnt
        state with state conditioning, else zeros."""
        labels = self._check_labels(labels, len(labels))
        if not self.conditioning.uses_state:
            return self.zero_state(len(labels))
        return State.from_dict(
            self.conditioning.initial_state(self.kernels, self.weights, labels, self.dtype)
        )

    def _check_labels(self, labels, B):
        if self.conditioning is None:
            if labels is not None:
                raise ValueError("labels are for conditioned models; this one has condition none")
            return None
        if labels is None:
            raise ValueError(f"a conditioned model (condition {self.config.condition}) needs labels")
        labels = np.ascontiguousarray(labels, dtype=np.intp)
        C = self.config.condition_classes
        if labels.shape != (B,) or (B and (labels.min() < 0 or labels.max() >= C)):
            raise ValueError(f"labels must be {B} ids in 0..{C - 1}")
        return self.kernels.to_device(labels)

    def _new_workspace(self, T, B):
        return _Workspace(self.stack, T, B, self.config.outputs, self.dtype, self.xp)

    # ------------------------------------------------------------------ passes

    def loss(self, tokens, targets, state=None, *, labels=None, lengths=None):
        """Mean cross-entropy without gradients (evaluation); dropout is off."""
        return self._run(tokens, targets, state, grad=False, labels=labels, lengths=lengths)

    def loss_and_grad(
        self,
        tokens,
        targets,
        state=None,
        *,
        dstate=None,
        train=False,
        rng=None,
        zero_grad=True,
        labels=None,
        state_grad=True,
        lengths=None,
    ):
        """Mean cross-entropy and its gradient, left in ``grads`` (``+=`` unless zero_grad).

        tokens: (T, B) integer ids. targets: (T, B) ids; a target below 0 is ignored (padding).
        state: the initial state (zeros when None). dstate: the gradient reaching the final
        state from a later chunk (truncated BPTT across calls), zeros when None. train: apply
        dropout, drawing masks from ``rng``. labels: (B,) label ids, required by (and only
        by) a conditioned model; with state conditioning and ``state`` None the initial state
        is each label's learnt one, and its gradient goes into those rows. Returns the loss, the
        final state and the initial state's gradient (None with ``state_grad`` False: a training
        step that does not pass it on skips the first step's recurrent product in backward).
        lengths (B): each row's real steps, for right-padded rows whose padding targets are
        ignored; with rows sorted longest first the padded steps are skipped (packed
        sequences) and the final state is each row's own (see ``RecurrentStack.forward``).
        """
        return self._run(
            tokens,
            targets,
            state,
            grad=True,
            dstate=dstate,
            train=train,
            rng=rng,
            zero_grad=zero_grad,
            labels=labels,
            state_grad=state_grad,
            lengths=lengths,
        )

    def _run(
        self,
        tokens,
        targets,
        state,
        *,
        grad,
        dstate=None,
        train=False,
        rng=None,
        zero_grad=True,
        labels=None,
        state_grad=True,
        lengths=None,
    ):
        cfg, k, w = self.config, self.kernels, self.weights
        tokens = k.to_device(tokens, np.intp)  # the batch's ids cross to the device (host: no copy)
        T, B = tokens.shape
        targets = np.ascontiguousarray(targets, dtype=np.intp).reshape(-1)
        if targets.shape[0] != T * B:
            raise ValueError(f"targets have {targets.shape[0]} entries, expected {T * B}")
        if lengths is not None:
            lengths = _checked_lengths(lengths, targets.reshape(T, B))
        cond = self.conditioning
        labels = self._check_labels(labels, B)
        learnt_state = state is None and cond is not None and cond.uses_state
        if learnt_state:
            state = State.from_dict(cond.initial_state(k, w, labels, self.dtype))
        elif state is None:
            state = self.zero_state(B)
        else:
            state = self.on_device(state)
        ws = self._workspace(T, B)
        use_dropout = train and cfg.dropout > 0 and cfg.layers > 1
        if use_dropout and rng is None:
            raise ValueError("training with dropout needs an rng")
        if cond is not None and cond.uses_input:
            self.stack.forward(
                k,
                w,
                ws.stack,
                tokens,
                state.to_dict(),
                lengths=lengths,
                use_dropout=use_dropout,
                rng=rng,
                input_gates=cond.input_gates(w, labels),
            )
        else:
            self.stack.forward(
                k, w, ws.stack, tokens, state.to_dict(), lengths=lengths, use_dropout=use_dropout, rng=rng
            )
        feats = self.stack.top_outputs(ws.stack).reshape(T * B, cfg.hidden)
        self.head.forward(k, w, ws.logits, feats)
        loss = mean_cross_entropy(k, ws, targets, grad)
        final = State.from_dict(self.stack.final_state(ws.stack, lengths))
        if not grad:
            return LossResult(loss, final)
        if zero_grad:
            self.grads[...] = 0.0
        dtop = ws.stack.dhs[0].reshape(T * B, cfg.hidden)
        self.head.backward(k, w, self.dweights, dtop, ws.logits, feats, ws.stack.scratch)
        input_dgates = (
            cond.input_dgates(k, self.dweights, labels) if cond is not None and cond.uses_input else None
        )
        dstate0 = self.stack.backward(
            k,
            w,
            self.dweights,
            ws.stack,
            None if dstate is None else self.on_device(dstate).to_dict(),
            input_dgates=input_dgates,
            state_grad=state_grad or learnt_state,
        )
        if learnt_state:
            cond.state_backward(k, self.dweights, labels, dstate0)
        return LossResult(loss, final, State.from_dict(dstate0) if state_grad else None)
