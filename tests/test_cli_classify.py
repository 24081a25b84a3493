"""`numrnn classify train/eval/predict` end to end on a tiny labelled folder, and bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from numrnn.checkpoint import load_checkpoint
from numrnn_cli import cli
from numrnn_cli.exit_codes import ExitCode
from tests.helpers import assert_clean_error, interrupt_training

SMALL = [
    "--hidden",
    "16",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--log-every",
    "5",
    "--lr",
    "1e-2",
]
NAMES = {
    "Alpha": [
        "Aaron",
        "Abel",
        "Adam",
        "Alan",
        "Albert",
        "Alfred",
        "Andrew",
        "Anton",
        "Arthur",
        "August",
        "Axel",
        "Amos",
        "Ansel",
        "Abbot",
        "Alvin",
        "Arnold",
        "Asher",
        "Austin",
    ],
    "Beta": [
        "Bruno",
        "Boris",
        "Bernd",
        "Basil",
        "Brent",
        "Bjorn",
        "Blake",
        "Boyd",
        "Brian",
        "Bruce",
        "Byron",
        "Burt",
        "Barry",
        "Benny",
        "Brock",
        "Buck",
        "Bram",
        "Brodie",
    ],
    "Gamma": [
        "Gustav",
        "Gregor",
        "Gideon",
        "Gavin",
        "Glenn",
        "Gordon",
        "Grant",
        "Guido",
        "Gunter",
        "Gerald",
        "Gilbert",
        "Godfrey",
        "Graham",
        "Grover",
        "Gus",
        "Gale",
        "Garth",
        "Gene",
    ],
}


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def names(tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    for label, examples in NAMES.items():
        # Two blank lines per file: skipped and counted.
        (folder / f"{label}.txt").write_text(
            "\n".join(examples[:9] + ["", "  "] + examples[9:]) + "\n", encoding="utf-8"
        )
    return folder


def train(runner, data, out, *extra):
    return runner.invoke(cli, ["classify", "train", str(data), *SMALL, "-o", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify")
    data = folder / "names"
    data.mkdir()
    for label, examples in NAMES.items():
        (data / f"{label}.txt").write_text("\n".join(examples) + "\n", encoding="utf-8")
    out = folder / "m.safetensors"
    result = CliRunner().invoke(
        cli,
        [
            "classify",
            "train",
            str(data),
            *SMALL,
            "-o",
            str(out),
            "--max-steps",
            "60",
            "--test-frac",
            "0.2",
            "--val-frac",
            "0.2",
            "--metrics",
            str(folder / "run.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    return data, out, result


def test_train_writes_a_classifier_and_says_what_it_read(trained):
    data, out, result = trained
    assert "54 examples of 3 labels" in result.stderr
    assert "split by label: 30 training, 12 validation, 12 test examples" in result.stderr
    assert "numrnn classify eval -c" in result.stderr
    checkpoint = load_checkpoint(out)
    assert checkpoint.task == "classify" and checkpoint.labels == ["Alpha", "Beta", "Gamma"]
    assert checkpoint.meta["data"]["path"] == str(data.resolve())
    assert checkpoint.meta["split"] == {"train": 30, "val": 12, "test": 12}
    records = [json.loads(line) for line in (out.parent / "run.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["event"] == "eval"]
    assert evals and {"val_loss", "val_accuracy", "val_macro_f1", "val_examples"} <= set(evals[-1])
    assert all("examples_per_s" in r for r in records if r["event"] == "train")


def test_blank_lines_are_skipped_and_counted(runner, names, tmp_path):
    result = train(runner, names, tmp_path / "m.safetensors", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert "54 examples of 3 labels" in result.stderr and "6 blank lines skipped" in result.stderr


def test_eval_scores_the_checkpoints_own_test_split(runner, trained):
    _, out, _ = trained
    result = runner.invoke(cli, ["classify", "eval", "-c", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 12 and report["data"].startswith("the test split of")
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion", "loss"}
    assert set(report["per_class"]) == {"Alpha", "Beta", "Gamma"}
    assert set(report["per_class"]["Beta"]) == {"precision", "recall", "f1", "count"}
    matrix = np.array(report["confusion"]["matrix"])
    assert report["confusion"]["labels"] == ["Alpha", "Beta", "Gamma"] and matrix.sum() == 12
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 12)
    assert report["accuracy"] > 0.5  # the first letter gives the label away


def test_eval_tables_on_the_terminal(runner, trained):
    data, out, _ = trained
    result = runner.invoke(cli, ["classify", "eval", "-c", str(out), str(data)])
    assert result.exit_code == 0, result.output
    for text in (
        "54 examples",
        "accuracy",
        "macro-F1",
        "per class",
        "precision",
        "confusion",
        "Alpha",
        "Gamma",
    ):
        assert text in result.stdout, text


def test_eval_of_data_with_a_label_the_model_does_not_know(runner, trained, tmp_path):
    _, out, _ = trained
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "Alpha.txt").write_text("Amy\n")
    (folder / "Delta.txt").write_text("Dora\n")
    assert_clean_error(
        runner.invoke(cli, ["classify", "eval", "-c", str(out), str(folder)]),
        r"label\(s\) the model does not know: Delta",
    )


def test_predict_prints_top_labels_tab_separated_and_as_json(runner, trained):
    _, out, _ = trained
    result = runner.invoke(cli, ["classify", "predict", "-c", str(out), "Bob", "Gary", "-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["Bob", "Gary"]
    fields = lines[0].split("\t")
    assert len(fields) == 5 and fields[1] in NAMES and float(fields[2]) >= float(fields[4])
    piped = runner.invoke(
        cli, ["classify", "predict", "-c", str(out), "-", "--json", "-k", "3"], input="Bob\n\nGary\n"
    )
    records = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["text"] for r in records] == ["Bob", "Gary"]
    assert sum(p["probability"] for p in records[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_drops_unknown_characters_with_a_warning_naming_them(runner, trained):
    _, out, _ = trained
    result = runner.invoke(cli, ["classify", "predict", "-c", str(out), "Bø"])
    assert result.exit_code == 0, result.output
    assert "U+00F8" in result.stderr and result.stdout.startswith("Bø\t")
    assert_clean_error(
        runner.invoke(cli, ["classify", "predict", "-c", str(out), "øø"]), r"no character the model knows"
    )


def test_resume_continues_exactly(runner, names, tmp_path):
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    assert (
        train(
            runner,
            names,
            straight,
            "--max-steps",
            "12",
            "--dropout",
            "0.3",
            "--layers",
            "2",
            "--bidirectional",
            "--balance",
        ).exit_code
        == 0
    )
    assert (
        train(
            runner,
            names,
            split,
            "--max-steps",
            "5",
            "--dropout",
            "0.3",
            "--layers",
            "2",
            "--bidirectional",
            "--balance",
        ).exit_code
        == 0
    )
    resumed = runner.invoke(
        cli, ["classify", "train", str(names), "--resume", str(split), "--max-steps", "12"]
    )
    assert resumed.exit_code == 0, resumed.output
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert b.meta["progress"]["step"] == 12 and b.meta["classify"]["balance"] is True
    for name, value in a.weights.items():
        np.testing.assert_array_equal(b.weights[name], value, err_msg=name)


def test_resume_refuses_a_changed_split_or_model(runner, trained, names):
    _, out, _ = trained
    assert_clean_error(
        runner.invoke(cli, ["classify", "train", str(names), "--resume", str(out), "--test-frac", "0.3"]),
        r"--test-frac 0.3 contradicts",
    )
    assert_clean_error(
        runner.invoke(cli, ["classify", "train", str(names), "--resume", str(out), "--bidirectional"]),
        r"--bidirectional on contradicts",
    )


def test_ctrl_c_saves_and_exits_130(names, tmp_path):
    out = tmp_path / "m.safetensors"
    code, stderr = interrupt_training(
        [
            "classify",
            "train",
            str(names),
            *SMALL,
            "-o",
            str(out),
            "--log-every",
            "1",
            "--max-steps",
            "1000000",
            "--max-epochs",
            "0",
        ],
        tmp_path,
    )
    assert code == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr and f"numrnn classify train {names} --resume {out}" in stderr
    assert load_checkpoint(out).meta["progress"]["step"] >= 1


# --------------------------------------------------------------------------- bad input


def _bad_data(kind, tmp_path):
    path = tmp_path / kind
    if kind == "empty-folder":
        path.mkdir()
    elif kind == "one-label":
        path.mkdir()
        (path / "Only.txt").write_text("Ann\nBob\n")
    elif kind == "empty-label-file":
        path.mkdir()
        (path / "Alpha.txt").write_text("Ann\nAbe\n")
        (path / "Beta.txt").write_text("\n\n")
    elif kind == "bad-tsv":
        path = tmp_path / "bad.tsv"
        path.write_text("Ann\tAlpha\nBob\tBeta\nCarl Gamma\n")
    elif kind == "latin1":
        path.mkdir()
        (path / "Alpha.txt").write_text("Ann\n")
        (path / "Beta.txt").write_bytes("Bj\u00f6rn\n".encode("latin-1"))
    return path


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("empty-folder", r"no \.txt files|no .*\.txt"),
        ("one-label", r"one label|two"),
        ("empty-label-file", r"Beta\.txt.*no examples|no examples.*Beta"),
        ("bad-tsv", r"bad\.tsv.*line 3"),
        ("latin1", r"Beta\.txt.*not valid UTF-8.*offset 2"),
    ],
)
def test_bad_data_is_one_clear_error_and_writes_nothing(runner, tmp_path, kind, pattern):
    out = tmp_path / "m.safetensors"
    assert_clean_error(train(runner, _bad_data(kind, tmp_path), out), pattern)
    assert not out.exists()


def test_a_checkpoint_of_another_task_says_which_command_takes_it(runner, trained, tmp_path):
    _, out, _ = trained
    assert_clean_error(
        runner.invoke(cli, ["sample", "-c", str(out)]),
        r"is a classifier, not a character language model; use it with numrnn classify",
    )
    lm = tmp_path / "lm.safetensors"
    text = tmp_path / "t.txt"
    text.write_text("hello world, hello there. " * 40)
    assert (
        runner.invoke(
            cli,
            [
                "train",
                str(text),
                "--hidden",
                "8",
                "--layers",
                "1",
                "--seq-len",
                "8",
                "--batch-size",
                "2",
                "--max-steps",
                "1",
                "-o",
                str(lm),
                "-q",
            ],
        ).exit_code
        == 0
    )
    for command in (["classify", "eval", "-c", str(lm)], ["classify", "predict", "-c", str(lm), "x"]):
        assert_clean_error(
            runner.invoke(cli, command),
            r"is a character language model, not a classifier; use it with numrnn sample",
        )


def test_info_shows_the_task_labels_and_split(runner, trained):
    _, out, _ = trained
    result = runner.invoke(cli, ["info", str(out)])
    assert result.exit_code == 0, result.output
    for text in (
        "classify: a classifier",
        "labels",
        "Alpha, Beta, Gamma",
        "54 examples from",
        "30 training, 12",
        "validation, 12 test",
        "nats/example",
    ):
        assert text in result.stdout, text
    data = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)
    assert data["task"] == "classify" and data["split"] == {"train": 30, "val": 12, "test": 12}
    assert "tensors" not in data and "rng" not in data


def test_a_tsv_file_trains_and_its_own_splits_score(runner, tmp_path):
    data = tmp_path / "names.tsv"
    rows = [f"{name}\t{label}" for label, names in NAMES.items() for name in names]
    data.write_text("\n".join(rows[::2] + [""] + rows[1::2]) + "\n", encoding="utf-8")
    out = tmp_path / "m.safetensors"
    result = train(runner, data, out, "--max-steps", "4")
    assert result.exit_code == 0, result.output
    assert "54 examples of 3 labels" in result.stderr and "1 blank line skipped" in result.stderr
    assert load_checkpoint(out).meta["data"]["source"] == "tsv"
    for split, count in (("val", 6), ("train", 42)):
        scored = runner.invoke(
            cli, ["classify", "eval", "-c", str(out), str(data), "--split", split, "--json"]
        )
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout)["examples"] == count
