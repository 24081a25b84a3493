"""Shared test set-up.

numba's on-disk cache is off in tests (DESIGN.md section 4), so a kernel edit is always
what runs; CI sets the same and NUMBA_BOUNDSCHECK=1.
"""

import os

os.environ.setdefault("NUMRNN_CACHE", "0")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def unzeroed_workspaces_hold_nan(monkeypatch):
    """Every test runs with the translator's not-zeroed workspace buffers filled with NaN
    when carved, so a buffer read before a pass writes it shows up as a NaN."""
    from numrnn.tasks import translate

    monkeypatch.setattr(translate, "UNZEROED_FILL", np.nan)
