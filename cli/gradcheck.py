"""`numrnn gradcheck`: the kernels' BPTT gradients against finite differences."""

import contextlib
import json
import sys

import click

from numrnn.configs import CELLS, GRADCHECK_LOSSES
from numrnn_cli.exit_codes import ExitCode


@click.command("gradcheck")
@click.option(
    "--cell",
    "cells",
    multiple=True,
    type=click.Choice(CELLS),
    help="Cell to check; repeat for several.  [default: all of rnn, lstm, gru]",
)
@click.option(
    "--loss",
    "losses",
    multiple=True,
    type=click.Choice(GRADCHECK_LOSSES),
    help="Topology's loss to check; repeat for several.  [default: all]",
)
@click.option("--seed", default=0, type=int, help="Seed for the tiny models' weights and data.")
@click.option(
    "--tolerance",
    default=1e-6,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest relative error |a-b|/max(|a|+|b|,1e-7) that passes.",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print the results as JSON on stdout: {"ok": ..., "rows": [...]}.'
)
def gradcheck(cells, losses, seed, tolerance, as_json):
    """Check the analytic BPTT gradients of every cell against finite differences.

    For each cell (rnn, lstm, gru) at 1 and 2 layers and each topology's loss (--loss):
    "lm", many-to-many (a language model); "classify", many-to-one over rows of different
    lengths, padded (the class read at each row's last real character); "classify-bi", the
    same with a bidirectional stack; "one-to-one", a single step (a plain classifier);
    "generate", a generator conditioned on a label (its initial state and every input);
    "translate", an encoder-decoder over padded sources without attention, and
    "translate-dot", "translate-general", "translate-additive" with that attention (a
    bidirectional encoder, padded positions masked), a tiny float64 model is built from
    --seed, and the gradient of the loss with respect to
    every element of every weight tensor and of the initial states is computed twice: by
    the kernels' backward pass and by central differences (Ridders' extrapolation). A row
    shows the largest relative error in one tensor. The first run compiles the kernels
    (up to a minute); later runs reuse numba's cache.

    Exits 0 when every error is below --tolerance, 3 otherwise.

    \b
    Examples:
      numrnn gradcheck
      numrnn gradcheck --cell lstm --cell gru --seed 7
      numrnn gradcheck --loss classify-bi
      numrnn gradcheck --json | python -m json.tool
    """
    from numrnn.gradcheck import run_gradcheck
    from numrnn_cli.console import err_console

    cells = cells or CELLS
    console = err_console()
    with (
        console.status("checking gradients (the first run compiles the kernels)...", spinner="dots")
        if console.is_terminal
        else contextlib.nullcontext()
    ):
        report = run_gradcheck(cells=cells, losses=losses or GRADCHECK_LOSSES, seed=seed, tolerance=tolerance)
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(report)
    if not report.ok:
        raise click.exceptions.Exit(ExitCode.GRADCHECK_MISMATCH)


def _print_table(report):
    from rich.table import Table

    from numrnn_cli.console import out_console

    failed = sum(not row.ok for row in report.rows)
    out = out_console()
    # One table per loss, so that the tensor names (encoder.rnn.weight_hh_l1_reverse) fit.
    losses = list(dict.fromkeys(row.loss for row in report.rows))
    for loss in losses:
        table = Table(title=f"{loss}: analytic vs numeric gradients (float64)", title_justify="left")
        for name, justify in (
            ("cell", "left"),
            ("layers", "right"),
            ("tensor", "left"),
            ("max rel error", "right"),
            ("verdict", "left"),
        ):
            table.add_column(name, justify=justify)
        for row in report.rows:
            if row.loss == loss:
                verdict = "[green]ok[/]" if row.ok else "[bold red]MISMATCH[/]"
                table.add_row(row.cell, str(row.layers), row.tensor, f"{row.max_rel_error:.2e}", verdict)
        out.print(table)
    if failed:
        out.print(
            f"[bold red]{failed} of {len(report.rows)} tensors above the tolerance "
            f"{report.tolerance:g}[/] (worst {report.worst():.2e})"
        )
    else:
        out.print(
            f"[green]all {len(report.rows)} tensors within {report.tolerance:g}[/] "
            f"(worst {report.worst():.2e})"
        )
