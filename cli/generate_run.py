"""The body of `numrnn generate train`, imported only when it runs."""

import shlex
from pathlib import Path

import numpy as np

from numrnn.data import read_labelled, stratified_split
from numrnn.model import ModelConfig
from numrnn.tasks import generate
from numrnn_cli.training import MODEL_OPTIONS
from numrnn_cli.training_run import (
    TrainingCommand,
    labelled_data_line,
    refuse_new_labels,
    refuse_unknown_characters,
)

# --------------------------------------------------------------------------- train


def _read(path, options, resume):
    data = read_labelled(path)
    generate.check_reserved(data.texts, what=str(path))
    return data


def _split(data, train_config):
    return stratified_split(data.labels, train_config.val_frac, 0.0, train_config.seed)


def _new_model(data, options, train_config):
    train_rows = _split(data, train_config)[0]
    vocab = generate.build_vocab([data.texts[i] for i in train_rows])
    config = ModelConfig(
        cell=options["cell"],
        vocab_size=len(vocab),
        hidden=options["hidden"],
        layers=options["layers"],
        embed=options["embed"],
        output_size=generate.output_size(vocab),
        dropout=options["dropout"],
        condition=options["condition"],
        condition_classes=len(data.label_names),
    )
    return vocab, config


def _prepare(path, data, vocab, options, train_config, resume):
    refuse_new_labels(path, data, resume)
    split = _split(data, train_config)
    if resume is not None:
        refuse_unknown_characters(path, [data.texts[i] for i in split[0]], vocab)
    return {"path": path, "data": data, "split": split}


def _make_task(model, vocab, prepared, options, train_config, on_event):
    from numrnn.trainer import Notice

    task = generate.GenerateTask(
        model,
        vocab,
        prepared["data"],
        prepared["split"],
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        split_meta={
            "path": str(Path(prepared["path"]).resolve()),
            "val_frac": train_config.val_frac,
            "seed": train_config.seed,
        },
    )
    if task.val_skipped:
        on_event(
            Notice(
                f"{task.val_skipped} validation example(s) have characters no training "
                f"example has; they are left out of the validation loss"
            )
        )
    return task


def _describe(data, prepared):
    train, val, _ = (len(rows) for rows in prepared["split"])
    return [
        labelled_data_line(data, prepared["path"], conflicts=False),
        f"split by label: {train:,} training and {val:,} validation examples",
    ]


def _summary(result, out, prepared):
    best = result.best_out or out
    lines = []
    if result.best_out is not None:
        lines.append(
            f"best validation loss {result.best_val_loss:.4f} nats/char "
            f"({result.best_val_loss / np.log(2):.4f} bits/char) in {result.best_out}"
        )
    lines.append(f"sample from it:  numrnn generate sample -c {shlex.quote(str(best))} --label LABEL")
    return lines


GENERATOR = TrainingCommand(
    task=generate.NAME,
    command="numrnn generate train",
    read=_read,
    new_model=_new_model,
    prepare=_prepare,
    make_task=_make_task,
    summary=_summary,
    describe=_describe,
    model_options=MODEL_OPTIONS + ("condition",),
    fixed_options=("val_frac", "seed"),
)
