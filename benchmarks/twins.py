"""PyTorch twins of numrnn's models: the same architecture in torch.nn, with numrnn's parameter
names (``numrnn.params.to_torch``), so a numrnn model's weights load into its twin unchanged.

The parity tests compare numrnn with a twin holding its weights; the benchmarks train and sample
a twin next to numrnn. One class per numrnn topology, each with ``from_numrnn(model)``; the
functions below the classes serve every twin. This module imports torch: import it only where
torch is installed (a benchmark's torch child, a test after ``pytest.importorskip``).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from numrnn.params import is_transposed, to_torch

RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class CharLM(nn.Module):
    """numrnn's ``Model``: an embedding (one-hot vectors when ``embed`` is 0) -> stacked
    RNN(tanh)/GRU/LSTM -> a linear head to ``outputs`` (the vocabulary unless given),
    time-major. torch's own initialisation until weights are loaded."""

    def __init__(self, cell, vocab_size, hidden, layers, embed, outputs=None, dtype=None):
        super().__init__()
        self.vocab_size = vocab_size
        self.dtype = dtype or torch.get_default_dtype()
        self.embed = nn.Embedding(vocab_size, embed, dtype=dtype) if embed else None
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = RECURRENT[cell](embed or vocab_size, hidden, num_layers=layers, dtype=dtype, **kwargs)
        self.head = nn.Linear(hidden, outputs or vocab_size, dtype=dtype)

    @classmethod
    def from_numrnn(cls, model):
        """The twin of a numrnn ``Model``, holding its weights, in its float type."""
        c = model.config
        twin = cls(c.cell, c.vocab_size, c.hidden, c.layers, c.embed, c.outputs, torch_dtype(model.dtype))
        return load_numrnn_weights(twin, model)

    def features(self, tokens, state=None):
        """tokens (T, B) int64 -> the top layer's outputs (T, B, H), the final state
        (state None: zeros)."""
        if self.embed is not None:
            x = self.embed(tokens)
        else:
            x = F.one_hot(tokens, self.vocab_size).to(self.dtype)
        return self.rnn(x, state)

    def forward(self, tokens, state=None):
        """tokens (T, B) int64 -> logits (T, B, outputs), the final state."""
        out, state = self.features(tokens, state)
        return self.head(out), state

    def zero_state(self, batch):
        """Zeros for every layer: h (L, B, H), and (h, c) for the LSTM."""
        h = torch.zeros(self.rnn.num_layers, batch, self.rnn.hidden_size, dtype=self.dtype)
        return (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h

    def train_step(self, optimizer, tokens, targets, state, grad_clip):
        """One truncated-BPTT step as numrnn's Trainer takes it: the mean cross-entropy over all
        T x B characters (tokens, targets (T, B) int64 numpy), backward, global-norm clipping,
        an optimizer step. Returns (loss, the final state detached, to carry on)."""
        logits, state = self(torch.from_numpy(tokens), state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return loss.item(), detach_state(state)


class CharClassifier(nn.Module):
    """numrnn's ``Classifier`` (``numrnn.tasks.classify``): an embedding (one-hot vectors when
    ``embed`` is 0) -> stacked RNN(tanh)/GRU/LSTM, optionally bidirectional, over packed
    sequences (``pack_padded_sequence``, any order of lengths) -> each row's state after its
    last real character, the directions side by side (forward, reverse) -> a linear head to
    ``classes``. Time-major; torch's own initialisation until weights are loaded."""

    def __init__(
        self, cell, vocab_size, hidden, layers, embed, classes, bidirectional=False, dropout=0.0, dtype=None
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.dtype = dtype or torch.get_default_dtype()
        self.embed = nn.Embedding(vocab_size, embed, dtype=dtype) if embed else None
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = RECURRENT[cell](
            embed or vocab_size,
            hidden,
            num_layers=layers,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
            dtype=dtype,
            **kwargs,
        )
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(self.directions * hidden, classes, dtype=dtype)

    @classmethod
    def from_numrnn(cls, classifier):
        """The twin of a numrnn ``Classifier``, holding its weights, in its float type."""
        c = classifier.config
        twin = cls(
            c.cell,
            c.vocab_size,
            c.hidden,
            c.layers,
            c.embed,
            c.outputs,
            c.bidirectional,
            c.dropout,
            torch_dtype(classifier.dtype),
        )
        return load_numrnn_weights(twin, classifier)

    def zero_state(self, batch):
        """Zeros for every layer and direction: h (L*dirs, B, H), and (h, c) for the LSTM."""
        h = torch.zeros(self.rnn.num_layers * self.directions, batch, self.rnn.hidden_size, dtype=self.dtype)
        return (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h

    def forward(self, tokens, lengths, state=None):
        """tokens (T, B) int64, right-padded with any id; lengths (B) int64, 1..T (a CPU
        tensor or numpy array) -> (logits (B, classes), the final state: h (L*dirs, B, H), or
        the LSTM's (h, c), each row's at its own length, in the rows' order)."""
        if self.embed is not None:
            x = self.embed(tokens)
        else:
            x = F.one_hot(tokens, self.vocab_size).to(self.dtype)
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        _, final = self.rnn(packed, state)
        h = final[0] if isinstance(final, tuple) else final
        top = h[-self.directions :]  # (dirs, B, H)
        feats = top.transpose(0, 1).reshape(top.shape[1], -1)  # (B, dirs*H): forward, reverse
        return self.head(feats), final

    def train_step(self, optimizer, tokens, targets, lengths, grad_clip, class_weights=None):
        """One step as numrnn's Trainer takes it on a ClassifyTask batch: the mean (or
        class-weighted, torch's CrossEntropyLoss(weight=...)) cross-entropy of the batch
        (tokens (T, B), targets (B), lengths (B), numpy), backward, global-norm clipping, an
        optimizer step. Returns the loss."""
        logits, _ = self(torch.from_numpy(tokens), lengths)
        loss = F.cross_entropy(logits, torch.from_numpy(targets), weight=class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return loss.item()


class ConditionalCharLM(nn.Module):
    """numrnn's conditioned ``Model`` (``numrnn.tasks.generate``): an embedding (one-hot when
    ``embed`` is 0) -> stacked RNN(tanh)/GRU/LSTM -> a linear head to ``outputs``, reading a
    label per row as numrnn's ``Conditioning`` does (``condition``):

    - "input": the RNN reads [embedding(char); one_hot(label)] at every step, so layer 0's
      ``weight_ih_l0`` (G, D + C) is [numrnn's ``rnn.weight_ih_l0``^T | ``cond.input``^T]: the
      label's column adds ``cond.input[label]`` to the gate pre-activations, exactly numrnn's
      per-label row (the char-rnn names tutorial's way of feeding the category);
    - "state": the initial state is ``cond.h0[label]`` (and ``cond.c0`` for the LSTM), learnt
      parameters of this module (``cond.h0`` (C, L, H), as numrnn's);
    - "both": the two together.

    Time-major; torch's own initialisation until weights are loaded. ``numrnn_tensors`` gives
    the weights (or gradients) back under numrnn's names and layouts (``to_torch``'s)."""

    def __init__(
        self,
        cell,
        vocab_size,
        hidden,
        layers,
        embed,
        outputs,
        classes,
        condition="input",
        dropout=0.0,
        dtype=None,
    ):
        super().__init__()
        if condition not in ("input", "state", "both"):
            raise ValueError(f"condition must be input, state or both, not {condition!r}")
        self.vocab_size = vocab_size
        self.classes = classes
        self.dtype = dtype or torch.get_default_dtype()
        self.uses_input = condition in ("input", "both")
        self.uses_state = condition in ("state", "both")
        self.embed = nn.Embedding(vocab_size, embed, dtype=dtype) if embed else None
        self.char_width = embed or vocab_size
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = RECURRENT[cell](
            self.char_width + (classes if self.uses_input else 0),
            hidden,
            num_layers=layers,
            dropout=dropout if layers > 1 else 0.0,
            dtype=dtype,
            **kwargs,
        )
        self.head = nn.Linear(hidden, outputs, dtype=dtype)
        self.cond = nn.Module()
        if self.uses_state:
            self.cond.h0 = nn.Parameter(torch.zeros(classes, layers, hidden, dtype=dtype))
            if cell == "lstm":
                self.cond.c0 = nn.Parameter(torch.zeros(classes, layers, hidden, dtype=dtype))

    @classmethod
    def from_numrnn(cls, model):
        """The twin of a conditioned numrnn ``Model``, holding its weights, in its float type."""
        c = model.config
        twin = cls(
            c.cell,
            c.vocab_size,
            c.hidden,
            c.layers,
            c.embed,
            c.outputs,
            c.condition_classes,
            c.condition,
            c.dropout,
            torch_dtype(model.dtype),
        )
        tensors = {name: torch.from_numpy(value) for name, value in to_torch(model.weights).items()}
        if twin.uses_input:
            tensors["rnn.weight_ih_l0"] = torch.cat(
                [tensors["rnn.weight_ih_l0"], tensors.pop("cond.input").T], dim=1
            )
        twin.load_state_dict(tensors, strict=True)
        return twin

    def numrnn_tensors(self, grads=False):
        """The parameters (or their gradients) as numpy arrays under numrnn's names, in
        ``to_torch``'s layouts: ``rnn.weight_ih_l0`` split back into the character columns and
        ``cond.input`` (C, G)."""
        out = {name: (p.grad if grads else p).detach().numpy() for name, p in self.named_parameters()}
        if self.uses_input:
            joint = out["rnn.weight_ih_l0"]
            out["rnn.weight_ih_l0"] = np.ascontiguousarray(joint[:, : self.char_width])
            out["cond.input"] = np.ascontiguousarray(joint[:, self.char_width :].T)
        return out

    def initial_state(self, labels):
        """labels (B) int64 -> each row's label's learnt state (state conditioning), else
        zeros: h (L, B, H), and (h, c) for the LSTM."""
        B = labels.shape[0]
        if self.uses_state:
            h = self.cond.h0[labels].transpose(0, 1)
            if isinstance(self.rnn, nn.LSTM):
                return h.contiguous(), self.cond.c0[labels].transpose(0, 1).contiguous()
            return h.contiguous()
        h = torch.zeros(self.rnn.num_layers, B, self.rnn.hidden_size, dtype=self.dtype)
        return (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h

    def forward(self, tokens, labels, state=None):
        """tokens (T, B) int64, labels (B) int64 -> (logits (T, B, outputs), the final state);
        state None: the labels' initial state."""
        if self.embed is not None:
            x = self.embed(tokens)
        else:
            x = F.one_hot(tokens, self.vocab_size).to(self.dtype)
        if self.uses_input:
            onehot = F.one_hot(labels, self.classes).to(self.dtype)
            x = torch.cat([x, onehot.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=2)
        out, state = self.rnn(x, self.initial_state(labels) if state is None else state)
        return self.head(out), state

    def loss(self, tokens, targets, labels):
        """The mean cross-entropy over the real targets (targets -1 at padding are ignored, as
        numrnn's loss ignores them); tokens, targets (T, B), labels (B) torch int64."""
        logits, _ = self(tokens, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)

    def train_step(self, optimizer, tokens, targets, labels, grad_clip):
        """One step as numrnn's Trainer takes it on a GenerateTask batch (numpy tokens, targets
        (T, B), labels (B)): the loss, backward, global-norm clipping, an optimizer step.
        Returns the loss."""
        loss = self.loss(
            torch.from_numpy(np.asarray(tokens, np.int64)),
            torch.from_numpy(np.asarray(targets, np.int64)),
            torch.from_numpy(np.asarray(labels, np.int64)),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return loss.item()

    @torch.no_grad()
    def sample(self, label, start, end, max_length, generator=None, temperature=1.0):
        """One sequence for ``label``, the plain PyTorch way: batch 1, a forward call per
        character, a softmax and ``torch.multinomial`` draw, stopping at ``end`` or after
        ``max_length`` drawn characters. Returns the drawn ids (``end`` not included)."""
        labels = torch.tensor([label])
        state = self.initial_state(labels)
        token = torch.tensor([[start]])
        ids = []
        for _ in range(max_length):
            logits, state = self(token, labels, state)
            probs = torch.softmax(logits[0, 0] / temperature, dim=-1)
            drawn = int(torch.multinomial(probs, 1, generator=generator))
            if drawn == end:
                break
            ids.append(drawn)
            token = torch.tensor([[drawn]])
        return ids


def torch_dtype(numpy_dtype):
    """torch.float32 for numpy's float32, and so on."""
    return getattr(torch, np.dtype(numpy_dtype).name)


def load_numrnn_weights(twin, model):
    """Copy a numrnn model's weights into its twin; every name and shape must match."""
    tensors = {name: torch.from_numpy(value) for name, value in to_torch(model.weights).items()}
    twin.load_state_dict(tensors, strict=True)
    return twin


def detach_state(state):
    """A recurrent state cut from the graph that made it: h, or the LSTM's (h, c)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class Translator(nn.Module):
    """numrnn's ``Translator`` (``numrnn.tasks.translate``), an encoder-decoder with attention:

        source (S, B) -> embedding (one-hot when ``embed`` is 0) -> encoder RNN/GRU/LSTM,
            optionally bidirectional, over packed sequences -> outputs (S, B, D),
            D = directions * hidden, and each row's final states
        final states, the directions side by side per layer (forward, reverse) -> bridge:
            h0 = tanh(bridge.h(final_h)) per layer (LSTM: c0 = bridge.c(final_c))
        tokens (T, B) (START, then the target) -> embedding -> decoder (decoder_hidden units,
            the encoder's cell and layers) from h0 (c0) -> outputs (T, B, Hd)
        attention (Luong): context = softmax(scores, padding masked) @ encoder outputs, with
            "dot": q . v; "general": q . (v W), ``attention.weight`` (D, Hd); "additive"
            (Bahdanau): v . tanh(values K + q U), ``attention.key`` (D, Hd),
            ``attention.query`` (Hd, Hd), ``attention.v`` (Hd)
            -> attentional state tanh(combine([context; h_t])) ("none": h_t itself)
        -> head: Linear to the target characters (the target, then END).

    Parameter names are numrnn's; the recurrent and Linear weights are in PyTorch's layout
    (out, in), the attention's in numrnn's (they belong to no torch layer): the layouts
    ``to_torch`` writes to checkpoints, so ``from_numrnn`` loads them as every twin does
    (``load_numrnn_weights``), and ``numrnn_tensors`` converts back (``is_transposed``).
    Time-major; torch's own initialisation until weights are loaded."""

    ATTENTIONS = ("none", "dot", "general", "additive")

    def __init__(
        self,
        cell,
        vocab_size,
        hidden,
        layers,
        embed,
        outputs,
        bidirectional=False,
        attention="general",
        decoder_hidden=0,
        dtype=None,
    ):
        super().__init__()
        if attention not in self.ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(self.ATTENTIONS)}, not {attention!r}")
        self.dtype = dtype or torch.get_default_dtype()
        self.directions = 2 if bidirectional else 1
        self.layers = layers
        D = self.directions * hidden
        Hd = decoder_hidden or D
        if attention == "dot" and Hd != D:
            raise ValueError(f"dot attention needs decoder_hidden ({Hd}) to equal {D}")
        self.kind = attention
        self.is_lstm = cell == "lstm"
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.encoder = nn.Module()
        self.encoder.vocab_size = vocab_size
        self.encoder.embed = nn.Embedding(vocab_size, embed, dtype=dtype) if embed else None
        self.encoder.rnn = RECURRENT[cell](
            embed or vocab_size, hidden, num_layers=layers, bidirectional=bidirectional, dtype=dtype, **kwargs
        )
        self.bridge = nn.Module()
        self.bridge.h = nn.Linear(D, Hd, dtype=dtype)
        if self.is_lstm:
            self.bridge.c = nn.Linear(D, Hd, dtype=dtype)
        self.decoder = nn.Module()
        self.decoder.vocab_size = outputs + 1  # every output id and START, the last
        self.decoder.embed = nn.Embedding(outputs + 1, embed, dtype=dtype) if embed else None
        self.decoder.rnn = RECURRENT[cell](embed or outputs + 1, Hd, num_layers=layers, dtype=dtype, **kwargs)
        if attention != "none":
            self.attention = nn.Module()
            if attention == "general":
                self.attention.weight = nn.Parameter(torch.empty(D, Hd, dtype=dtype))
            elif attention == "additive":
                self.attention.key = nn.Parameter(torch.empty(D, Hd, dtype=dtype))
                self.attention.query = nn.Parameter(torch.empty(Hd, Hd, dtype=dtype))
                self.attention.v = nn.Parameter(torch.empty(Hd, dtype=dtype))
            for p in self.attention.parameters():
                nn.init.uniform_(p, -(D**-0.5), D**-0.5)
            self.combine = nn.Linear(D + Hd, Hd, dtype=dtype)
        self.head = nn.Linear(Hd, outputs, dtype=dtype)

    @classmethod
    def from_numrnn(cls, model):
        """The twin of a numrnn ``Translator``, holding its weights, in its float type."""
        c = model.config
        twin = cls(
            c.cell,
            c.vocab_size,
            c.hidden,
            c.layers,
            c.embed,
            c.outputs,
            c.bidirectional,
            c.attention,
            c.decoder_hidden,
            torch_dtype(model.dtype),
        )
        return load_numrnn_weights(twin, model)

    def numrnn_tensors(self, grads=False):
        """The parameters (or their gradients) as numpy arrays under numrnn's names, in
        numrnn's layouts (``model.weights``'s, ``model.dweights``'s)."""
        out = {}
        for name, p in self.named_parameters():
            value = (p.grad if grads else p).detach().numpy()
            out[name] = np.ascontiguousarray(value.T if is_transposed(name) else value)
        return out

    # ------------------------------------------------------------------ passes

    def _embed(self, side, tokens):
        if side.embed is not None:
            return side.embed(tokens)
        return F.one_hot(tokens, side.vocab_size).to(self.dtype)

    def encode(self, source, lengths):
        """source (S, B) int64 right-padded, lengths (B) (any order) -> (encoder outputs
        (B, S, D), zeros past each row's end; the decoder's initial state)."""
        S = source.shape[0]
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(
            self._embed(self.encoder, source), lengths, enforce_sorted=False
        )
        out, final = self.encoder.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=S)  # (S, B, D)

        def joined(state):  # (L * dirs, B, H) -> (L, B, dirs * H), forward then reverse
            L, B = self.layers, state.shape[1]
            return state.view(L, self.directions, B, -1).permute(0, 2, 1, 3).reshape(L, B, -1)

        if self.is_lstm:
            h0 = torch.tanh(self.bridge.h(joined(final[0])))
            state = (h0.contiguous(), self.bridge.c(joined(final[1])).contiguous())
        else:
            state = torch.tanh(self.bridge.h(joined(final))).contiguous()
        return out.transpose(0, 1), state

    def keys(self, values):
        """What the decoder's queries are compared with: values (B, S, D) -> (B, S, Hd)."""
        if self.kind == "general":
            return values @ self.attention.weight
        if self.kind == "additive":
            return values @ self.attention.key
        return values

    def attend(self, queries, values, keys, mask):
        """queries (B, T, Hd), values (B, S, D), keys (B, S, Q), mask (B, 1, S) true at real
        source positions -> (features (B, T, Hd) for the head, weights (B, T, S))."""
        if self.kind == "additive":
            projected = queries @ self.attention.query  # (B, T, Hd)
            scores = torch.tanh(projected.unsqueeze(2) + keys.unsqueeze(1)) @ self.attention.v
        else:
            scores = queries @ keys.transpose(1, 2)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=2)
        context = weights @ values
        return torch.tanh(self.combine(torch.cat([context, queries], dim=2))), weights

    def forward(self, source, lengths, tokens):
        """source (S, B), lengths (B), tokens (T, B) int64 -> logits (T, B, outputs)."""
        values, state = self.encode(source, lengths)
        out, _ = self.decoder.rnn(self._embed(self.decoder, tokens), state)  # (T, B, Hd)
        if self.kind == "none":
            return self.head(out)
        mask = _source_mask(lengths, source.shape[0])
        feats, _ = self.attend(out.transpose(0, 1), values, self.keys(values), mask)
        return self.head(feats.transpose(0, 1))

    def loss(self, source, lengths, tokens, targets):
        """numrnn's ``Translator.loss``: the mean cross-entropy per real target (targets -1 at
        padding are ignored); source (S, B), lengths (B), tokens, targets (T, B), int64."""
        logits = self(source, lengths, tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)

    def train_step(self, optimizer, source, lengths, tokens, targets, grad_clip):
        """One step as numrnn's Trainer takes it on a TranslateTask batch (numpy, as
        ``TranslateTask.batch_at`` gives them): the loss, backward, global-norm clipping, an
        optimizer step. Returns the loss."""
        loss = self.loss(*(_long(a) for a in (source, lengths, tokens, targets)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return loss.item()

    # ------------------------------------------------------------------ decoding

    def _step(self, token, state, values, keys, mask):
        """One decoder step for every row: token (B) -> (logits (B, outputs), state)."""
        out, state = self.decoder.rnn(self._embed(self.decoder, token.unsqueeze(0)), state)
        query = out.transpose(0, 1)  # (B, 1, Hd)
        if self.kind != "none":
            query, _ = self.attend(query, values, keys, mask)
        return self.head(query[:, 0]), state

    @torch.no_grad()
    def greedy(self, source, lengths, start, end, max_length):
        """numrnn's ``Translator.greedy``, batched: each row's most likely character at every
        step fed back, until every row has drawn END or ``max_length`` characters. source
        (S, B), lengths (B) (numpy or torch). Returns (ids (B,) lists without END, ended (B,)
        bool numpy)."""
        source, lengths = _long(source), _long(lengths)
        values, state = self.encode(source, lengths)
        keys, mask = self.keys(values), _source_mask(lengths, source.shape[0])
        B = source.shape[1]
        token = torch.full((B,), start, dtype=torch.int64)
        running = torch.ones(B, dtype=torch.bool)
        drawn = []
        for _ in range(max_length):
            logits, state = self._step(token, state, values, keys, mask)
            token = logits.argmax(dim=1)
            drawn.append(torch.where(running, token, end))
            running &= token != end
            if not running.any():
                break
        ids = torch.stack(drawn, dim=1).tolist()  # (B, steps)
        return [[t for t in row if t != end] for row in ids], (~running).numpy()

    @torch.no_grad()
    def beam_search(
        self, source, start, end, *, beam=5, max_length=100, alpha=1.0, n_best=1, stop_early=False
    ):
        """The straightforward beam search over ONE source sentence (ids (S,)): its ``beam``
        hypotheses are the decoder's batch rows. Each step extends every live hypothesis by
        every character and keeps the ``beam`` best totals; a hypothesis that draws END
        leaves the beam as a finished translation scored log-probability / length**alpha
        (length counting END). Runs until every hypothesis has ended or ``max_length``
        characters (unfinished ones then scored over their length). numrnn's
        ``Translator.beam_search`` semantics: returns a list of (ids without END,
        normalised score, log-probability, ended), best first, ``n_best`` long.

        stop_early: stop once no live hypothesis can beat the n-best ended ones (a
        log-probability s only falls, so it ends at best at s / max_length**alpha), as
        numrnn's search does; the result is the same, in fewer steps."""
        K = int(beam)
        source = _long(source).reshape(-1, 1)
        S = source.shape[0]
        values, state = self.encode(source, torch.tensor([S]))
        keys, mask = self.keys(values), torch.ones(1, 1, S, dtype=torch.bool)
        values, keys, mask = (a.expand(K, *a.shape[1:]) for a in (values, keys, mask))
        state = tuple(s.repeat(1, K, 1) for s in state) if self.is_lstm else state.repeat(1, K, 1)
        scores = torch.full((K,), float("-inf"), dtype=torch.float64)
        scores[0] = 0.0  # one live hypothesis to start with, not K copies
        token = torch.full((K,), start, dtype=torch.int64)
        history = torch.zeros((K, 0), dtype=torch.int64)
        finished = []
        for step in range(max_length):
            logits, state = self._step(token, state, values, keys, mask)
            logp = torch.log_softmax(logits.to(torch.float64), dim=1)
            V = logp.shape[1]
            totals, best = (scores[:, None] + logp).view(-1).topk(K)
            parent, token = best // V, best % V
            history = torch.cat([history[parent], token[:, None]], dim=1)
            ended = (token == end) & torch.isfinite(totals)
            for h in ended.nonzero()[:, 0].tolist():
                logprob = float(totals[h])
                finished.append((history[h, :-1].tolist(), logprob / (step + 1) ** alpha, logprob, True))
            scores = totals.masked_fill(ended, float("-inf"))  # an ended hypothesis leaves the beam
            if not torch.isfinite(scores).any():
                break
            if stop_early and len(finished) >= n_best:
                bar = sorted((c[1] for c in finished), reverse=True)[n_best - 1]
                if float(scores.max()) / max_length**alpha <= bar:
                    break
            state = tuple(s[:, parent] for s in state) if self.is_lstm else state[:, parent]
        if len(finished) < n_best:  # unfinished ones at the limit, best first
            n = history.shape[1]
            for h in torch.argsort(-scores, stable=True).tolist():
                if torch.isfinite(scores[h]):
                    logprob = float(scores[h])
                    finished.append((history[h].tolist(), logprob / n**alpha, logprob, False))
        finished.sort(key=lambda c: -c[1])
        return finished[:n_best]


def _long(values):
    """An int64 tensor of ``values`` (numpy array, list or tensor)."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.int64)
    return torch.from_numpy(np.asarray(values, dtype=np.int64))


def _source_mask(lengths, S):
    """(B, 1, S) true at each row's real source positions."""
    return (torch.arange(S)[None, :] < torch.as_tensor(lengths)[:, None]).unsqueeze(1)
