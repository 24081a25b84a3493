"""`numrnn plot` and the metrics-file reader under it (numrnn.metrics_file).

Real metrics come from a tiny `numrnn train` run that is resumed into the same file; the edge
cases are hand-written JSON lines.
"""

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from numrnn.errors import DataError
from numrnn.metrics_file import Curve, moving_average, read_metrics
from numrnn_cli import cli
from numrnn_cli.exit_codes import ExitCode
from numrnn_cli.plot import IMAGE_DPI, IMAGE_INCHES, file_labels, nice_ticks, tick_labels
from tests.helpers import SAMPLE_CORPUS, SMALL_LM, modules_loaded_by_cli
from tests.helpers import assert_clean_error as shared_assert_clean_error

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CORPUS
SMALL = SMALL_LM + ["-q"]
SIZE = ["--width", "90", "--height", "30"]  # terminal plots in tests: fixed, not the terminal's
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_IMAGE_BYTES = 10_000  # a PNG with axes, curves and a legend; an empty figure is ~5 kB
SMOOTH_TOL = 1e-12  # moving averages of a few floats


@pytest.fixture
def runner():
    return CliRunner()


def assert_clean_error(result, pattern):
    """Nothing but the one error line: no output, no other stderr."""
    shared_assert_clean_error(result, pattern)
    assert result.stderr.strip().startswith("error:") and result.stdout == ""


def write_jsonl(path, *records, raw=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + raw, encoding="utf-8")
    return path


def train_record(step, loss, elapsed=None, **extra):
    return {
        "event": "train",
        "step": step,
        "epoch": step / 100,
        "elapsed_s": step / 10 if elapsed is None else elapsed,
        "train_loss": loss,
        "val_loss": None,
        "chars_per_s": 1000.0,
        "lr": 0.002,
        **extra,
    }


def eval_record(step, loss, elapsed=None, **extra):
    return {
        "event": "eval",
        "step": step,
        "epoch": step / 100,
        "elapsed_s": step / 10 if elapsed is None else elapsed,
        "val_loss": loss,
        **extra,
    }


@pytest.fixture(scope="module")
def real_metrics(tmp_path_factory):
    """Two real metrics files: run.jsonl from a training of 20 steps resumed to 30 (two
    sessions appended to one file), other.jsonl from a second training at another lr."""
    folder = tmp_path_factory.mktemp("plot")
    corpus = folder / "corpus.txt"
    corpus.write_text(SAMPLE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    runner = CliRunner()
    for args in (
        ["-o", str(folder / "m.safetensors"), "--max-steps", "20"],
        ["--resume", str(folder / "m.safetensors"), "--max-steps", "30"],
    ):
        result = runner.invoke(
            cli, ["train", str(corpus), *SMALL, *args, "--metrics", str(folder / "run.jsonl")]
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "train",
            str(corpus),
            *SMALL,
            "-o",
            str(folder / "o.safetensors"),
            "--max-steps",
            "20",
            "--lr",
            "0.01",
            "--metrics",
            str(folder / "other.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    return folder / "run.jsonl", folder / "other.jsonl"


# --------------------------------------------------------------------------- the reader


def test_a_resumed_training_reads_as_one_run(real_metrics):
    run_file, _ = real_metrics
    (run,) = read_metrics(run_file)
    assert run.index == 1 and run.first_line == 1 and run.path == run_file
    assert run.train.steps == (5, 10, 15, 20, 25, 30)
    assert run.val.steps == (10, 20, 30)
    assert all(loss > 0 for loss in run.train.losses + run.val.losses)
    assert list(run.train.elapsed_s) == sorted(run.train.elapsed_s)  # summed over sessions
    records = [json.loads(line) for line in run_file.read_text().splitlines()]
    assert run.val.losses == tuple(r["val_loss"] for r in records if r["event"] == "eval")


def test_steps_going_backwards_start_a_new_run(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        train_record(5, 4.0),
        eval_record(10, 3.5),
        train_record(10, 3.0),
        train_record(5, 4.1),
        train_record(10, 3.1),
    )
    first, second = read_metrics(path)
    assert (first.index, first.first_line, first.train.steps, first.val.steps) == (1, 1, (5, 10), (10,))
    assert (second.index, second.first_line, second.train.losses, len(second.val)) == (2, 4, (4.1, 3.1), 0)


def test_an_eval_at_the_same_step_continues_the_run(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        train_record(10, 3.0),
        eval_record(10, 3.2),
        eval_record(10, 3.2),
        train_record(15, 2.9),
    )
    (run,) = read_metrics(path)
    assert run.train.steps == (10, 15) and run.val.steps == (10, 10)


def test_other_tasks_fields_and_events_are_ignored(tmp_path):
    path = write_jsonl(
        tmp_path / "classify.jsonl",
        {"event": "start", "task": "classify"},
        train_record(5, 1.5, items_per_s=900.0, unit="examples"),
        eval_record(5, 1.4, val_accuracy=0.61, val_macro_f1=0.5),
        {"event": "confusion", "step": "five"},
        {"no_event": True},
        {"event": None},
    )
    (run,) = read_metrics(path)
    assert run.train.losses == (1.5,) and run.val.losses == (1.4,)


def test_null_and_non_finite_losses_are_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps(train_record(5, 4.0))
        + "\n"
        + json.dumps(train_record(10, None))
        + "\n"
        + '{"event": "train", "step": 15, "elapsed_s": 1.5, "train_loss": NaN}\n'
        + json.dumps(train_record(20, 3.0))
        + "\n",
        encoding="utf-8",
    )
    (run,) = read_metrics(path)
    assert run.train.steps == (5, 20)


def test_a_last_line_being_written_is_skipped(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", train_record(5, 4.0), raw='{"event": "train", "st')
    (run,) = read_metrics(path)
    assert run.train.steps == (5,)


def test_a_byte_order_mark_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(train_record(5, 4.0)).encode()
        + b"\r\n\n  \n"
        + json.dumps(eval_record(5, 3.9)).encode()
        + b"\n"
    )
    (run,) = read_metrics(path)
    assert len(run.train) == 1 and len(run.val) == 1


BAD_FILES = {
    # kind: (how to make it, the message expected)
    "missing": (None, r"m\.jsonl: no such file"),
    "folder": ("folder", r"is a folder, not a metrics file"),
    "empty": (b"", r"m\.jsonl is empty"),
    "blank": (b"\n \n", r"m\.jsonl is empty"),
    "latin1": (
        json.dumps(train_record(5, 4.0)).encode() + b'\n{"note": "caf\xe9"}\n',
        r"not UTF-8 text: byte 0xe9 on line 2",
    ),
    "not json": (
        json.dumps(train_record(5, 4.0)).encode()
        + b"\nstep 10 loss 3.9\n"
        + json.dumps(train_record(15, 3.8)).encode()
        + b"\n",
        r"m\.jsonl line 2 is not JSON \(Expecting value\)",
    ),
    "not an object": (b"[1, 2]\n", r"line 1 is not a JSON object but an array"),
    "bad step": (
        b'{"event": "train", "step": "ten", "elapsed_s": 1, "train_loss": 2}\n',
        r'line 1: the "train" record needs "step" as a whole number >= 0, not "ten"',
    ),
    "no elapsed": (
        b'{"event": "eval", "step": 10, "val_loss": 2}\n',
        r'line 1: the "eval" record needs "elapsed_s" as a number >= 0, not null',
    ),
    "bad loss": (
        b'{"event": "train", "step": 10, "elapsed_s": 1, "train_loss": "2.5"}\n',
        r'line 1: "train_loss" must be a number or null, not "2.5"',
    ),
    "no losses": (
        b'{"event": "start"}\n' + b'{"event": "train", "step": 5, "elapsed_s": 1, "train_loss": null}\n',
        r"has no loss records",
    ),
    "csv": (b"step,loss\n5,4.0\n", r"line 1 is not JSON"),
}


def make_bad_file(folder, kind):
    path = folder / "m.jsonl"
    content = BAD_FILES[kind][0]
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_raise_one_clear_data_error(tmp_path, kind):
    path = make_bad_file(tmp_path, kind)
    with pytest.raises(DataError, match=BAD_FILES[kind][1]):
        read_metrics(path)


def test_moving_average_is_trailing():
    assert moving_average([4.0, 2.0, 3.0, 1.0], 1) == (4.0, 2.0, 3.0, 1.0)
    expected = (4.0, 3.0, 3.0, 2.0)
    got = moving_average([4.0, 2.0, 3.0, 1.0], 3)
    assert all(abs(a - b) < SMOOTH_TOL for a, b in zip(got, expected)) and len(got) == 4
    assert moving_average([], 5) == ()
    with pytest.raises(ValueError):
        moving_average([1.0], 0)
    assert len(Curve()) == 0


# --------------------------------------------------------------------------- helpers of the command


def test_file_labels_are_stems_told_apart_by_their_folders():
    assert file_labels([Path("runs/lstm.jsonl"), Path("gru.jsonl")]) == ["lstm", "gru"]
    assert file_labels([Path("a/run.jsonl"), Path("b/run.jsonl"), Path("c.jsonl")]) == ["a/run", "b/run", "c"]
    assert file_labels([Path("x/a/run.jsonl"), Path("y/a/run.jsonl")]) == ["x/a/run", "y/a/run"]
    assert file_labels([Path("run.jsonl"), Path("run.jsonl")]) == ["run", "run (2)"]


def test_ticks_are_round_and_labels_compact():
    assert nice_ticks(5, 200, 7, whole=True) == [50, 100, 150, 200]
    assert nice_ticks(1.93, 4.04, 6) == pytest.approx([2.0, 2.5, 3.0, 3.5, 4.0])
    assert nice_ticks(3, 3, 5) == [3]
    assert nice_ticks(5, 7, 10, whole=True) == [5, 6, 7]
    assert tick_labels([0, 5000, 10_000, 15_000]) == ["0", "5k", "10k", "15k"]
    assert tick_labels([10_000, 10_500, 11_000]) == ["10k", "10.5k", "11k"]
    assert tick_labels([1_000_000, 1_500_000, 2_000_000]) == ["1M", "1.5M", "2M"]
    assert tick_labels([0, 2_000_000, 4_000_000]) == ["0", "2M", "4M"]
    assert tick_labels([100, 200, 300]) == ["100", "200", "300"]
    assert tick_labels([2000, 4000, 6000]) == ["2000", "4000", "6000"]
    assert tick_labels([2.0, 2.5, 3.0]) == ["2.0", "2.5", "3.0"]
    assert tick_labels([2.2, 2.25]) == ["2.20", "2.25"] and tick_labels([7]) == ["7"]


# --------------------------------------------------------------------------- the terminal plot


def test_two_real_files_overlaid_in_the_terminal(runner, real_metrics):
    run_file, other = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), str(other), *SIZE])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in (
        "run train",
        "run val",
        "other train",
        "other val",
        "train and validation loss",
        "step",
        "loss (nats)",
    ):
        assert name in out, out
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal
    assert result.stderr == ""
    lines = out.rstrip("\n").split("\n")
    assert max(len(line) for line in lines) <= 90 and len(lines) <= 30


def test_time_axis(runner, real_metrics):
    run_file, _ = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), "--x", "time", *SIZE])
    assert result.exit_code == 0, result.output
    assert "training time (s)" in result.stdout


def test_time_axis_picks_minutes_and_hours(runner, tmp_path):
    path = write_jsonl(
        tmp_path / "long.jsonl", train_record(5, 4.0, elapsed=10.0), train_record(10, 3.0, elapsed=600.0)
    )
    assert "training time (min)" in runner.invoke(cli, ["plot", str(path), "--x", "time", *SIZE]).stdout
    path = write_jsonl(
        tmp_path / "longer.jsonl", train_record(5, 4.0, elapsed=10.0), train_record(10, 3.0, elapsed=36_000.0)
    )
    result = runner.invoke(cli, ["plot", str(path), "--x", "time", *SIZE])
    assert "training time (h)" in result.stdout and "10" in result.stdout


def test_one_file_is_named_in_the_title(runner, real_metrics):
    run_file, _ = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), *SIZE, "--smooth", "3", "--log-y"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.strip() == "run"
    assert "train (mean of 3)" in result.stdout and "val" in result.stdout


def test_title_width_and_height(runner, real_metrics):
    run_file, _ = real_metrics
    result = runner.invoke(
        cli, ["plot", str(run_file), "--title", "My run", "--width", "60", "--height", "20"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip("\n").split("\n")
    assert lines[0].strip() == "My run"
    assert max(len(line) for line in lines) == 60 and len(lines) <= 20


@pytest.mark.parametrize("series, present, absent", [("train", "train", "val"), ("val", "val", "train")])
def test_series_choice(runner, real_metrics, series, present, absent):
    run_file, other = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), str(other), "--series", series, *SIZE])
    assert result.exit_code == 0, result.output
    assert f"run {present}" in result.stdout and f"run {absent}" not in result.stdout


def test_a_file_without_the_chosen_series_is_an_error(runner, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", train_record(5, 4.0), train_record(10, 3.0))
    assert_clean_error(
        runner.invoke(cli, ["plot", str(path), "--series", "val", *SIZE]),
        r"m\.jsonl has no validation loss to plot .* try --series train",
    )


def test_runs_of_one_file_and_equal_names_are_told_apart(runner, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_jsonl(
        tmp_path / "a" / "run.jsonl",
        train_record(5, 4.0),
        train_record(10, 3.0),
        train_record(5, 4.2),
        train_record(10, 3.3),
    )
    second = write_jsonl(tmp_path / "b" / "run.jsonl", train_record(5, 4.0), eval_record(10, 3.5))
    result = runner.invoke(cli, ["plot", str(first), str(second), *SIZE])
    assert result.exit_code == 0, result.output
    for name in ("a/run#1 train", "a/run#2 train", "b/run train", "b/run val"):
        assert name in result.stdout, result.stdout


def test_many_runs_put_the_legend_below_the_plot(runner, tmp_path):
    paths = [
        str(
            write_jsonl(
                tmp_path / f"run{i}.jsonl",
                train_record(5, 4.0 + i / 10),
                train_record(10, 3.0 + i / 10),
                eval_record(10, 3.2 + i / 10),
            )
        )
        for i in range(6)
    ]
    result = runner.invoke(cli, ["plot", *paths, "--width", "80", "--height", "24"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) <= 24
    legend = "\n".join(lines[-4:])
    assert all(f"run{i} train" in legend and f"run{i} val" in legend for i in range(6)), legend


def test_a_single_point_plots(runner, tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", train_record(5, 2.5))
    result = runner.invoke(cli, ["plot", str(path), *SIZE])
    assert result.exit_code == 0, result.output
    assert "one" in result.stdout


def test_log_y_refuses_a_zero_loss(runner, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", train_record(5, 1.0), train_record(10, 0.0))
    assert_clean_error(
        runner.invoke(cli, ["plot", str(path), "--log-y", *SIZE]),
        r"--log-y needs losses above 0, but m's train loss reaches 0",
    )


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_input_is_one_error_line_and_nothing_written(runner, tmp_path, kind):
    path = make_bad_file(tmp_path, kind)
    assert_clean_error(runner.invoke(cli, ["plot", str(path), *SIZE]), BAD_FILES[kind][1])
    out = tmp_path / "loss.png"
    assert_clean_error(runner.invoke(cli, ["plot", str(path), "-o", str(out)]), BAD_FILES[kind][1])
    assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob(".*")) == []


def test_a_bad_file_among_good_ones_is_named(runner, real_metrics, tmp_path):
    run_file, _ = real_metrics
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(train_record(5, 4.0)) + "\n{oops\n", encoding="utf-8")
    assert_clean_error(
        runner.invoke(cli, ["plot", str(run_file), str(bad), *SIZE]), r"bad\.jsonl line 2 is not JSON"
    )


# --------------------------------------------------------------------------- images


def png_size(data):
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_is_written(runner, real_metrics, tmp_path):
    run_file, other = real_metrics
    out = tmp_path / "loss.png"
    result = runner.invoke(cli, ["plot", str(run_file), str(other), "-o", str(out), "--log-y"])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert png_size(data) == (round(IMAGE_INCHES[0] * IMAGE_DPI), round(IMAGE_INCHES[1] * IMAGE_DPI))
    assert len(data) > MIN_IMAGE_BYTES
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temp file left


def test_png_replaces_an_old_one_and_svg_by_extension(runner, real_metrics, tmp_path):
    run_file, _ = real_metrics
    out = tmp_path / "loss.png"
    out.write_bytes(b"old")
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(out), "--x", "time", "--smooth", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    svg = tmp_path / "loss.svg"
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(svg), "--series", "val"])
    assert result.exit_code == 0, result.output
    assert b"<svg" in svg.read_bytes()[:2000]


def test_image_options_that_do_not_fit_are_usage_errors(runner, real_metrics, tmp_path):
    run_file, _ = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(tmp_path / "loss.gif")])
    assert result.exit_code == ExitCode.USAGE and ".png, .svg or .pdf" in result.output
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(tmp_path / "loss.png"), "--width", "100"])
    assert result.exit_code == ExitCode.USAGE and "--width and --height" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_missing_output_folder_is_one_error(runner, real_metrics, tmp_path):
    run_file, _ = real_metrics
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(tmp_path / "no" / "loss.png")])
    assert_clean_error(result, r"cannot write .*loss\.png: there is no folder")


def test_missing_matplotlib_names_the_extra(runner, real_metrics, tmp_path, monkeypatch):
    run_file, _ = real_metrics
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = tmp_path / "loss.png"
    result = runner.invoke(cli, ["plot", str(run_file), "-o", str(out)])
    assert_clean_error(result, r"writing loss\.png needs matplotlib: pip install 'numrnn\[plot\]'")
    assert not out.exists()
    # The terminal plot does not need it.
    assert runner.invoke(cli, ["plot", str(run_file), *SIZE]).exit_code == 0


# --------------------------------------------------------------------------- help


def test_plot_help_has_examples_and_defaults(runner):
    result = runner.invoke(cli, ["plot", "-h"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "numrnn plot" in result.output
    assert "default: step" in result.output and "default: both" in result.output
    assert "default: 1" in result.output and "terminal's width" in result.output
    assert "NAME#2" in result.output  # what happens when steps go backwards
    assert "numrnn plot" in runner.invoke(cli, ["-h"]).output


def test_help_does_not_import_the_plotting_libraries():
    loaded = modules_loaded_by_cli(["plot", "--help"])
    assert "numrnn_cli.plot" in loaded
    assert not {"plotext", "matplotlib", "numpy"} & loaded
