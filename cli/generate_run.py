"""The bodies of `numrnn generate train/sample`, imported only when one runs."""

import shlex
import sys
from pathlib import Path

import numpy as np

from numrnn.checkpoint import load_checkpoint
from numrnn.data import describe_char, read_labelled, stratified_split
from numrnn.errors import DataError
from numrnn.model import ModelConfig
from numrnn.tasks import generate, require_task
from numrnn_cli.console import closed_pipe_exit, err_console
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


# --------------------------------------------------------------------------- sample


def run_sample(
    checkpoint,
    *,
    label,
    start,
    count,
    temperature,
    top_k,
    top_p,
    seed,
    max_length,
    unique,
    novel,
    data,
    device="auto",
):
    from numrnn.sampling import ConditionalSampler, SampleConfig, unique_draw_limit
    from numrnn.tunables import kernels_compiled

    console = err_console()
    loaded = load_checkpoint(checkpoint)
    require_task(loaded, generate.NAME)
    labels = loaded.labels
    if label not in labels:
        raise DataError(f"unknown label {label!r}; {loaded.path} knows {len(labels)}: {', '.join(labels)}")
    vocab = loaded.vocab
    generate.check_reserved([start], what="--start")
    unknown = sorted({char for char in start if char not in vocab})
    if unknown:
        raise DataError(
            f"--start has {', '.join(describe_char(char) for char in unknown)}, which "
            f"the model never saw; use the characters of its training data"
        )
    exclude = _training_examples(loaded, data) if novel else ()
    config = SampleConfig(length=max_length, temperature=temperature, top_k=top_k, top_p=top_p).validate()
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
        console.print(f"seed {seed} (pass --seed {seed} to get these samples again)", highlight=False)
    rng = np.random.default_rng(seed)
    sampler = ConditionalSampler(loaded.build_model(device), vocab, generate.START, generate.END)
    label_id = labels.index(label)
    spinner = None
    if console.is_terminal and not kernels_compiled(*sampler.kernel_names):
        spinner = console.status(
            "compiling the sampler (first run only; later runs start at once)...", spinner="dots"
        )
        spinner.start()
    try:
        if unique:
            texts, drawn, unended = sampler.distinct(label_id, count, config, rng, start, exclude=exclude)
            _stop(spinner)
            spinner = None
            _write("".join(text + "\n" for text in texts))
            if len(texts) < count:
                what = "distinct" + (", novel" if novel else "")
                plural = "" if len(texts) == 1 else "s"
                console.print(
                    f"[yellow]warning:[/] only {len(texts)} {what} sample{plural} after "
                    f"{drawn:,} draws (at most {unique_draw_limit(count):,} for -n "
                    f"{count}); try a higher --temperature",
                    highlight=False,
                )
        else:
            unended = 0
            for text, ended in sampler.texts(label_id, count, config, rng, start):
                _stop(spinner)
                spinner = None
                _write(text + "\n")
                unended += not ended
        if unended:
            console.print(
                f"[yellow]warning:[/] {unended} sample(s) reached --max-length "
                f"{max_length} without ending and were cut there",
                highlight=False,
            )
    except BrokenPipeError:
        closed_pipe_exit()
    finally:
        _stop(spinner)


def _training_examples(loaded, data_path):
    """Every example of the data --novel leaves out (the training data by default)."""
    if data_path is None:
        recorded = loaded.meta.get("data", {}).get("path")
        if not recorded:
            raise DataError(
                f"{loaded.path} does not record where its training data is; give it with --data for --novel"
            )
        if not Path(recorded).exists():
            raise DataError(
                f"--novel needs the training data, and {loaded.path} was trained on "
                f"{recorded}, which is not there any more; give it with --data"
            )
        data = read_labelled(recorded)
        if data.digest != loaded.meta["data"].get("digest"):
            raise DataError(
                f"{recorded} has changed since {loaded.path} was trained on it; give "
                f"the training data with --data"
            )
        return set(data.texts)
    return set(read_labelled(data_path).texts)


def _stop(spinner):
    if spinner is not None:
        spinner.stop()


def _write(text):
    sys.stdout.write(text)
    sys.stdout.flush()
