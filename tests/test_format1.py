"""Checkpoint format 1 (numrnn 0.1.0, before tasks and digests) still loads, samples, scores
and resumes, with the same output as when the files were written (tests/data/README.md): the
same sampled text, and the same eval loss to within the kernels' rounding."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from numrnn.checkpoint import FORMAT_VERSION, load_checkpoint
from numrnn_cli import cli

DATA = Path(__file__).resolve().parent / "data"
CHECKPOINTS = ["format1-lstm", "format1-gru-onehot"]


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_a_format_1_checkpoint_loads_as_a_language_model(name):
    loaded = load_checkpoint(DATA / f"{name}.safetensors")
    assert loaded.meta["format_version"] == 1
    assert loaded.task == "char-lm" and loaded.labels is None
    assert loaded.state and loaded.optim
    assert loaded.build_model().layout.size == loaded.parameter_count


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_a_format_1_checkpoint_samples_the_same_text(name):
    result = CliRunner().invoke(
        cli, ["sample", "-c", str(DATA / f"{name}.safetensors"), "--length", "40", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (DATA / f"{name}.sample.txt").read_text(encoding="utf-8")


def test_a_format_1_checkpoint_scores_the_same_loss():
    result = CliRunner().invoke(
        cli,
        ["eval", "-c", str(DATA / "format1-lstm.safetensors"), str(DATA / "format1-corpus.txt"), "--json"],
    )
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    expected = json.loads((DATA / "format1-lstm.eval.json").read_text())
    assert scored.keys() == expected.keys()
    assert (scored["chars"], scored["unknown_chars"]) == (expected["chars"], expected["unknown_chars"])
    # The same weights give the same loss; only the last digits may move with the kernels'
    # rounding (a faster exponential moved the loss by 1.6e-10 relative). A misread tensor
    # would move it in the first digits.
    for key in ("loss", "bpc", "perplexity"):
        assert scored[key] == pytest.approx(expected[key], rel=1e-7), key


def test_a_format_1_checkpoint_resumes_and_is_saved_in_the_current_format(tmp_path):
    checkpoint = tmp_path / "m.safetensors"
    shutil.copy(DATA / "format1-lstm.safetensors", checkpoint)
    result = CliRunner().invoke(
        cli,
        ["train", str(DATA / "format1-corpus.txt"), "--resume", str(checkpoint), "--max-steps", "5", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert "differs" not in result.output  # the same text: the data position was kept
    resumed = load_checkpoint(checkpoint)
    assert resumed.meta["format_version"] == FORMAT_VERSION and resumed.task == "char-lm"
    assert resumed.meta["progress"]["step"] == 5
    # Format 1 saved the position as stream_pos, 3 steps of 16 characters in.
    assert resumed.meta["progress"]["position"] == 5 * 16
