"""numrnn's command-line interface, installed as the package ``numrnn_cli``.

Thin: each command parses its options, calls one library function and renders the result.
Heavy imports (numpy, numba, the kernels) happen inside command bodies, so ``numrnn --help``
answers at once.
"""

from numrnn_cli.app import cli, main

__all__ = ["cli", "main"]
