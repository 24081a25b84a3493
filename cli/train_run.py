"""`numrnn train`'s task: a character language model on a text file (see training_run)."""

import shlex

import numpy as np

from numrnn.data import Vocab, read_text, split_by_position
from numrnn.model import ModelConfig
from numrnn.tasks import lm
from numrnn_cli.training_run import TrainingCommand, refuse_unknown_characters


def _new_model(text, options, train_config):
    vocab = Vocab.from_text(text)
    config = ModelConfig(
        cell=options["cell"],
        vocab_size=len(vocab),
        hidden=options["hidden"],
        layers=options["layers"],
        embed=options["embed"],
        dropout=options["dropout"],
    )
    return vocab, config


def _prepare(corpus, text, vocab, options, train_config, resume):
    """(train ids, validation ids or None)."""
    if resume is not None:
        refuse_unknown_characters(corpus, [text], vocab, what="text")
    ids = vocab.encode(text, compact=True)[0]
    if train_config.val_frac == 0:
        return ids, None
    return split_by_position(ids, train_config.val_frac)


def _make_task(model, vocab, prepared, options, train_config, on_event):
    train_ids, val_ids = prepared
    return lm.LanguageModelTask(
        model,
        vocab,
        train_ids,
        val_ids,
        batch_size=train_config.batch_size,
        seq_len=train_config.seq_len,
        on_event=on_event,
    )


def _summary(result, out, prepared):
    lines = []
    if result.best_out is not None:
        lines.append(
            f"best validation loss {result.best_val_loss:.4f} nats/char "
            f"({result.best_val_loss / np.log(2):.4f} bits/char) in {result.best_out}"
        )
    lines.append(f"sample from it:  numrnn sample -c {shlex.quote(str(out))}")
    return lines


LANGUAGE_MODEL = TrainingCommand(
    task=lm.NAME,
    command="numrnn train",
    read=lambda path, options, resume: read_text(path),
    new_model=_new_model,
    prepare=_prepare,
    make_task=_make_task,
    summary=_summary,
)
