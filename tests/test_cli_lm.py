"""The language-model commands end to end: `numrnn train`, `sample`, `eval`, `info`, and bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner

from numrnn.checkpoint import FORMAT_VERSION, load_checkpoint
from numrnn_cli import cli
from numrnn_cli.exit_codes import ExitCode
from tests.helpers import SAMPLE_CORPUS, SMALL_LM, assert_clean_error, child_env, interrupt_training

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CORPUS
SMALL = SMALL_LM


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SAMPLE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return path


def train(runner, corpus, out, *extra):
    return runner.invoke(cli, ["train", str(corpus), *SMALL, "-o", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained model, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "corpus.txt"
    corpus.write_text(SAMPLE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    out = folder / "m.safetensors"
    result = train(CliRunner(), corpus, out, "--max-steps", "20", "--metrics", str(folder / "m.jsonl"))
    assert result.exit_code == 0, result.output
    return folder, corpus, out


# --------------------------------------------------------------------------- train


def test_train_writes_latest_best_and_metrics(trained):
    folder, _, out = trained
    assert load_checkpoint(out).meta["progress"]["step"] == 20
    best = load_checkpoint(folder / "m.best.safetensors")
    assert best.meta["progress"]["step"] in (10, 20)
    records = [json.loads(line) for line in (folder / "m.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["event"] == "train"]
    eval_records = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in train_records] == [5, 10, 15, 20]
    assert [r["step"] for r in eval_records] == [10, 20]
    for record in train_records:
        assert {"step", "epoch", "elapsed_s", "train_loss", "val_loss", "chars_per_s", "lr"} <= set(record)
        assert record["train_loss"] > 0 and record["chars_per_s"] > 0 and record["lr"] == 2e-3
    assert eval_records[-1]["val_loss"] == pytest.approx(
        load_checkpoint(out).meta["progress"]["last_val_loss"]
    )


def test_train_prints_plain_progress_lines_when_not_a_terminal(runner, corpus, tmp_path):
    result = train(runner, corpus, tmp_path / "m.safetensors", "--max-steps", "10")
    assert result.exit_code == 0, result.output
    assert "step       5  epoch" in result.stderr and "chars/s" in result.stderr
    assert "validation loss" in result.stderr and "bits/char" in result.stderr
    assert "stopped at step 10 (reached --max-steps)" in result.stderr
    assert "numrnn sample -c" in result.stderr
    assert result.stdout == ""


def test_quiet_prints_nothing_on_success(runner, corpus, tmp_path):
    result = train(runner, corpus, tmp_path / "m.safetensors", "--max-steps", "5", "-q")
    assert result.exit_code == 0 and result.output == ""


def test_resume_takes_the_checkpoints_options_and_continues_exactly(runner, corpus, tmp_path):
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    assert train(runner, corpus, straight, "--max-steps", "12", "--dropout", "0.2").exit_code == 0
    assert train(runner, corpus, split, "--max-steps", "6", "--dropout", "0.2").exit_code == 0
    # Only the limit is given again: every other option comes from the checkpoint.
    result = runner.invoke(cli, ["train", str(corpus), "--resume", str(split), "--max-steps", "12"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 6 of 12" in result.stderr
    a, b = safetensors.numpy.load_file(straight), safetensors.numpy.load_file(split)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_refuses_options_that_contradict_the_model(runner, trained):
    _, corpus, out = trained
    result = runner.invoke(cli, ["train", str(corpus), "--resume", str(out), "--hidden", "32"])
    assert_clean_error(result, r"--hidden 32 contradicts the checkpoint, whose model has hidden 16")
    result = runner.invoke(cli, ["train", str(corpus), "--resume", str(out), "--cell", "gru"])
    assert_clean_error(result, r"--cell gru contradicts")


def test_resume_on_a_text_with_unknown_characters(runner, trained, tmp_path):
    _, _, out = trained
    other = tmp_path / "other.txt"
    other.write_text("Привет, мир! " * 500, encoding="utf-8")
    result = runner.invoke(
        cli, ["train", str(other), "--resume", str(out), "-o", str(tmp_path / "x.safetensors")]
    )
    assert_clean_error(result, r"character\(s\) the checkpoint's vocabulary lacks")


def test_an_existing_output_needs_resume_or_force(runner, trained):
    _, corpus, out = trained
    before = out.read_bytes()
    result = train(runner, corpus, out, "--max-steps", "2")
    assert_clean_error(result, r"already exists; continue it with --resume")
    assert out.read_bytes() == before


@pytest.mark.parametrize("kind", ["missing", "empty", "folder", "binary", "latin1", "short"])
def test_bad_corpus_is_one_clear_error(runner, tmp_path, kind):
    path = tmp_path / "corpus.txt"
    expected = {
        "missing": r"no such file",
        "empty": r"is empty",
        "folder": r"is a folder",
        "binary": r"binary file \(a NUL byte at offset 3\)",
        "latin1": r"not valid UTF-8: byte 0xe9 at offset 3",
        "short": r"fewer than one batch needs \(batch size 4 x \(sequence length 16 \+ 1\) = 68\)",
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"abc\x00def" * 100)
    elif kind == "latin1":
        path.write_bytes("caf\u00e9 au lait".encode("latin-1") * 100)
    elif kind == "short":
        path.write_text("To be, or not to be: that is the question.\n", encoding="utf-8")
    result = train(runner, path, tmp_path / "m.safetensors")
    assert_clean_error(result, expected)
    assert not (tmp_path / "m.safetensors").exists()


def test_unwritable_output_is_found_before_training(runner, corpus, tmp_path):
    result = train(runner, corpus, tmp_path / "no" / "such" / "m.safetensors")
    assert_clean_error(result, r"the folder .* does not exist")
    assert "training from step" not in result.output
    result = train(runner, corpus, tmp_path)
    assert_clean_error(result, r"is a folder; give a file name")


@pytest.mark.parametrize(
    "option",
    [
        ["--hidden", "0"],
        ["--lr", "0"],
        ["--dropout", "1"],
        ["--max-time", "10x"],
        ["--val-frac", "1"],
        ["--cell", "tcn"],
        ["--lr-decay", "sometimes"],
        ["--batch-size", "-3"],
        ["--optimizer", "lbfgs"],
        ["--dtype", "float16"],
    ],
)
def test_out_of_range_options_are_usage_errors(runner, corpus, tmp_path, option):
    result = train(runner, corpus, tmp_path / "m.safetensors", *option)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Traceback" not in result.output and option[0] in result.output


def test_cuda_device_without_a_gpu_is_a_clean_error(runner, corpus, tmp_path, monkeypatch):
    from numba import cuda

    from numrnn import kernels

    monkeypatch.setattr(kernels, "_driver_present", lambda: False)
    result = train(runner, corpus, tmp_path / "m.safetensors", "--device", "cuda")
    assert_clean_error(result, r"^error: no CUDA GPU found \(no NVIDIA driver.*--device cpu")
    monkeypatch.setattr(kernels, "_driver_present", lambda: True)  # a driver, but no GPU
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    result = train(runner, corpus, tmp_path / "m.safetensors", "--device", "cuda")
    assert_clean_error(result, r"^error: no CUDA GPU found .*--device cpu")
    monkeypatch.setattr(cuda, "is_available", lambda: True)  # a GPU, but CuPy missing
    monkeypatch.setitem(sys.modules, "cupy", None)  # (importing it then raises ImportError)
    result = train(runner, corpus, tmp_path / "m.safetensors", "--device", "cuda")
    assert_clean_error(result, r"needs CuPy .*pip install 'numrnn\[cuda\]'")


def test_auto_device_falls_back_to_the_cpu_and_says_so_once(runner, corpus, tmp_path, monkeypatch):
    """auto without a usable GPU trains on the CPU; the note says why, once per process."""
    from numba import cuda

    from numrnn import kernels
    from numrnn_cli import console

    monkeypatch.setattr(console, "_noted", set())
    monkeypatch.setattr(kernels, "_driver_present", lambda: True)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    notes = []
    for run in range(2):
        out = tmp_path / f"m{run}.safetensors"
        result = train(runner, corpus, out, "--max-steps", "2", "--device", "auto")
        assert result.exit_code == 0, result.output
        notes.append([line for line in result.stderr.splitlines() if line.startswith("note: --device")])
        assert load_checkpoint(out).meta["progress"]["step"] == 2
    assert notes == [
        ["note: --device auto: no CUDA GPU found (numba-cuda sees none); running on the CPU"],
        [],
    ]


def test_a_nan_loss_stops_with_a_remedy(runner, corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    result = train(
        runner, corpus, out, "--max-steps", "30", "--lr", "1e38", "--grad-clip", "0", "--optimizer", "sgd"
    )
    assert_clean_error(result, r"became (nan|inf) at step \d+; training stopped .* lower --lr")


def test_max_time_accepts_human_durations(runner, corpus, tmp_path):
    result = train(runner, corpus, tmp_path / "m.safetensors", "--max-time", "1s", "--max-epochs", "0")
    assert result.exit_code == 0, result.output
    assert "reached --max-time" in result.stderr


def test_train_help_has_examples_and_defaults(runner):
    result = runner.invoke(cli, ["train", "-h"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    for text in ("default: lstm", "default: 256", "default: 0.002", "default: 5.0", "default: 128"):
        assert text in result.output


def test_ctrl_c_saves_says_how_to_resume_and_exits_130(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    code, stderr = interrupt_training(
        [
            "train",
            str(corpus),
            *SMALL,
            "-o",
            str(out),
            "--log-every",
            "1",
            "--max-steps",
            "100000",
            "--max-epochs",
            "0",
        ],
        tmp_path,
    )
    assert code == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert f"saved {out}" in stderr and f"--resume {out}" in stderr
    step = load_checkpoint(out).meta["progress"]["step"]
    assert step >= 1
    result = CliRunner().invoke(
        cli, ["train", str(corpus), "--resume", str(out), "--max-steps", str(step + 2), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).meta["progress"]["step"] == step + 2


# --------------------------------------------------------------------------- eval and info


def test_eval_reports_the_sequential_loss(runner, trained, tmp_path):
    _, _, out = trained
    text = SAMPLE.read_text(encoding="utf-8")[30_000:32_000]
    path = tmp_path / "held_out.txt"
    path.write_text(text + "\u00e9\u00e9", encoding="utf-8")
    result = runner.invoke(cli, ["eval", "-c", str(out), str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"loss", "bpc", "perplexity", "chars", "unknown_chars"}
    assert data["chars"] == len(text) - 1 and data["unknown_chars"] == 2
    assert data["bpc"] == pytest.approx(data["loss"] / np.log(2))
    assert data["perplexity"] == pytest.approx(np.exp(data["loss"]))
    checkpoint = load_checkpoint(out)
    ids = checkpoint.vocab.encode(text)[0]
    model = checkpoint.build_model()
    whole = model.loss(ids[:-1].reshape(-1, 1), ids[1:].reshape(-1, 1)).loss
    assert data["loss"] == pytest.approx(whole, rel=1e-5)
    assert "dropped 2 character(s)" in result.stderr
    table = runner.invoke(cli, ["eval", "-c", str(out), str(path)])
    assert table.exit_code == 0 and "bits/char" in table.stdout and "perplexity" in table.stdout


def test_info_shows_the_model_and_progress(runner, trained):
    _, _, out = trained
    result = runner.invoke(cli, ["info", str(out)])
    assert result.exit_code == 0, result.output
    for text in (
        "lstm, 1 x 16 hidden, embedding 8",
        "step",
        "20",
        "best validation loss",
        "format",
        f"numrnn checkpoint v{FORMAT_VERSION}",
    ):
        assert text in result.stdout
    data = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)
    assert data["model"]["hidden"] == 16 and data["parameters"] == load_checkpoint(out).parameter_count
    assert "rng" not in data


def _bad_checkpoint(kind, good, tmp_path):
    path = tmp_path / f"{kind}.safetensors"
    if kind == "missing":
        return path
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "text":
        path.write_text("not a checkpoint at all\n" * 20)
    elif kind == "foreign":
        path.write_bytes(safetensors.numpy.save({"w": np.zeros(3, np.float32)}, metadata={"a": "b"}))
    elif kind == "newer":
        data = good.read_bytes()
        current = f'\\"format_version\\": {FORMAT_VERSION}'.encode()
        path.write_bytes(data.replace(current, b'\\"format_version\\": 7', 1))
    return path


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("missing", r"no such checkpoint file"),
        ("truncated", r"truncated|damaged"),
        ("text", r"not a safetensors checkpoint"),
        ("foreign", r"not a numrnn checkpoint"),
        ("newer", r"newer numrnn .*format 7.*upgrade"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "info", "resume", "sample"])
def test_bad_checkpoints_are_one_clear_error(runner, trained, tmp_path, kind, pattern, command):
    _, corpus, good = trained
    path = _bad_checkpoint(kind, good, tmp_path)
    args = {
        "eval": ["eval", "-c", str(path), str(corpus)],
        "info": ["info", str(path)],
        "sample": ["sample", "-c", str(path), "--length", "5"],
        "resume": ["train", str(corpus), "--resume", str(path)],
    }[command]
    assert_clean_error(runner.invoke(cli, args), pattern)


# --------------------------------------------------------------------------- sample


def sample(runner, checkpoint, *args):
    return runner.invoke(cli, ["sample", "-c", str(checkpoint), *args])


def test_sample_same_seed_same_text_and_prime_first(runner, trained):
    _, _, out = trained
    first = sample(runner, out, "--prime", "ROMEO:", "--length", "300", "--seed", "5")
    again = sample(runner, out, "--prime", "ROMEO:", "--length", "300", "--seed", "5")
    other = sample(runner, out, "--prime", "ROMEO:", "--length", "300", "--seed", "6")
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout != other.stdout
    assert first.stdout.startswith("ROMEO:")
    assert len(first.stdout) == len("ROMEO:") + 300 + 1 and first.stdout.endswith("\n")
    assert "seed" not in first.stderr


def test_sample_without_a_seed_says_which_it_drew(runner, trained):
    _, _, out = trained
    result = sample(runner, out, "--length", "50")
    assert result.exit_code == 0, result.output
    seed = re.search(r"--seed (\d+)", result.stderr)[1]
    assert sample(runner, out, "--length", "50", "--seed", seed).stdout == result.stdout


def test_sample_with_nothing_to_warn_about_needs_no_rich_console(runner, trained, monkeypatch):
    # rich's import and console are most of what a warm start's CLI costs; with the kernels
    # in the cache (the tests run without one) the seed line and the text go out without it
    import numrnn.tunables
    import numrnn_cli.console

    def no_console():
        raise AssertionError("numrnn sample created a rich console")

    monkeypatch.setattr(numrnn.tunables, "kernels_compiled", lambda *names: True)
    monkeypatch.setattr(numrnn_cli.console, "err_console", no_console)
    _, _, out = trained
    for args in (("--seed", "3"), ()):
        result = sample(runner, out, "--length", "20", "--device", "cpu", *args)
        assert result.exit_code == 0, result.output
        assert len(result.stdout) == 21
    assert "pass --seed" in result.stderr


def test_sample_prime_with_an_unknown_character(runner, trained):
    _, _, out = trained
    result = sample(runner, out, "--prime", "Wie geht\u2019s", "--length", "10")
    assert_clean_error(
        result,
        r"the prime text has the character '\u2019' \(U\+2019 RIGHT SINGLE "
        r"QUOTATION MARK\) at position 8, which the model never saw; .*--drop-unknown",
    )
    result = sample(
        runner, out, "--prime", "Wie geht\u2019s", "--length", "10", "--drop-unknown", "--seed", "1"
    )
    assert result.exit_code == 0, result.output
    assert "dropped 1 prime character" in result.stderr
    assert result.stdout.startswith("Wie geht\u2019s")


def test_sample_prime_file(runner, trained, tmp_path):
    _, _, out = trained
    prime = tmp_path / "prime.txt"
    prime.write_text("First Citizen:\n", encoding="utf-8")
    by_file = sample(runner, out, "--prime-file", str(prime), "--length", "40", "--seed", "2")
    by_text = sample(runner, out, "--prime", "First Citizen:\n", "--length", "40", "--seed", "2")
    assert by_file.exit_code == 0 and by_file.stdout == by_text.stdout
    both = sample(runner, out, "--prime-file", str(prime), "--prime", "x")
    assert both.exit_code == ExitCode.USAGE and "not both" in both.output
    missing = sample(runner, out, "--prime-file", str(tmp_path / "nope.txt"))
    assert_clean_error(missing, r"no such file")


def test_sample_stop_string_ends_the_sample(runner, trained):
    _, _, out = trained
    full = sample(runner, out, "--length", "400", "--seed", "3", "--prime", "A").stdout
    stop = full[150:152]
    ended = sample(runner, out, "--length", "400", "--seed", "3", "--prime", "A", "--stop", stop).stdout
    cut = full.index(stop, 1) + len(stop)
    assert ended == full[:cut] + "\n"


def test_sample_several_samples_with_a_separator(runner, trained):
    _, _, out = trained
    result = sample(
        runner, out, "-n", "3", "--length", "20", "--seed", "4", "--prime", "W", "--separator", "\n~~~\n"
    )
    assert result.exit_code == 0, result.output
    parts = result.stdout.rstrip("\n").split("\n~~~\n")
    assert len(parts) == 3 and all(len(p) == 21 and p.startswith("W") for p in parts)
    assert len(set(parts)) == 3


def test_sample_argmax_is_deterministic_without_a_seed(runner, trained):
    _, _, out = trained
    a = sample(runner, out, "--argmax", "--prime", "The ", "--length", "60")
    b = sample(runner, out, "--argmax", "--prime", "The ", "--length", "60")
    assert a.exit_code == 0 and a.stdout == b.stdout and "seed" not in a.stderr


@pytest.mark.parametrize(
    "option",
    [
        ["--temperature", "0"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--top-k", "-1"],
        ["--length", "-5"],
        ["-n", "0"],
    ],
)
def test_sample_out_of_range_options_are_usage_errors(runner, trained, option):
    _, _, out = trained
    result = sample(runner, out, *option)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Traceback" not in result.output


def test_sample_into_a_closed_pipe_exits_quietly(trained):
    _, _, out = trained
    command = (
        f"{sys.executable} -m numrnn_cli sample -c {out} --length 200000 --seed 1 | head -c 10; "
        f"exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=240, env=child_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == 10
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_terminal_progress_bar_shows_step_epoch_losses_and_speed():
    import io

    from rich.console import Console

    from numrnn.trainer import CheckpointSaved, EvalReport, StepDone, StepReport, TrainStarted
    from numrnn_cli.progress import TrainView

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    with TrainView(console) as view:
        assert view.live
        view(
            TrainStarted(
                step=0,
                total_steps=100,
                steps_per_epoch=40,
                items_per_step=64,
                train_items=2560,
                val_items=100,
                parameters=1234,
                resumed=False,
            )
        )
        view(StepDone(step=50, epoch=1.25, loss=2.5, lr=1e-3))
        view(
            StepReport(
                step=50,
                epoch=1.25,
                elapsed_s=3.0,
                train_loss=2.4567,
                items_per_s=12345.0,
                lr=1e-3,
                val_loss=None,
            )
        )
        view(
            EvalReport(
                step=50, epoch=1.25, elapsed_s=3.0, val_loss=2.5, items=99, improved=True, best_val_loss=2.5
            )
        )
        view(CheckpointSaved(path="m.safetensors", step=50, best=False))
        view.bar.refresh()
    text = buffer.getvalue()
    for part in (
        "training from step 0 of 100",
        "50/100",
        "epoch 1.25",
        "loss 2.4567",
        "val 2.5000",
        "12,345 chars/s",
        "validation loss 2.5000 nats/char",
    ):
        assert part in text, part
