"""`numrnn generate train/sample` end to end on a tiny labelled folder, and bad input."""

import json
import re

import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner

import numrnn_cli.training_run as training_run
from numrnn.checkpoint import DIGEST_KEY, META_KEY, load_checkpoint, save_checkpoint, text_digest
from numrnn.data import Vocab
from numrnn.model import Model, ModelConfig
from numrnn.sampling import UNIQUE_DRAWS_EXTRA, UNIQUE_DRAWS_PER_SAMPLE
from numrnn.tasks.generate import GenerateTask
from numrnn_cli import cli
from numrnn_cli.exit_codes import ExitCode

SMALL = [
    "--hidden",
    "16",
    "--layers",
    "1",
    "--embed",
    "8",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--log-every",
    "5",
    "--val-frac",
    "0.2",
]
LABELS = {
    "Alpha": ["Anna", "Abel", "Ada", "Alma", "Arno", "Aida", "Amos", "Anton", "Ava", "Axel"],
    "Beta": ["Bob", "Bea", "Boris", "Bruno", "Bella", "Bram", "Basil", "Bo", "Berta", "Birk"],
    "Gamma": ["Gus", "Gil", "Greta", "Gina", "Goran", "Gwen", "Gabor", "Gia", "Glen", "Gert"],
}


@pytest.fixture
def runner():
    return CliRunner()


def write_names(folder, labels=LABELS):
    folder.mkdir(parents=True, exist_ok=True)
    for label, names in labels.items():
        (folder / f"{label}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return folder


def train(runner, data, out, *extra):
    return runner.invoke(cli, ["generate", "train", str(data), *SMALL, "-o", str(out), *extra])


def sample(runner, checkpoint, *extra):
    return runner.invoke(cli, ["generate", "sample", "-c", str(checkpoint), *extra])


def assert_clean_error(result, pattern, code=ExitCode.ERROR):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr
    assert re.search(pattern, errors[0]), result.stderr
    assert result.stdout == ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained generator, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_names(folder / "names")
    out = folder / "g.safetensors"
    result = train(CliRunner(), data, out, "--max-steps", "20", "--metrics", str(folder / "g.jsonl"))
    assert result.exit_code == 0, result.output
    return folder, data, out


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [["generate"], ["generate", "train"], ["generate", "sample"]])
def test_help_has_a_summary_and_examples(runner, command):
    result = runner.invoke(cli, [*command, "-h"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "numrnn generate" in result.output
    if command == ["generate", "train"]:
        assert "--condition [state|input|both]" in result.output and "[default: " in result.output
    if command == ["generate", "sample"]:
        limit = f"{UNIQUE_DRAWS_PER_SAMPLE} x N + {UNIQUE_DRAWS_EXTRA}"
        assert limit in " ".join(result.output.split())


def test_generate_is_listed_in_numrnn_help(runner):
    assert re.search(r"^\s+generate\s+Generate", runner.invoke(cli, ["-h"]).output, re.M)


# --------------------------------------------------------------------------- train


def test_train_writes_latest_best_and_metrics(trained):
    folder, _, out = trained
    checkpoint = load_checkpoint(out)
    assert checkpoint.task == "generate" and checkpoint.labels == ["Alpha", "Beta", "Gamma"]
    config = checkpoint.model_config
    assert (config.condition, config.condition_classes) == ("input", 3)
    assert config.output_size == config.vocab_size - 1
    assert checkpoint.meta["data"]["path"] == str((folder / "names").resolve())
    assert checkpoint.meta["progress"]["step"] == 20
    assert load_checkpoint(folder / "g.best.safetensors").task == "generate"
    assert '"unit": "chars"' in (folder / "g.jsonl").read_text()


def test_train_progress_and_summary(runner, tmp_path):
    data = write_names(tmp_path / "names")
    result = train(runner, data, tmp_path / "m.safetensors", "--max-steps", "10", "--condition", "state")
    assert result.exit_code == 0, result.output
    assert "30 examples of 3 labels" in result.stderr
    assert re.search(r"validation loss \d\.\d{4} nats/char, \d\.\d{4} bits/char", result.stderr)
    assert "numrnn generate sample -c" in result.stderr
    assert load_checkpoint(tmp_path / "m.safetensors").model_config.condition == "state"


def test_resume_continues_exactly(runner, tmp_path):
    data = write_names(tmp_path / "names")
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    assert train(runner, data, straight, "--max-steps", "14", "--dropout", "0.1").exit_code == 0
    assert train(runner, data, split, "--max-steps", "7", "--dropout", "0.1").exit_code == 0
    result = runner.invoke(cli, ["generate", "train", str(data), "--resume", str(split), "--max-steps", "14"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 7" in result.stderr
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name], err_msg=name)


def test_resume_refuses_another_condition_or_split(runner, trained):
    _, data, out = trained
    result = runner.invoke(
        cli, ["generate", "train", str(data), "--resume", str(out), "--condition", "state"]
    )
    assert_clean_error(result, r"--condition state contradicts the checkpoint")
    result = runner.invoke(cli, ["generate", "train", str(data), "--resume", str(out), "--seed", "3"])
    assert_clean_error(result, r"--seed 3 contradicts the checkpoint")


def test_ctrl_c_saves_and_exits_130(runner, tmp_path, monkeypatch):
    calls = []

    def interrupted(self):
        calls.append(1)
        return len(calls) > 3

    monkeypatch.setattr(training_run.InterruptFlag, "__call__", interrupted)
    data = write_names(tmp_path / "names")
    result = train(runner, data, tmp_path / "m.safetensors", "--max-steps", "50")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "Resume with:" in result.stderr and "numrnn generate train" in result.stderr
    assert load_checkpoint(tmp_path / "m.safetensors").meta["progress"]["step"] == 3


def test_a_nan_loss_stops_with_a_clear_error(runner, tmp_path, monkeypatch):
    monkeypatch.setattr(GenerateTask, "loss_and_grad", lambda self, *args: float("nan"))
    data = write_names(tmp_path / "names")
    result = train(runner, data, tmp_path / "m.safetensors", "--max-steps", "5")
    assert result.exit_code == ExitCode.ERROR
    assert re.search(r"^error: the loss became nan at step 1.*--lr", result.stderr, re.M)


@pytest.mark.parametrize("kind", ["missing", "one-label", "reserved", "empty-label", "exists"])
def test_bad_training_input_is_one_clear_error(runner, tmp_path, kind):
    data = tmp_path / "names"
    out = tmp_path / "m.safetensors"
    pattern = {
        "missing": "no such file or folder",
        "one-label": "one label file only",
        "reserved": r"control character .*U\+0003.*'Bo\\x03b'.*reserved",
        "empty-label": "no examples",
        "exists": "already exists",
    }[kind]
    if kind == "one-label":
        write_names(data, {"Alpha": LABELS["Alpha"]})
    elif kind == "reserved":
        write_names(data, {**LABELS, "Beta": ["Bo\x03b"]})
    elif kind == "empty-label":
        write_names(data)
        (data / "Delta.txt").write_text("", encoding="utf-8")
    elif kind == "exists":
        write_names(data)
        out.write_bytes(b"")
    result = train(runner, data, out, "--max-steps", "2")
    assert_clean_error(result, pattern)
    assert kind == "exists" or not out.exists()


# --------------------------------------------------------------------------- sample


def test_sample_writes_n_names_one_per_line(runner, trained):
    _, _, out = trained
    result = sample(runner, out, "--label", "Beta", "-n", "7", "--seed", "1", "--max-length", "8")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 7 and all(len(line) <= 8 for line in lines)
    assert all("\x02" not in line and "\x03" not in line for line in lines)
    again = sample(runner, out, "--label", "Beta", "-n", "7", "--seed", "1", "--max-length", "8")
    assert again.stdout == result.stdout
    other = sample(runner, out, "--label", "Beta", "-n", "7", "--seed", "2", "--max-length", "8")
    assert other.stdout != result.stdout


def test_sample_without_seed_says_which_seed(runner, trained):
    _, _, out = trained
    result = sample(runner, out, "--label", "Alpha", "-n", "2")
    assert result.exit_code == 0
    seed = re.search(r"seed (\d+) \(pass --seed \1", result.stderr)[1]
    again = sample(runner, out, "--label", "Alpha", "-n", "2", "--seed", seed)
    assert again.stdout == result.stdout


def test_sample_writes_its_seed_line_and_names_without_a_rich_console(runner, trained, monkeypatch):
    # as numrnn sample: with the kernels in the cache (the tests run without one), only a
    # warning (a sample cut at --max-length here) needs rich's console
    import numrnn.tunables
    import numrnn_cli.console
    import numrnn_cli.generate_sample

    def no_console():
        raise AssertionError("numrnn generate sample created a rich console")

    _, _, out = trained
    warnings = []
    monkeypatch.setattr(numrnn.tunables, "kernels_compiled", lambda *names: True)
    monkeypatch.setattr(numrnn_cli.console, "err_console", no_console)
    monkeypatch.setattr(numrnn_cli.generate_sample, "err_console", no_console)
    monkeypatch.setattr(numrnn_cli.generate_sample, "warn", warnings.append)
    for args in (("--seed", "3"), ()):
        result = sample(runner, out, "--label", "Beta", "-n", "3", "--max-length", "8", *args)
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 3
    assert "pass --seed" in result.stderr
    assert all("--max-length 8" in warning for warning in warnings), warnings


def test_start_text_begins_every_sample(runner, trained):
    _, _, out = trained
    result = sample(runner, out, "--label", "Gamma", "--start", "Gr", "-n", "5", "--seed", "0")
    assert result.exit_code == 0
    assert all(line.startswith("Gr") for line in result.stdout.splitlines())


def test_unique_and_novel(runner, trained):
    folder, _, out = trained
    result = sample(
        runner, out, "--label", "Alpha", "-n", "12", "--seed", "0", "--unique", "--temperature", "2"
    )
    lines = result.stdout.splitlines()
    assert len(lines) == len(set(lines)) and 0 < len(lines) <= 12
    result = sample(
        runner, out, "--label", "Alpha", "-n", "12", "--seed", "0", "--novel", "--temperature", "2"
    )
    novel = result.stdout.splitlines()
    known = {name for names in LABELS.values() for name in names}
    assert len(novel) == len(set(novel)) and not known & set(novel)
    # Greedy sampling (top-k 1) has one name only: one comes out, with a warning.
    result = sample(runner, out, "--label", "Alpha", "-n", "5", "--seed", "0", "--unique", "--top-k", "1")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1
    assert re.search(
        r"warning: only 1 distinct sample after 200 draws \(at most 200 for -n 5\)", result.stderr
    )
    # --novel with the data given elsewhere
    moved = write_names(folder / "other", {"Alpha": ["Zed"], "Beta": ["Zo"]})
    result = sample(
        runner, out, "--label", "Alpha", "-n", "3", "--seed", "0", "--novel", "--data", str(moved)
    )
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    "kind",
    [
        "label",
        "start",
        "reserved-start",
        "not-a-checkpoint",
        "missing",
        "lm-checkpoint",
        "novel-data-gone",
        "novel-data-changed",
    ],
)
def test_bad_sample_input_is_one_clear_error(runner, trained, tmp_path, kind):
    _, _, out = trained
    args = ["--label", "Alpha"]
    if kind == "label":
        args, pattern = ["--label", "Delta"], r"unknown label 'Delta'; .* knows 3: Alpha, Beta, Gamma$"
    elif kind == "start":
        args, pattern = [*args, "--start", "Aé"], r"--start has .*é.*never saw"
    elif kind == "reserved-start":
        args, pattern = [*args, "--start", "A\x02"], r"--start has the control character .*U\+0002"
    elif kind == "not-a-checkpoint":
        out = tmp_path / "x.safetensors"
        out.write_bytes(b"hello")
        pattern = "not a safetensors checkpoint"
    elif kind == "missing":
        out, pattern = tmp_path / "none.safetensors", "no such checkpoint file"
    elif kind == "lm-checkpoint":
        out = tmp_path / "lm.safetensors"
        vocab = Vocab("abc")
        save_checkpoint(
            out,
            Model(ModelConfig(vocab_size=3, hidden=4, layers=1, embed=0)),
            vocab,
            meta={"task": "char-lm"},
        )
        pattern = (
            r"is a character language model, not a label-conditioned generator; use it "
            r"with numrnn sample"
        )
    elif kind in ("novel-data-gone", "novel-data-changed"):
        copy = tmp_path / "copy.safetensors"
        copy.write_bytes(out.read_bytes())
        recorded = load_checkpoint(copy).meta["data"]["path"]
        gone = tmp_path / "gone"
        write_names(gone, {**LABELS, "Alpha": ["Zed"]})
        tensors = safetensors.numpy.load(copy.read_bytes())
        meta = load_checkpoint(copy).meta
        meta["data"]["path"] = str(gone if kind == "novel-data-changed" else tmp_path / "nowhere")
        text = json.dumps(meta)
        copy.write_bytes(
            safetensors.numpy.save(tensors, metadata={META_KEY: text, DIGEST_KEY: text_digest(text)})
        )
        assert recorded != meta["data"]["path"]
        out, args = copy, [*args, "--novel"]
        pattern = "is not there any more" if kind == "novel-data-gone" else "has changed since"
    result = sample(runner, out, *args, "-n", "2", "--seed", "0")
    assert_clean_error(result, pattern)


def test_data_without_novel_is_a_usage_error(runner, trained):
    _, data, out = trained
    result = sample(runner, out, "--label", "Alpha", "--data", str(data))
    assert result.exit_code == ExitCode.USAGE and "give --novel too" in result.output
