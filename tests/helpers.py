"""Builders shared by the kernel, model and parity tests."""

import numpy as np

from numrnn.cells import GATES_PER_CELL


def cell_case(cell, rng, T=4, B=3, D=5, H=4, dtype=np.float64):
    """Random inputs and weights for one layer: x, h0, c0, Wx, Wh, bx, bh."""
    G = GATES_PER_CELL[cell] * H
    u = lambda *shape: rng.uniform(-0.8, 0.8, shape).astype(dtype)  # noqa: E731
    return dict(x=u(T, B, D), h0=u(B, H), c0=u(B, H), Wx=u(D, G), Wh=u(H, G), bx=u(G), bh=u(G))
