"""Level 7: the command line through click's CliRunner (and one real subprocess)."""

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from numrnn.errors import DataError
from numrnn_cli import cli
from numrnn_cli.app import COMMANDS, NumrnnGroup
from numrnn_cli.exit_codes import ExitCode
from tests.helpers import modules_loaded_by_cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_commands_and_exit_codes(runner, flag):
    result = runner.invoke(cli, [flag])
    assert result.exit_code == 0
    assert "gradcheck" in result.output
    assert "Exit codes" in result.output


def test_gradcheck_help_has_examples_and_defaults(runner):
    result = runner.invoke(cli, ["gradcheck", "-h"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "default: 0" in result.output and "default: 1e-06" in result.output


def test_version(runner):
    from numrnn import __version__

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_numba_or_numpy():
    loaded = modules_loaded_by_cli(["--help"])
    assert "numrnn_cli.app" in loaded
    assert not {"numba", "numpy", "rich"} & loaded


def test_every_command_loads_under_its_name():
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_a_command_imports_no_other_command():
    loaded = modules_loaded_by_cli(["sample", "--help"])
    assert "numrnn_cli.sample" in loaded
    others = ("train", "classify", "generate", "translate", "evaluate", "plot", "gradcheck", "info")
    assert not {f"numrnn_cli.{other}" for other in others} & loaded


def test_gradcheck_json_reports_every_cell_and_passes(runner):
    # Every cell and layer count over two losses (every loss: tests/test_gradcheck.py).
    result = runner.invoke(cli, ["gradcheck", "--json", "--loss", "one-to-one", "--loss", "translate"])
    assert result.exit_code == ExitCode.OK, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert {(r["cell"], r["layers"]) for r in data["rows"]} == {
        (c, l) for c in ("rnn", "lstm", "gru") for l in (1, 2)
    }
    assert all(r["max_rel_error"] < 1e-6 and r["ok"] for r in data["rows"])


def test_gradcheck_table(runner):
    # Two losses keep it quick; the math of every loss is tests/test_gradcheck.py's.
    args = [
        "gradcheck",
        "--cell",
        "gru",
        "--cell",
        "rnn",
        "--seed",
        "3",
        "--loss",
        "lm",
        "--loss",
        "translate-dot",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "rnn.weight_hh_l1" in result.stdout and "gru" in result.stdout and "lstm" not in result.stdout
    assert "encoder.rnn.weight_hh_l1_reverse" in result.stdout  # long names are not cut
    assert "translate-dot: analytic vs numeric" in result.stdout
    assert "within 1e-06" in result.stdout


def test_gradcheck_mismatch_exits_3(runner):
    result = runner.invoke(
        cli, ["gradcheck", "--cell", "rnn", "--loss", "lm", "--tolerance", "1e-300", "--json"]
    )
    assert result.exit_code == ExitCode.GRADCHECK_MISMATCH
    assert json.loads(result.stdout)["ok"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["gradcheck", "--cell", "transformer"],
        ["gradcheck", "--tolerance", "0"],
        ["gradcheck", "--seed", "x"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE
    assert "Usage" in result.stderr or "Error" in result.stderr


def _group_raising(exc):
    @click.group(cls=NumrnnGroup)
    @click.option("--debug", is_flag=True)
    def group(debug):
        pass

    @group.command()
    def boom():
        raise exc

    return group


def test_library_errors_are_one_line_on_stderr(runner, monkeypatch):
    monkeypatch.delenv("NUMRNN_DEBUG", raising=False)
    result = runner.invoke(_group_raising(DataError("corpus.txt is empty; give a text file")), ["boom"])
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.strip() == "error: corpus.txt is empty; give a text file"
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(runner):
    result = runner.invoke(_group_raising(DataError("bad")), ["--debug", "boom"])
    assert isinstance(result.exception, DataError)


def test_ctrl_c_exits_130(runner):
    result = runner.invoke(_group_raising(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == ExitCode.INTERRUPTED


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "numrnn_cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "gradcheck" in proc.stdout
