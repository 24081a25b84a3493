"""Printing a benchmark's result table: rich when installed, plain aligned columns otherwise."""

import sys


def print_table(columns, rows, title, width):
    """``columns`` may hold line breaks (rich stacks them, the plain table joins them); the
    first column is left-aligned, the rest right-aligned. ``width`` applies when stdout is not
    a terminal, so piped output does not depend on the terminal it came from."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        flat = [[c.replace("\n", " ") for c in columns], *rows]
        widths = [max(len(str(r[i])) for r in flat) for i in range(len(columns))]
        for r in flat:
            print(
                "  ".join(
                    str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
                )
            )
        return
    table = Table(title=title)
    table.add_column(columns[0], justify="left", no_wrap=True)
    for name in columns[1:]:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else width).print(table)
