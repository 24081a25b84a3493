"""rich consoles, created on first use so that `numrnn --help` never imports rich."""

import functools


@functools.cache
def err_console():
    """Progress, status, warnings and errors: stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@functools.cache
def out_console():
    """The product of a command (tables, text): stdout."""
    from rich.console import Console

    return Console(highlight=False)
