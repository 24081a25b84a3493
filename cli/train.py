"""`numrnn train`: a character-level language model on a text file."""

from pathlib import Path

import click

from numrnn_cli.training import POSITIVE, explicit_options, limit_threads, training_options


@click.command("train")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--seq-len",
    type=POSITIVE,
    default=128,
    help="Characters per stream per step (the BPTT truncation length).",
)
@training_options(
    cell="lstm",
    hidden=256,
    layers=2,
    embed=64,
    batch_size=32,
    lr=2e-3,
    max_epochs=50,
    val_frac=0.05,
    embed_help="Character embedding width; 0 feeds one-hot vectors instead.",
    batch_help="Parallel streams per step.",
    val_help="Share of the text, at its end, held out for validation; 0: none.",
    data_name="CORPUS",
)
@click.pass_context
def train(ctx, corpus, **options):
    """Train a character-level language model on a UTF-8 text file.

    The vocabulary is the text's characters; the last --val-frac of the text is held out
    for validation. Training reads --batch-size contiguous streams of the text,
    --seq-len characters at a time, carrying the hidden state from step to step. Every
    --eval-every steps the whole validation split is scored (nats and bits per character)
    and the best model so far is kept in FILE.best.safetensors; the latest goes to FILE
    every --checkpoint-every steps and at the end.

    Ctrl-C saves a checkpoint and exits 130; --resume FILE continues exactly where it
    stopped (weights, optimizer, data position, random state), taking every option you
    do not give again from the checkpoint.

    \b
    Examples:
      numrnn train data/shakespeare.txt --max-time 2m -o shakespeare.safetensors
      numrnn train input.txt --cell gru --hidden 512 --layers 3 --dropout 0.2 \\
          --lr-decay cosine:1e-4 --max-steps 20000 --metrics run.jsonl
      numrnn train input.txt --resume input.safetensors --max-steps 40000
    """
    limit_threads(options["threads"])
    from numrnn_cli.train_run import LANGUAGE_MODEL
    from numrnn_cli.training_run import run_training

    run_training(LANGUAGE_MODEL, corpus, options, explicit_options(ctx, options))
