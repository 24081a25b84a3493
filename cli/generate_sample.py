"""The body of `numrnn generate sample`, imported only when it runs (apart from the training
command's modules, which it does not need)."""

import sys
from pathlib import Path

import click
import numpy as np

from numrnn.checkpoint import load_checkpoint
from numrnn.data import describe_char, read_labelled
from numrnn.errors import DataError
from numrnn.tasks import generate, require_task
from numrnn_cli.console import closed_pipe_exit, err_console, warn


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
        # click, not rich: a warm start with nothing else to say never imports rich.
        click.echo(f"seed {seed} (pass --seed {seed} to get these samples again)", err=True)
    rng = np.random.default_rng(seed)
    sampler = ConditionalSampler(loaded.build_model(device), vocab, generate.START, generate.END)
    label_id = labels.index(label)
    spinner = None
    if not kernels_compiled(*sampler.kernel_names) and err_console().is_terminal:
        spinner = err_console().status(
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
                warn(
                    f"only {len(texts)} {what} sample{plural} after {drawn:,} draws (at most "
                    f"{unique_draw_limit(count):,} for -n {count}); try a higher --temperature"
                )
        else:
            unended = 0
            for text, ended in sampler.texts(label_id, count, config, rng, start):
                _stop(spinner)
                spinner = None
                _write(text + "\n")
                unended += not ended
        if unended:
            warn(f"{unended} sample(s) reached --max-length {max_length} without ending and were cut there")
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
