"""`numrnn plot`: train and validation loss from --metrics files, in the terminal or as an image."""

import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from numrnn_cli.console import closed_pipe_exit

X_AXES = ("step", "time")
SERIES = ("both", "train", "val")
IMAGE_FORMATS = ("png", "svg", "pdf")  # by the --out file's extension
IMAGE_INCHES = (8.0, 5.0)
IMAGE_DPI = 150  # a PNG of 1200 x 750 pixels
MIN_WIDTH, MIN_HEIGHT = 40, 12  # terminal characters; smaller leaves no room to plot
TERMINAL_COLORS = (12, 9, 2, 13, 6, 3)  # xterm-256 numbers: blue, red, green, magenta, cyan, yellow
IMAGE_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
# Terminal markers: a fine line for train, dots for validation; without colour, each run its own.
TRAIN_MARKERS, VAL_MARKERS = ("braille", "hd", "·", "+", "-", "="), ("•", "x", "o", "*", "#", "@")
_GLYPHS = {"braille": "⢕", "hd": "▚"}  # how plotext's named markers look, for a text legend
LEGEND_HIDES_AT_MOST = 2  # curve cells a legend box may cover; else it goes below
_FRAME_LINES = 6  # title, two frame lines, tick labels, axis labels, room
_TIME_UNITS = ((7200, 3600, "h"), (120, 60, "min"), (0, 1, "s"))  # (from seconds, divisor, unit)


@dataclass
class Line:
    """One curve to draw: a run's train or validation loss."""

    label: str
    color: int  # the run's index into the palette
    kind: str  # "train" or "val"
    xs: tuple
    ys: tuple
    smooth: int = 1  # the train loss averaged over this many records


@click.command("plot")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(X_AXES),
    default="step",
    help="Horizontal axis: training steps, or training time (summed over resumed "
    "sessions; in s, min or h by its length).",
)
@click.option(
    "--series",
    type=click.Choice(SERIES),
    default="both",
    help="Which losses to draw: train, validation, or both.",
)
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=1,
    metavar="N",
    help="Draw the train loss as a moving average over N records (each point the mean of "
    "itself and the N-1 before it); 1: as logged.",
)
@click.option("--log-y", is_flag=True, help="Logarithmic loss axis.")
@click.option(
    "--title",
    default=None,
    help="Title above the plot.  [default: the file's name for one run, else 'train and validation loss']",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write an image to this file instead of drawing in the terminal: PNG, or SVG "
    "or PDF by the extension (1200 x 750 pixels as PNG); an existing file is "
    "replaced. Needs matplotlib: pip install 'numrnn[plot]'.",
)
@click.option(
    "--width",
    type=click.IntRange(min=MIN_WIDTH),
    default=None,
    metavar="COLUMNS",
    help="Terminal plot width in characters.  [default: the terminal's width]",
)
@click.option(
    "--height",
    type=click.IntRange(min=MIN_HEIGHT),
    default=None,
    metavar="LINES",
    help="Terminal plot height in lines.  [default: the terminal's height less 2]",
)
def plot(metrics, x_axis, series, smooth, log_y, title, out, width, height):
    """Plot train and validation loss from --metrics files, in the terminal or as an image.

    Draws the train loss of each file's "train" records and the validation loss of its
    "eval" records against the step (or the training time, --x time), several files
    overlaid, each in its own colour and named by its file name (with its folder where two
    names are equal). The train loss is a line, the validation loss dots (an image: dashed
    with circles). Files from every task work: only the event, step, elapsed_s, train_loss
    and val_loss fields are read. The terminal plot goes to stdout; -o FILE writes an image.

    A file that a resumed training appended to is one run. Where the step goes backwards (a
    new training appended to an old file, or a resume from an earlier checkpoint than the
    last record's) a new run starts, drawn as its own line named NAME#2, NAME#3, ...

    \b
    Examples:
      numrnn plot run.jsonl
      numrnn plot lstm.jsonl gru.jsonl --x time --log-y
      numrnn plot run.jsonl --series train --smooth 10 --width 100 --height 30
      numrnn plot lstm.jsonl gru.jsonl -o loss.png --title "LSTM vs GRU"
    """
    if out is not None:
        if width is not None or height is not None:
            raise click.UsageError(
                "--width and --height size the terminal plot; with --out the "
                f"image is {IMAGE_INCHES[0] * IMAGE_DPI:.0f} x "
                f"{IMAGE_INCHES[1] * IMAGE_DPI:.0f} pixels"
            )
        _image_format(out)
        try:
            import matplotlib  # noqa: F401  (checked first: the missing extra is the first thing to fix)
        except ImportError:
            _fail(f"writing {out.name} needs matplotlib: pip install 'numrnn[plot]'")

    lines = _lines(metrics, series, smooth, x_axis)
    x_label = "step" if x_axis == "step" else None
    if x_axis == "time":
        lines, x_label = _in_time_unit(lines)
    if log_y:
        _check_positive(lines)
    if title is None:
        title = _default_title(lines, series)

    if out is not None:
        _write_image(lines, out, title=title, x_label=x_label, log_y=log_y)
        click.echo(f"wrote {out}", err=True)
        return
    columns, rows = shutil.get_terminal_size()
    width = width or max(columns, MIN_WIDTH)
    height = height or max(rows - 2, MIN_HEIGHT)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = _render_terminal(
        lines, title=title, x_label=x_label, log_y=log_y, width=width, height=height, color=color
    )
    try:
        click.echo(text, color=color)
    except BrokenPipeError:
        closed_pipe_exit()


# --------------------------------------------------------------------------- the curves


def _lines(paths, series, smooth, x_axis):
    """Every file's runs as Lines, in argument order; a DataError for a file with nothing to draw."""
    from numrnn.errors import DataError
    from numrnn.metrics_file import moving_average, read_metrics

    files = [read_metrics(path) for path in paths]
    names = file_labels(paths)
    lines, color = [], 0
    for path, name, runs in zip(paths, names, files):
        kinds = ("train", "val") if series == "both" else (series,)
        drawn = False
        for run in runs:
            label = name if len(runs) == 1 else f"{name}#{run.index}"
            for kind in kinds:
                curve = run.train if kind == "train" else run.val
                if not len(curve):
                    continue
                window = smooth if kind == "train" else 1
                ys = moving_average(curve.losses, window) if window > 1 else curve.losses
                xs = curve.steps if x_axis == "step" else curve.elapsed_s
                lines.append(Line(label, color, kind, tuple(xs), tuple(ys), window))
                drawn = True
            color += 1
        if not drawn and series == "train":
            raise DataError(
                f'{path} has no train loss to plot (no "train" record with a train_loss); try --series val'
            )
        if not drawn:
            raise DataError(
                f'{path} has no validation loss to plot (no "eval" record with a '
                f"val_loss); try --series train"
            )
    return lines


def file_labels(paths):
    """Legend names: each file's stem, with as many of its folders as tell equal stems apart;
    a file given twice gets " (2)"."""
    parts = [Path(os.path.abspath(path)).with_suffix("").parts for path in paths]
    stems = [p[-1] for p in parts]
    labels = list(stems)
    clashing = {p for p in parts if stems.count(p[-1]) > 1}  # distinct files with equal stems
    depth = 1
    while len({"/".join(p[-depth:]) for p in clashing}) < len(clashing) and depth < max(
        len(p) for p in clashing
    ):
        depth += 1
    if clashing:
        labels = ["/".join(p[-depth:]) if p in clashing else p[-1] for p in parts]
    seen = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return labels


def _in_time_unit(lines):
    longest = max(max(line.xs) for line in lines)
    # The first unit whose threshold the run reaches, else the last.
    _, divisor, unit = next((entry for entry in _TIME_UNITS if longest >= entry[0]), _TIME_UNITS[-1])
    for line in lines:
        line.xs = tuple(x / divisor for x in line.xs)
    return lines, f"training time ({unit})"


def _check_positive(lines):
    from numrnn.errors import ConfigError

    for line in lines:
        low = min(line.ys)
        if low <= 0:
            raise ConfigError(
                f"--log-y needs losses above 0, but {line.label}'s {line.kind} loss "
                f"reaches {low:g}; plot it without --log-y"
            )


def _default_title(lines, series):
    if len({line.label for line in lines}) == 1:
        return lines[0].label
    return {"both": "train and validation loss", "train": "train loss", "val": "validation loss"}[series]


def _legend_name(line, single):
    kind = line.kind if line.smooth == 1 else f"{line.kind} (mean of {line.smooth})"
    return kind if single else f"{line.label} {kind}"


def nice_ticks(low, high, most, whole=False):
    """Round tick positions in [low, high], 1, 2 or 5 times a power of ten apart: the closest
    spacing that gives at most `most` ticks; whole numbers only if `whole`."""
    if not high > low:
        return [low]
    magnitude = 10.0 ** math.floor(math.log10((high - low) / max(most, 1)))
    for spacing in (m * magnitude * 10**e for e in range(3) for m in (1, 2, 5)):
        if whole and spacing < 1:
            continue
        first, last = math.ceil(low / spacing - 1e-9), math.floor(high / spacing + 1e-9)
        if last - first + 1 <= most:
            return [round(k * spacing, 12) for k in range(first, last + 1)] or [low]
    return [low, high]


def tick_labels(ticks):
    """Labels for evenly spaced ticks: 20k, 40k from 10,000 on, 1M, 1.5M from a million on,
    else with as many decimals as the spacing needs (0.05 apart: 2 decimals)."""
    spacing = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    top = max(abs(t) for t in ticks)
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if spacing >= scale / 10 and top >= scale * (1 if suffix == "M" else 10):
            return [f"{t / scale:g}{suffix}" if t else "0" for t in ticks]
    decimals = max(0, -math.floor(math.log10(spacing) + 1e-9)) if spacing > 0 else 0
    return [f"{t:.{decimals}f}" for t in ticks]


def _span(values):
    low, high = min(values), max(values)
    if high == low:  # one point, or a flat line: give the axis some room
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high


# --------------------------------------------------------------------------- rendering


def _render_terminal(lines, *, title, x_label, log_y, width, height, color):
    import plotext as plt

    single = len({line.label for line in lines}) == 1
    order = sorted(lines, key=lambda line: (line.kind != "train", line.color))  # dots over lines
    entries = [
        (_marker(line, color), TERMINAL_COLORS[line.color % len(TERMINAL_COLORS)], _legend_name(line, single))
        for line in order
    ]
    xs = [x for line in lines for x in line.xs]
    ys = [y for line in lines for y in line.ys]
    x_low, x_high = _span(xs)
    y_low, y_high = _span(ys)
    # The legend box goes in a corner the curves leave free; where none is (or the box is
    # taller than the canvas, which plotext would drop), the legend goes below the plot.
    corner, hidden = _legend_corner(lines, entries, (x_low, x_high), (y_low, y_high), log_y, width, height)
    boxed = 2 * len(entries) + 3 <= height - _FRAME_LINES and hidden <= LEGEND_HIDES_AT_MOST
    legend_rows = [] if boxed else _text_legend(entries, width, color)

    fig = plt.figure
    fig.clear()
    plt.terminal.limit(False, False)  # honour --width/--height even beyond the terminal
    fig.theme("simple")  # the terminal's own background; only the curves coloured
    fig.plot_size(width, max(height - len(legend_rows), MIN_HEIGHT))
    for line, (symbol, colour, name) in zip(order, entries):
        marker = plt.marker(symbol, plt.pixel(colour))
        signal = fig.signal(list(line.xs), list(line.ys), marker=marker).lines()
        fig.draw(signal.label(name) if boxed else signal)
    fig.title(title)
    fig.label(x_label, axis="x")
    fig.label("loss (nats)", axis="y")
    fig.ruler("x").lim(x_low, x_high)
    ticks = nice_ticks(x_low, x_high, max(2, width // 12), whole=x_label == "step")
    fig.ruler("x").ticks(ticks, tick_labels(ticks))
    if log_y:
        fig.ruler("y").scale("log").lim(y_low, y_high)  # plotext places its own ticks here
    else:
        fig.ruler("y").lim(y_low, y_high)
        ticks = nice_ticks(y_low, y_high, min(max(3, (height - _FRAME_LINES) // 2), 10))
        fig.ruler("y").ticks(ticks, tick_labels(ticks))
    if boxed:
        right, top = corner
        y = y_high if top else y_low
        fig.legend(
            x=x_high if right else x_low,
            y=math.log10(y) if log_y else y,  # log axis: log10
            ha="right" if right else "left",
            va="top" if top else "bottom",
            relative=True,
        )
    return "\n".join([fig.build().string(colorless=not color).rstrip("\n"), *legend_rows])


def _legend_corner(lines, entries, x_span, y_span, log_y, width, height):
    """((right, top), cells): the corner whose legend box would cover the fewest cells the
    curves pass through, top right first (loss curves fall from top left to bottom right)."""
    columns, rows = max(width - 8, 1), max(height - _FRAME_LINES, 1)  # the canvas, roughly
    box_w = (max(len(name) for _, _, name in entries) + 6) / columns
    box_h = (2 * len(entries) + 3) / rows
    scale = math.log10 if log_y else float
    (x0, x1), (y0, y1) = x_span, (scale(y_span[0]), scale(y_span[1]))
    cells = set()
    for line in lines:
        points = [((x - x0) / (x1 - x0), (scale(y) - y0) / (y1 - y0)) for x, y in zip(line.xs, line.ys)]
        for (ax, ay), (bx, by) in zip(points, points[1:] or points):
            steps = max(1, math.ceil(max(abs(bx - ax) * columns, abs(by - ay) * rows)))
            for i in range(steps + 1):
                t = i / steps
                cells.add((round((ax + t * (bx - ax)) * columns), round((ay + t * (by - ay)) * rows)))
    corners = [(True, True), (False, False), (True, False), (False, True)]

    def covered(corner):
        right, top = corner
        return sum(
            1
            for cx, cy in cells
            if (cx >= (1 - box_w) * columns if right else cx <= box_w * columns)
            and (cy >= (1 - box_h) * rows if top else cy <= box_h * rows)
        )

    best = min(corners, key=covered)
    return best, covered(best)


def _marker(line, color):
    """Train a line, validation dots; without colour each run gets its own pair of markers."""
    markers = TRAIN_MARKERS if line.kind == "train" else VAL_MARKERS
    return markers[0 if color else line.color % len(markers)]


def _text_legend(entries, width, color):
    rows, row, used = [], [], 0
    for symbol, colour, name in entries:
        glyph = _GLYPHS.get(symbol, symbol)
        cell = f"{click.style(glyph, fg=colour) if color else glyph} {name}"
        size = len(name) + 2 + (3 if row else 0)
        if row and used + size > width:
            rows.append("   ".join(row))
            row, used = [], 0
            size -= 3
        row.append(cell)
        used += size
    rows.append("   ".join(row))
    return rows


def _write_image(lines, out, *, title, x_label, log_y):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from numrnn.errors import DataError

    fig = Figure(figsize=IMAGE_INCHES, dpi=IMAGE_DPI, layout="constrained")
    ax = fig.add_subplot()
    single = len({line.label for line in lines}) == 1
    for line in lines:
        color = IMAGE_COLORS[line.color % len(IMAGE_COLORS)]
        if line.kind == "train":
            ax.plot(
                line.xs,
                line.ys,
                color=color,
                linewidth=1.4,
                label=_legend_name(line, single),
                marker="o" if len(line.xs) == 1 else None,
            )
        else:
            ax.plot(
                line.xs,
                line.ys,
                color=color,
                linewidth=1.4,
                linestyle="--",
                marker="o",
                markersize=4,
                label=_legend_name(line, single),
            )
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel("loss (nats)")
    if log_y:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _position: f"{value:g}")  # 3, not 3 x 10^0
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    if x_label == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.xaxis.set_major_formatter(_step_labels_class()())
    ax.grid(True, which="both" if log_y else "major", alpha=0.3)
    ax.legend(loc="best")
    fmt = _image_format(out)
    # Written beside the target and renamed, so a failure never leaves half an image.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the image private
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _step_labels_class():
    from matplotlib.ticker import Formatter

    class StepLabels(Formatter):
        """Step ticks labelled as in the terminal: 20k, 40k, ..."""

        def format_ticks(self, values):
            return tick_labels(list(values))

        def __call__(self, value, pos=None):
            return tick_labels([value])[0]

    return StepLabels


def _fail(message):
    from numrnn.errors import ConfigError

    raise ConfigError(message)


def _image_format(out):
    from numrnn.errors import DataError

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise click.BadParameter(f"{out} should end in .png, .svg or .pdf", param_hint="'-o' / '--out'")
    if not out.parent.is_dir():
        raise DataError(f"cannot write {out}: there is no folder {out.parent}")
    return fmt
