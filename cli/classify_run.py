"""The bodies of `numrnn classify train/eval/predict`, imported only when one runs."""

import json
import shlex
import sys
from pathlib import Path

import numpy as np

from numrnn.checkpoint import load_checkpoint
from numrnn.data import Vocab, read_labelled, stratified_split
from numrnn.errors import DataError
from numrnn.metrics import classification_report, top_k
from numrnn.model import ModelConfig
from numrnn.tasks import classify, require_task
from numrnn.tasks.examples import EncodedTexts
from numrnn_cli.console import out_console, warn, warn_dropped
from numrnn_cli.training import MODEL_OPTIONS
from numrnn_cli.training_run import (
    TrainingCommand,
    labelled_data_line,
    listing,
    recorded_data,
    refuse_new_labels,
)

SPLITS = ("train", "val", "test")

# --------------------------------------------------------------------------- train


def _split(data, train_config):
    return stratified_split(data.labels, train_config.val_frac, train_config.test_frac, train_config.seed)


def _new_model(data, options, train_config):
    train_rows = _split(data, train_config)[0]
    vocab = Vocab.from_text("".join(data.texts[i] for i in train_rows))
    config = ModelConfig(
        cell=options["cell"],
        vocab_size=len(vocab),
        hidden=options["hidden"],
        layers=options["layers"],
        embed=options["embed"],
        output_size=len(data.label_names),
        dropout=options["dropout"],
        bidirectional=options["bidirectional"],
    )
    return vocab, config


def _prepare(path, data, vocab, options, train_config, resume):
    refuse_new_labels(path, data, resume)
    split = _split(data, train_config)
    if len(split[0]) == 0:
        raise DataError(
            f"{path} leaves no example to train on after the validation and test "
            f"splits; lower --val-frac or --test-frac"
        )
    balance = options["balance"] or bool(resume and resume.meta.get("classify", {}).get("balance"))
    return {"path": path, "data": data, "split": split, "balance": balance}


def _make_task(model, vocab, prepared, options, train_config, on_event):
    return classify.ClassifyTask(
        model,
        vocab,
        prepared["data"],
        prepared["split"],
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        balance=prepared["balance"],
        split_meta={"path": str(Path(prepared["path"]).resolve())},
    )


def _describe(data, prepared):
    train, val, test = (len(rows) for rows in prepared["split"])
    return [
        labelled_data_line(data, prepared["path"], conflicts=True),
        f"split by label: {train:,} training, {val:,} validation, {test:,} test examples"
        + (", classes weighted by inverse frequency" if prepared["balance"] else ""),
    ]


def _summary(result, out, prepared):
    best = result.best_out or out
    lines = []
    if result.best_out is not None:
        lines.append(f"best validation loss {result.best_val_loss:.4f} nats/example in {result.best_out}")
    lines.append(f"score it:        numrnn classify eval -c {shlex.quote(str(best))}")
    lines.append(f"use it:          numrnn classify predict -c {shlex.quote(str(best))} TEXT")
    return lines


CLASSIFIER = TrainingCommand(
    task=classify.NAME,
    command="numrnn classify train",
    read=lambda path, options, resume: read_labelled(path),
    new_model=_new_model,
    prepare=_prepare,
    make_task=_make_task,
    summary=_summary,
    describe=_describe,
    model_options=MODEL_OPTIONS + ("bidirectional",),
    fixed_options=("val_frac", "test_frac", "seed"),
)


# --------------------------------------------------------------------------- eval


def run_eval(checkpoint, data_path, split_name, as_json, device="auto"):
    loaded = load_checkpoint(checkpoint)
    require_task(loaded, classify.NAME)
    labels = loaded.labels
    if data_path is None:
        data = recorded_data(loaded, read_labelled, "DATA", "another labelled set")
        split_name = split_name or "test"
        source = f"the {split_name} split of {loaded.meta['data']['path']}"
    else:
        data = read_labelled(data_path)
        split_name = split_name or "all"
        source = str(data_path) if split_name == "all" else f"the {split_name} split of {data_path}"
    label_ids = _label_ids(data, labels, data_path)
    rows = np.arange(len(data))
    if split_name != "all":
        train = loaded.meta["train"]
        rows = stratified_split(data.labels, train["val_frac"], train.get("test_frac", 0.0), train["seed"])[
            SPLITS.index(split_name)
        ]
    if len(rows) == 0:
        raise DataError(
            f"{source} is empty (trained with --{split_name}-frac 0?); give DATA to score other examples"
        )
    model = loaded.build_model(device)
    encoded = EncodedTexts(loaded.vocab, data.texts, label_ids)
    warn_dropped(encoded.dropped)
    empty = int(np.count_nonzero(encoded.lengths[rows] == 0))
    if empty:
        warn(f"{empty} example(s) have no character the model knows and are left out")
    loss, probs, scored = classify.score(model, encoded, rows)
    report = classification_report(label_ids[scored], probs.argmax(axis=1), labels)
    report = {"checkpoint": str(checkpoint), "data": source, "examples": len(scored), "loss": loss, **report}
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    _print_report(report)


def _label_ids(data, labels, data_path):
    """The checkpoint's label id of every example; labels it does not know are an error."""
    index = {name: i for i, name in enumerate(labels)}
    unknown = [name for name in data.label_names if name not in index]
    if unknown:
        raise DataError(
            f"{data_path} has label(s) the model does not know: {listing(unknown)}; "
            f"it knows {listing(labels)}"
        )
    mapping = np.array([index[name] for name in data.label_names], np.int64)
    return mapping[data.labels]


# --------------------------------------------------------------------------- predict


def run_predict(checkpoint, texts, k, as_json, device="auto"):
    loaded = load_checkpoint(checkpoint)
    require_task(loaded, classify.NAME)
    if list(texts) == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin]
        texts = [text for text in texts if text.strip()]
        if not texts:
            raise DataError("no text on stdin; give one text per line")
    encoded = EncodedTexts(loaded.vocab, list(texts))
    warn_dropped(encoded.dropped)
    for text, length in zip(texts, encoded.lengths):
        if length == 0:
            raise DataError(f"{text!r} has no character the model knows, so it cannot be classified")
    model = loaded.build_model(device)
    _, probs, rows = classify.score(model, encoded)
    ordered = np.empty_like(probs)
    ordered[rows] = probs
    ids, values = top_k(ordered, min(k, model.classes))
    labels = loaded.labels
    out = sys.stdout
    for text, row_ids, row_values in zip(texts, ids, values):
        if as_json:
            predictions = [
                {"label": labels[i], "probability": round(float(p), 6)} for i, p in zip(row_ids, row_values)
            ]
            out.write(json.dumps({"text": text, "predictions": predictions}, ensure_ascii=False) + "\n")
        else:
            out.write(
                "\t".join([text] + [f"{labels[i]}\t{p:.4f}" for i, p in zip(row_ids, row_values)]) + "\n"
            )


# --------------------------------------------------------------------------- rendering


def _print_report(report):
    from rich.table import Table

    console = out_console()
    console.print(
        f"[bold]{report['checkpoint']}[/] on {report['data']}: {report['examples']:,} examples",
        soft_wrap=True,
    )
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_column("measure", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("accuracy", f"{report['accuracy']:.4f}")
    summary.add_row("macro-F1", f"{report['macro_f1']:.4f}")
    summary.add_row("loss (nats/example)", f"{report['loss']:.4f}")
    console.print(summary)

    per_class = Table(title="per class", title_justify="left")
    for name in ("label", "precision", "recall", "F1", "count"):
        per_class.add_column(name, justify="left" if name == "label" else "right")
    for label, scores in report["per_class"].items():
        per_class.add_row(
            label,
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            f"{scores['count']:,}",
        )
    console.print(per_class)
    table, width = confusion_table(report["confusion"]["labels"], report["confusion"]["matrix"])
    # Never wrapped: a matrix is read by its columns (a pipe gets it whole, too).
    console.print(table, width=max(width, console.width), crop=False)


def confusion_table(labels, matrix):
    """(a rich Table, the width it needs): the confusion matrix, rows true labels and columns
    predicted ones (abbreviated), each non-zero cell shaded by its share of the row, green on
    the diagonal and red off it, so the eye finds the confusions."""
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    matrix = np.asarray(matrix)
    short = _abbreviations(labels)
    table = Table(
        title="confusion (rows: true label; columns: predicted, by first letters)",
        title_justify="left",
        box=None,
        padding=(0, 0),
        show_edge=False,
    )
    table.add_column("", justify="left", no_wrap=True, style="bold")
    widths = [max(len(name), len(str(int(matrix[:, j].max())))) + 1 for j, name in enumerate(short)]
    for name, width in zip(short, widths):
        table.add_column(name, justify="right", no_wrap=True, min_width=width)
    totals = np.maximum(matrix.sum(axis=1), 1)
    for i, label in enumerate(labels):
        cells = []
        for j, count in enumerate(matrix[i]):
            if count == 0:
                cells.append(Text("·", style="dim"))
                continue
            share = min(count / totals[i], 1.0)
            level = int(round(60 + 190 * share**0.5))
            color = f"rgb(0,{level // 2},0)" if i == j else f"rgb({level},0,0)"
            cells.append(Text(str(count), style=Style(bgcolor=color, bold=share >= 0.2)))
        table.add_row(label + " ", *cells)
    return table, max(len(label) for label in labels) + 1 + sum(widths) + 1


def _abbreviations(labels, least=2):
    """Each label's shortest prefix (at least ``least`` characters) no other label shares."""
    short = []
    for label in labels:
        size = least
        while size < len(label) and any(
            other != label and other.startswith(label[:size]) for other in labels
        ):
            size += 1
        short.append(label[:size])
    return short
