"""One flat buffer per model, with named views; gradients share the layout.

Because every parameter lives in one contiguous array, clipping and the optimizers are one
loop over one array. Names are PyTorch's state_dict names (``rnn.weight_ih_l0``, ...), but
the kernels' layouts are (D, G) for weights (``x @ W``), where PyTorch stores (G, D):
``to_torch``/``from_torch`` transpose the 2-D layer and head weights.
"""

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple
    offset: int

    @property
    def size(self):
        return int(np.prod(self.shape))


class ParamLayout:
    """Where each named tensor sits in the flat buffer."""

    def __init__(self, entries):
        self.slots = {}
        offset = 0
        for name, shape in entries:
            shape = tuple(int(s) for s in shape)
            self.slots[name] = Slot(name, shape, offset)
            offset += self.slots[name].size
        self.size = offset

    def __iter__(self):
        return iter(self.slots.values())

    def names(self):
        return list(self.slots)

    def views(self, flat):
        """Named views into ``flat`` (no copies): writing to a view writes the buffer."""
        if flat.shape != (self.size,):
            raise ValueError(f"flat buffer has shape {flat.shape}, layout needs ({self.size},)")
        return {slot.name: flat[slot.offset : slot.offset + slot.size].reshape(slot.shape) for slot in self}

    def zeros(self, dtype, xp=np):
        """A flat zero buffer for the layout, in ``xp``'s memory (numpy's by default)."""
        return xp.zeros(self.size, dtype=dtype)


# The matrices PyTorch's modules store (out, in) and the kernels read (in, out): every
# recurrent stack's input and recurrent weights (a translator's under encoder./decoder.) and
# every nn.Linear's weight (the head; a translator's bridge and combine layers). Embedding
# tables and a translator's attention matrices are the same either way.
_TRANSPOSED = re.compile(
    r"(?:(?:encoder|decoder)\.)?rnn\.weight_(?:ih|hh)_l\d+(?:_reverse)?|(?:head|combine|bridge\.[hc])\.weight"
)


def is_transposed(name):
    """Whether the tensor ``name`` is stored transposed in PyTorch's layout."""
    return _TRANSPOSED.fullmatch(name) is not None


def torch_shapes(layout):
    """Each tensor's shape in PyTorch's layout, keyed by state_dict name."""
    return {slot.name: slot.shape[::-1] if is_transposed(slot.name) else slot.shape for slot in layout}


def to_torch(views):
    """Tensors in PyTorch's layout (C-contiguous copies), keyed by state_dict name."""
    return {
        name: np.ascontiguousarray(value.T if is_transposed(name) else value) for name, value in views.items()
    }


def from_torch(views, tensors):
    """Copy tensors in PyTorch's layout into ``views`` (a model's named views)."""
    for name, target in views.items():
        source = np.asarray(tensors[name])
        target[...] = source.T if is_transposed(name) else source
