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

from numrnn.params import to_torch

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
