"""rich consoles, created on first use so that `numrnn --help` never imports rich."""

import functools
import os
import sys

import click


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


_noted = set()


def note_once(message):
    """A dim "note:" line on stderr, at most once per process for each message."""
    if message in _noted:
        return
    _noted.add(message)
    # click, not rich: a warm `numrnn sample` that says only this never imports rich (its
    # import and console: most of the 0.1-0.17 s the README's start-up measurements took off).
    click.echo(click.style(f"note: {message}", dim=True), err=True)


def resolve_device(ctx, param, device):
    """A ``--device`` option's callback: the device to run on. "auto" takes a usable GPU, or
    falls back to the CPU and says why (once), when numba-cuda is installed but cannot run."""
    from numrnn.kernels import resolve_device

    resolved, reason = resolve_device(device)
    if reason:
        note_once(f"--device auto: {reason}; running on the CPU")
    return resolved


def warn(message):
    """A yellow "warning:" line on stderr."""
    err_console().print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def warn_dropped(dropped):
    """Warn about the characters a vocabulary dropped ({char: count}), the most frequent first."""
    if not dropped:
        return
    from numrnn.data import describe_char

    shown = ", ".join(
        f"{describe_char(char)} x{count}"
        for char, count in sorted(dropped.items(), key=lambda item: -item[1])[:8]
    )
    more = f" and {len(dropped) - 8} more" if len(dropped) > 8 else ""
    warn(f"dropped {sum(dropped.values()):,} character(s) the model never saw: {shown}{more}")


def closed_pipe_exit():
    """Call on BrokenPipeError: the reader (e.g. `head`) has gone, so stop quietly with exit
    code 0, as Unix tools do (stdout is pointed at /dev/null so that Python's final flush
    cannot raise again)."""
    import click

    from numrnn_cli.exit_codes import ExitCode

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise click.exceptions.Exit(ExitCode.OK)
