"""Cell math on scalars, written once and compiled for each target (CPU now, CUDA later).

Formulas and gate order are PyTorch's, so weights move to and from ``torch.nn.RNN/LSTM/GRU``
unchanged. ``a_*`` are pre-activations: ``x W_ih + b_ih + h_prev W_hh + b_hh``.

    RNN   h = tanh(a)
    LSTM  i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)      (order i, f, g, o)
          c = f * c_prev + i * g
          h = o * tanh(c)
    GRU   r = sigmoid(x_r + h_r)  z = sigmoid(x_z + h_z)                          (order r, z, n)
          n = tanh(x_n + r * h_n)        x_* = x W_i* + b_i*,  h_* = h_prev W_h* + b_h*
          h = (1 - z) * n + z * h_prev

Only ``math`` is used, and every function returns scalars or tuples, so the same source
compiles with ``numba.njit`` and as a ``numba.cuda`` device function. ``build(jit)`` decorates
each helper with the ``jit`` it is given; helpers that call helpers refer to the decorated
versions through the closure, which is what lets numba type them.
"""

import math
from types import SimpleNamespace


def build(jit, tanh=math.tanh, sigmoid=None, one_like=None):
    """Compile the scalar cell functions with ``jit``; returns them as a namespace.

    ``tanh`` and ``sigmoid`` are the activations to use (a target may pass faster ones);
    by default ``math.tanh`` and an exact, overflow-safe logistic function. ``one_like(x)``
    is 1 in the type of ``x``, so that ``1 - x`` keeps a float32 computation in float32 (a
    target that types it so); by default the float literal.
    """

    if one_like is None:

        @jit
        def one_like(x):
            return 1.0

    if sigmoid is None:

        @jit
        def sigmoid(a):
            # Two branches so exp never overflows.
            if a >= 0:
                return 1.0 / (1.0 + math.exp(-a))
            e = math.exp(a)
            return e / (1.0 + e)

    @jit
    def rnn_cell(a):
        return tanh(a)

    @jit
    def rnn_cell_backward(h, dh):
        # da = dh * tanh'(a), with tanh' written through the cached output h.
        return dh * (one_like(h) - h * h)

    @jit
    def lstm_cell(a_i, a_f, a_g, a_o, c_prev):
        i = sigmoid(a_i)
        f = sigmoid(a_f)
        g = tanh(a_g)
        o = sigmoid(a_o)
        c = f * c_prev + i * g
        h = o * tanh(c)
        return i, f, g, o, c, h

    @jit
    def lstm_cell_backward(i, f, g, o, c_prev, c, dh, dc):
        # dc: the gradient reaching c from the next step; tanh(c) is recomputed, not cached.
        tanh_c = tanh(c)
        dc_total = dc + dh * o * (one_like(c) - tanh_c * tanh_c)
        da_i = dc_total * g * i * (one_like(i) - i)
        da_f = dc_total * c_prev * f * (one_like(f) - f)
        da_g = dc_total * i * (one_like(g) - g * g)
        da_o = dh * tanh_c * o * (one_like(o) - o)
        dc_prev = dc_total * f
        return da_i, da_f, da_g, da_o, dc_prev

    @jit
    def gru_cell(x_r, x_z, x_n, h_r, h_z, h_n, h_prev):
        r = sigmoid(x_r + h_r)
        z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h = (one_like(z) - z) * n + z * h_prev
        return r, z, n, h

    @jit
    def gru_cell_backward(r, z, n, h_n, h_prev, dh):
        # Returns the gradients of the six pre-activation parts (x_r and h_r share one, as do
        # x_z and h_z; x_n and h_n differ by the reset gate) and the direct path to h_prev.
        da_n = dh * (one_like(z) - z) * (one_like(n) - n * n)
        da_z = dh * (h_prev - n) * z * (one_like(z) - z)
        da_r = da_n * h_n * r * (one_like(r) - r)
        dh_n = da_n * r
        dh_prev = dh * z
        return da_r, da_z, da_n, dh_n, dh_prev

    return SimpleNamespace(
        sigmoid=sigmoid,
        rnn_cell=rnn_cell,
        rnn_cell_backward=rnn_cell_backward,
        lstm_cell=lstm_cell,
        lstm_cell_backward=lstm_cell_backward,
        gru_cell=gru_cell,
        gru_cell_backward=gru_cell_backward,
    )
