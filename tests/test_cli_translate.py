"""`numrnn translate train/run/eval` end to end on a tiny pairs file, and bad input."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import numrnn_cli.training_run as training_run
from numrnn.checkpoint import load_checkpoint
from numrnn.data import read_pairs, shuffled_split
from numrnn.metrics import chrf
from numrnn.tasks.translate import TranslateTask
from numrnn_cli import cli
from numrnn_cli.exit_codes import ExitCode
from tests.test_cli_generate import assert_clean_error

SMALL = [
    "--hidden",
    "12",
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
    "0.1",
    "--test-frac",
    "0.1",
]
WORDS = (
    "ant bee cat dog eel fox gnu hen ibis jay kiwi lark mole newt owl pig quail rat seal toad "
    "urchin vole wasp yak zebu asp bat cod doe emu frog goat hare koi lynx mink orca puma ram "
    "stoat tern vicuna wren yeti boar crab dingo egret finch gecko heron impala"
).split()


@pytest.fixture
def runner():
    return CliRunner()


def write_pairs(path, words=WORDS):
    """Each word and its reversal, a task a small model learns a little of in a few steps."""
    path.write_text("".join(f"{word}\t{word[::-1]}\tnote {i}\n" for i, word in enumerate(words)), "utf-8")
    return path


def train(runner, data, out, *extra):
    return runner.invoke(cli, ["translate", "train", str(data), *SMALL, "-o", str(out), *extra])


def run(runner, checkpoint, *extra, **kwargs):
    return runner.invoke(cli, ["translate", "run", "-c", str(checkpoint), *extra], **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained translator, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_pairs(folder / "pairs.tsv")
    out = folder / "t.safetensors"
    result = train(CliRunner(), data, out, "--max-steps", "30", "--metrics", str(folder / "t.jsonl"))
    assert result.exit_code == 0, result.output
    return folder, data, out


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command", [["translate"], ["translate", "train"], ["translate", "run"], ["translate", "eval"]]
)
def test_help_has_a_summary_and_examples(runner, command):
    result = runner.invoke(cli, [*command, "-h"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "numrnn translate" in result.output
    if command == ["translate", "train"]:
        assert "--attention [none|dot|general|additive]" in result.output
        assert "--max-source-len" in result.output and "--reverse" in result.output
    if command == ["translate", "run"]:
        for option in (
            "--beam",
            "--length-penalty",
            "--n-best",
            "--max-length",
            "--greedy",
            "--show-attention",
        ):
            assert option in result.output


def test_translate_is_listed_in_numrnn_help(runner):
    assert re.search(r"^\s+translate\s+Translate", runner.invoke(cli, ["-h"]).output, re.M)


# --------------------------------------------------------------------------- train


def test_train_writes_checkpoints_metrics_and_the_split(trained):
    folder, data, out = trained
    checkpoint = load_checkpoint(out)
    assert checkpoint.task == "translate"
    meta = checkpoint.meta
    assert meta["split"] == {"train": 42, "val": 5, "test": 5, "val_skipped": meta["split"]["val_skipped"]}
    assert meta["data"]["path"] == str(data.resolve()) and meta["data"]["pairs"] == len(WORDS)
    config = checkpoint.model_config
    assert (config.attention, config.bidirectional, config.decoder_width) == ("general", True, 24)
    train_rows = shuffled_split(len(WORDS), 0.1, 0.1, 0)[0]
    longest = max(len(WORDS[i]) for i in train_rows)
    assert meta["translate"]["max_source_len"] == longest and meta["translate"]["max_length"] == 2 * longest
    assert load_checkpoint(folder / "t.best.safetensors").task == "translate"
    evals = [json.loads(line) for line in (folder / "t.jsonl").read_text().splitlines()]
    evals = [record for record in evals if record["event"] == "eval"]
    assert len(evals) == 3 and all(0.0 <= record["val_chrf"] <= 100.0 for record in evals)
    # The best checkpoint is the one with the best greedy chrF (the first of equals).
    best = max(evals, key=lambda record: (record["val_chrf"], -record["step"]))
    progress = load_checkpoint(folder / "t.best.safetensors").meta["progress"]
    assert progress["step"] == progress["best_step"] == best["step"]
    assert progress["best_selection"] == -best["val_chrf"] and progress["best_val_loss"] == best["val_loss"]


def test_train_progress_filters_and_summary(runner, tmp_path):
    data = write_pairs(tmp_path / "pairs.tsv")
    result = train(
        runner, data, tmp_path / "m.safetensors", "--max-steps", "10", "--max-source-len", "4",
        "--max-target-len", "3", "--attention", "additive", "--unidirectional",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train_rows, val_rows, _ = shuffled_split(len(WORDS), 0.1, 0.1, 0)
    used = [WORDS[i] for i in np.concatenate([train_rows, val_rows])]
    too_long = sum(len(word) > 4 for word in used)
    too_long_target = sum(len(word) == 4 for word in used)  # sources of 4 pass, their targets do not
    assert f"{len(WORDS)} pairs from {data}" in result.stderr
    expected = (
        f"left out of training and validation: {too_long} with a source over --max-source-len 4 "
        f"and {too_long_target} with a target over --max-target-len 3"
    )
    assert result.stderr.count(expected) == 2  # said before training and in the summary
    assert re.search(
        r"validation loss \d\.\d{4} nats/char, .* over \d+ characters; greedy chrF \d+\.\d", result.stderr
    )
    assert re.search(r"best greedy chrF \d+\.\d on the validation pairs \(validation loss", result.stderr)
    assert "numrnn translate run -c" in result.stderr and "numrnn translate eval -c" in result.stderr
    meta = load_checkpoint(tmp_path / "m.safetensors").meta
    assert meta["translate"]["limits"] == {
        "max_source_len": 4,
        "max_target_len": 3,
        "filtered_source": too_long,
        "filtered_target": too_long_target,
    }
    assert meta["split"]["train"] == sum(len(WORDS[i]) <= 3 for i in train_rows)


def test_resume_continues_exactly(runner, tmp_path):
    data = write_pairs(tmp_path / "pairs.tsv")
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    assert (
        train(runner, data, straight, "--max-steps", "12", "--layers", "2", "--dropout", "0.2").exit_code == 0
    )
    assert train(runner, data, split, "--max-steps", "5", "--layers", "2", "--dropout", "0.2").exit_code == 0
    result = runner.invoke(
        cli, ["translate", "train", str(data), "--resume", str(split), "--max-steps", "12"]
    )
    assert result.exit_code == 0, result.output
    assert "resuming at step 5" in result.stderr
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name], err_msg=name)


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--attention", "dot"], r"--attention dot contradicts the checkpoint"),
        (["--unidirectional"], r"--bidirectional off contradicts the checkpoint"),
        (["--reverse"], r"--reverse contradicts the checkpoint"),
        (["--max-source-len", "3"], r"--max-source-len 3 contradicts the checkpoint \(no limit\)"),
        (["--test-frac", "0.2"], r"--test-frac 0.2 contradicts the checkpoint"),
    ],
)
def test_resume_refuses_another_model_or_data(runner, trained, extra, pattern):
    _, data, out = trained
    result = runner.invoke(cli, ["translate", "train", str(data), "--resume", str(out), *extra])
    assert_clean_error(result, pattern)


def test_ctrl_c_saves_and_exits_130(runner, tmp_path, monkeypatch):
    calls = []

    def interrupted(self):
        calls.append(1)
        return len(calls) > 3

    monkeypatch.setattr(training_run.InterruptFlag, "__call__", interrupted)
    data = write_pairs(tmp_path / "pairs.tsv")
    result = train(runner, data, tmp_path / "m.safetensors", "--max-steps", "50")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "Resume with:" in result.stderr and "numrnn translate train" in result.stderr
    assert load_checkpoint(tmp_path / "m.safetensors").meta["progress"]["step"] == 3


def test_a_nan_loss_stops_with_a_clear_error(runner, tmp_path, monkeypatch):
    monkeypatch.setattr(TranslateTask, "loss_and_grad", lambda self, *args: float("nan"))
    data = write_pairs(tmp_path / "pairs.tsv")
    result = train(runner, data, tmp_path / "m.safetensors", "--max-steps", "5")
    assert result.exit_code == ExitCode.ERROR
    assert re.search(r"^error: the loss became nan at step 1", result.stderr, re.M)


@pytest.mark.parametrize(
    "kind", ["missing", "no-tab", "empty-target", "reserved", "binary", "exists", "filtered"]
)
def test_bad_training_input_is_one_clear_error(runner, tmp_path, kind):
    data = tmp_path / "pairs.tsv"
    out = tmp_path / "m.safetensors"
    extra = []
    pattern = {
        "missing": "no such file",
        "no-tab": r"pairs.tsv, line 3 has no tab: 'cat cat'; each line must be source<TAB>target",
        "empty-target": r"pairs.tsv, line 2 has an empty target",
        "reserved": r"control character .*U\+0002",
        "binary": "not a text file|not UTF-8|binary",
        "exists": "already exists",
        "filtered": "no pair is left to train on after the length filters",
    }[kind]
    if kind != "missing":
        write_pairs(data)
    if kind == "no-tab":
        lines = data.read_text().splitlines()
        lines[2] = "cat cat"
        data.write_text("\n".join(lines) + "\n")
    elif kind == "empty-target":
        data.write_text("ant\ttna\nbee\t \n")
    elif kind == "reserved":
        data.write_text("ant\tt\x02na\nbee\teeb\n")
    elif kind == "binary":
        data.write_bytes(b"\x00\xff\xfe" * 100)
    elif kind == "exists":
        out.write_bytes(b"")
    elif kind == "filtered":
        extra = ["--max-source-len", "1"]
    result = train(runner, data, out, "--max-steps", "2", *extra)
    assert_clean_error(result, pattern)
    assert kind == "exists" or not out.exists()


# --------------------------------------------------------------------------- run


def test_run_writes_one_translation_per_text(runner, trained):
    _, _, out = trained
    result = run(runner, out, "cat", "heron", "ox")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[3] == ""  # three lines, each ended
    assert all("\x02" not in line and "\x03" not in line for line in lines)
    # The beam's result does not depend on the other texts of the batch.
    alone = run(runner, out, "heron")
    assert alone.stdout.splitlines() == [lines[1]]


def test_run_reads_stdin_and_keeps_blank_lines(runner, trained):
    _, _, out = trained
    result = run(runner, out, "-", "--greedy", input="cat\n\nheron\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == ""
    # --beam 1 is greedy search
    beam_one = run(runner, out, "cat", "heron", "--beam", "1")
    assert beam_one.stdout.splitlines() == [lines[0], lines[2]]


def test_n_best_gives_ranked_hypotheses_with_scores(runner, trained):
    _, _, out = trained
    result = run(runner, out, "--n-best", "3", "--beam", "4", "cat", "impala")
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        assert len(fields) == 6
        texts, scores = fields[0::2], [float(value) for value in fields[1::2]]
        assert scores == sorted(scores, reverse=True) and all(score <= 0 for score in scores)
        assert len(set(texts)) == 3
    best = run(runner, out, "--beam", "4", "cat", "impala")
    assert best.stdout.splitlines() == [line.split("\t")[0] for line in result.stdout.splitlines()]


def test_show_attention_draws_a_grid_per_text(runner, trained):
    _, _, out = trained
    result = run(runner, out, "--show-attention", "--max-length", "6", "goat")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    translation, header, rows = lines[0], lines[1], lines[2:]
    assert header.split() == list("goat")
    ended = rows[-1].split()[0] == "<end>"
    assert len(rows) == len(translation) + ended
    assert all(any(glyph in row for glyph in "░▒▓█") for row in rows)  # every row attends somewhere


def test_unknown_characters_are_dropped_with_a_warning(runner, trained):
    _, _, out = trained
    result = run(runner, out, "c#at")
    assert result.exit_code == 0
    assert re.search(r"warning: dropped 1 character\(s\) the model never saw: '#' \(U\+0023", result.stderr)
    assert result.stdout == run(runner, out, "cat").stdout


def test_long_sources_are_refused_or_truncated(runner, trained):
    _, _, out = trained
    limit = load_checkpoint(out).meta["translate"]["max_source_len"]
    long = "a" * (limit + 3)
    result = run(runner, out, long)
    assert_clean_error(result, rf"has {limit + 3} characters, more than the {limit} .*--truncate")
    result = run(runner, out, long, "--truncate")
    assert result.exit_code == 0 and "cut 1 source(s)" in result.stderr
    assert result.stdout == run(runner, out, "a" * limit).stdout


@pytest.mark.parametrize("kind", ["no-known-char", "classifier", "missing", "n-best"])
def test_bad_run_input_is_one_clear_error(runner, trained, tmp_path, kind):
    _, _, out = trained
    args = ["cat"]
    if kind == "no-known-char":
        args, pattern = ["###"], r"'###' has no character the model knows"
    elif kind == "missing":
        out, pattern = tmp_path / "none.safetensors", "no such checkpoint file"
    elif kind == "classifier":
        from tests.test_cli_generate import LABELS, write_names

        names = write_names(tmp_path / "names", LABELS)
        classifier = tmp_path / "c.safetensors"
        made = runner.invoke(
            cli, ["classify", "train", str(names), "--hidden", "4", "--max-steps", "1", "-o", str(classifier)]
        )
        assert made.exit_code == 0, made.output
        out, pattern = classifier, r"is a classifier, not a translator .*use it with numrnn classify"
    else:
        result = run(runner, out, "--n-best", "6", "cat")
        assert result.exit_code == ExitCode.USAGE and "--n-best 6 needs a beam" in result.output
        return
    assert_clean_error(run(runner, out, *args), pattern)


# --------------------------------------------------------------------------- eval


def test_eval_scores_the_test_split_as_run_translates_it(runner, trained):
    _, data, out = trained
    result = runner.invoke(cli, ["translate", "eval", "-c", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    test_rows = shuffled_split(len(WORDS), 0.1, 0.1, 0)[2]
    sources = [WORDS[i] for i in test_rows]
    references = [word[::-1] for word in sources]
    assert report["pairs"] == 5 and report["data"] == f"the test split of {data.resolve()}"
    assert report["loss"] > 0 and report["bpc"] == pytest.approx(report["loss"] / np.log(2))
    assert report["loss_chars"] == sum(len(word) + 1 for word in sources)
    for name, extra in (("greedy", ["--greedy"]), ("beam", ["--beam", "5"])):
        translated = run(runner, out, *extra, *sources).stdout.splitlines()
        assert report[name]["chrf"] == pytest.approx(chrf(translated, references), abs=1e-9)
        exact = np.mean([a == b for a, b in zip(translated, references)])
        assert report[name]["exact_match"] == pytest.approx(exact)
    assert report["beam"]["beam"] == 5 and report["beam"]["length_penalty"] == 1.0
    table = runner.invoke(cli, ["translate", "eval", "-c", str(out)])
    assert table.exit_code == 0 and "chrF" in table.stdout and "beam 5" in table.stdout


def test_eval_on_other_pairs_and_splits(runner, trained, tmp_path):
    _, _, out = trained
    other = write_pairs(tmp_path / "more.tsv", ["cat", "dog", "cat!"])  # "!" is unknown on both sides
    result = runner.invoke(cli, ["translate", "eval", "-c", str(out), str(other), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pairs"] == 3 and report["data"] == str(other)
    assert "1 pair(s) have target characters the model cannot write" in result.stderr
    assert "dropped 1 character(s) the model never saw: '!'" in result.stderr
    assert report["loss_chars"] == len("cat") + 1 + len("dog") + 1
    val = runner.invoke(cli, ["translate", "eval", "-c", str(out), "--split", "val", "--json"])
    assert json.loads(val.stdout)["pairs"] == 5


def test_eval_refuses_changed_training_data(runner, tmp_path):
    data = write_pairs(tmp_path / "pairs.tsv")
    out = tmp_path / "m.safetensors"
    assert train(runner, data, out, "--max-steps", "2").exit_code == 0
    write_pairs(data, WORDS[:-1])
    result = runner.invoke(cli, ["translate", "eval", "-c", str(out)])
    assert_clean_error(result, r"changed since the model was trained on it")


def test_the_reversed_columns_train_the_other_way(runner, tmp_path):
    data = write_pairs(tmp_path / "pairs.tsv")
    out = tmp_path / "m.safetensors"
    assert train(runner, data, out, "--max-steps", "2", "--reverse").exit_code == 0
    loaded = load_checkpoint(out)
    assert loaded.meta["data"]["reverse"] is True
    reversed_pairs = read_pairs(data, reverse=True)
    assert set(loaded.vocab.chars) <= set("".join(reversed_pairs.sources))
    result = runner.invoke(cli, ["translate", "eval", "-c", str(out), "--json"])
    assert result.exit_code == 0, result.output


def test_a_translation_cut_at_max_length_is_warned(runner, trained):
    _, _, out = trained
    from numrnn.checkpoint import save_checkpoint

    # The same model with END made improbable: it never ends by itself.
    loaded = load_checkpoint(out)
    model = loaded.build_model()
    model.weights["head.bias"][loaded.target_vocab.index["\x03"]] = -50.0
    endless = out.parent / "endless.safetensors"
    save_checkpoint(endless, model, loaded.vocab, meta={k: v for k, v in loaded.meta.items() if k != "dtype"})
    for extra in (["--greedy"], ["--beam", "3"]):
        result = run(runner, endless, "--max-length", "4", *extra, "heron", "cat")
        assert result.exit_code == 0, result.output
        assert [len(line) for line in result.stdout.splitlines()] == [4, 4]
        assert "2 translation(s) reached --max-length 4 without ending and were cut there" in result.stderr


def test_show_attention_without_attention_says_so(runner, tmp_path):
    data = write_pairs(tmp_path / "pairs.tsv")
    out = tmp_path / "m.safetensors"
    assert train(runner, data, out, "--max-steps", "2", "--attention", "none").exit_code == 0
    result = run(runner, out, "--show-attention", "cat")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    assert "this model has no attention (trained with --attention none)" in result.stderr


def test_translations_into_a_closed_pipe_exit_quietly(trained, tmp_path):
    import subprocess
    import sys

    from tests.helpers import child_env

    _, _, out = trained
    many = tmp_path / "many.txt"
    many.write_text("cat\nheron\n" * 10000)  # 20,000 lines of two scored hypotheses: far past a pipe's buffer
    command = (
        f"{sys.executable} -m numrnn_cli translate run -c {out} --beam 2 --n-best 2 - < {many} | head -n 1; "
        f"exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=240, env=child_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
