"""numrnn: Numba-accelerated recurrent neural networks (RNN, LSTM, GRU) for characters.

Importing the package is cheap; the compiled kernels load on first use
(`numrnn.kernels.get_backend`, `numrnn.model.Model`).
"""

__version__ = "0.1.0"
