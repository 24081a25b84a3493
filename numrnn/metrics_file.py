"""Reading a ``--metrics`` file (JSON lines) back into loss curves, for ``numrnn plot``.

The trainer's CLI writes one JSON object per line: ``{"event": "train", "step", "elapsed_s",
"train_loss", ...}`` per log interval and ``{"event": "eval", "step", "elapsed_s", "val_loss",
...}`` per evaluation, with task-specific fields besides. Only ``event``, ``step``,
``elapsed_s``, ``train_loss`` (train records) and ``val_loss`` (eval records) are read; other
keys and other events are ignored, so a file from any task reads the same way. A loss written
as ``null`` (it was NaN or infinite) is skipped.

Runs: a resumed training appends to the same file, its steps carrying on and ``elapsed_s``
summed over the sessions, so those sessions are one run. A record whose step is lower than the
one before starts a new run: a fresh training appended to an old file, or a resume from an
earlier checkpoint than the last record's.

A last line without its newline that is not JSON is a record still being written (a plot of a
live run) and is skipped; any other line that is not a JSON object is an error naming the file
and the line. Everything a user can fix raises ``DataError``; nothing here prints.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from numrnn.errors import DataError

EVENT_LOSS_KEYS = {"train": "train_loss", "eval": "val_loss"}  # event -> the loss it carries
_HINT = "give a file written by `numrnn train --metrics FILE`"


@dataclass(frozen=True)
class Curve:
    """One loss series, points in file order: parallel tuples of equal length."""

    steps: tuple = ()
    elapsed_s: tuple = ()
    losses: tuple = ()

    def __len__(self):
        return len(self.losses)


@dataclass(frozen=True)
class Run:
    """One training run of a metrics file: its train and validation loss curves."""

    path: Path
    index: int  # 1 for the file's first run, 2 for a run appended after it, ...
    first_line: int  # the line of the file where this run's records start
    train: Curve
    val: Curve


def read_metrics(path):
    """The runs in a metrics file, in file order, each with at least one loss point.

    Raises ``DataError`` (naming the file, and the line where there is one) for a missing,
    empty, non-UTF-8 or malformed file, and for a file with no loss records at all.
    """
    path = Path(path)
    text = _read_text(path)
    lines = text.split("\n")
    unfinished = not text.endswith("\n")  # the last line may be a record still being written
    runs, points, first_line, last_step = [], _empty_points(), None, None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if unfinished and number == len(lines):
                break
            raise DataError(f"{path} line {number} is not JSON ({_short(exc)}); {_HINT}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object but {_json_kind(record)}; {_HINT}")
        event = record.get("event")
        if not isinstance(event, str) or event not in EVENT_LOSS_KEYS:
            continue  # another task's or a later version's event: not a loss
        step = _number(record, "step", path, number, whole=True)
        elapsed = _number(record, "elapsed_s", path, number)
        if last_step is not None and step < last_step:
            runs.append((first_line, points))
            points, first_line = _empty_points(), None
        if first_line is None:
            first_line = number
        last_step = step
        loss = _loss(record, EVENT_LOSS_KEYS[event], path, number)
        if loss is not None:
            points[event].append((step, elapsed, loss))
    runs.append((first_line, points))
    kept = [(line, pts) for line, pts in runs if pts["train"] or pts["eval"]]
    if not kept:
        raise DataError(
            f'{path} has no loss records (no "train" event with a train_loss and no '
            f'"eval" event with a val_loss); {_HINT}'
        )
    return [
        Run(path=path, index=index, first_line=line, train=_curve(pts["train"]), val=_curve(pts["eval"]))
        for index, (line, pts) in enumerate(kept, start=1)
    ]


def moving_average(values, window):
    """Trailing moving average: point i is the mean of values[max(0, i - window + 1) : i + 1]."""
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return tuple(out)


# --------------------------------------------------------------------------- helpers


def _read_text(path):
    if not path.exists():
        raise DataError(f"{path}: no such file; {_HINT}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a metrics file; {_HINT}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise DataError(f"{path} is empty: training has not logged anything to it yet")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
            f"(offset {exc.start}); {_HINT}"
        ) from None


def _empty_points():
    return {"train": [], "eval": []}


def _curve(points):
    if not points:
        return Curve()
    steps, elapsed, losses = zip(*points)
    return Curve(steps=steps, elapsed_s=elapsed, losses=losses)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(record, key, path, line, whole=False):
    value = record.get(key)
    if not _is_number(value) or not math.isfinite(value) or value < 0 or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise DataError(
            f'{path} line {line}: the "{record["event"]}" record needs "{key}" as '
            f"{kind} >= 0, not {_preview(value)}; {_HINT}"
        )
    return int(value) if whole else float(value)


def _loss(record, key, path, line):
    value = record.get(key)
    if value is None:
        return None  # not logged, or written as null because it was NaN or infinite
    if not _is_number(value):
        raise DataError(
            f'{path} line {line}: "{key}" must be a number or null, not {_preview(value)}; {_HINT}'
        )
    return float(value) if math.isfinite(value) else None


def _preview(value, limit=40):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(exc):
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _json_kind(value):
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
