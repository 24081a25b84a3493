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
        self.rnn = RECURRENT[cell](embed or vocab_size, hidden, num_layers=layers, dtype=dtype,
                                   **kwargs)
        self.head = nn.Linear(hidden, outputs or vocab_size, dtype=dtype)

    @classmethod
    def from_numrnn(cls, model):
        """The twin of a numrnn ``Model``, holding its weights, in its float type."""
        c = model.config
        twin = cls(c.cell, c.vocab_size, c.hidden, c.layers, c.embed, c.outputs,
                   torch_dtype(model.dtype))
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
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(targets).reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return loss.item(), detach_state(state)


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
