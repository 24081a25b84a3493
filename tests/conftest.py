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
