"""`numrnn train`: a character-level language model on a text file."""

import os
import signal
from pathlib import Path

import click

from numrnn.configs import CELLS, DEVICES, DTYPES, OPTIMIZERS
from numrnn_cli.exit_codes import ExitCode
from numrnn_cli.params import Duration

MODEL_OPTIONS = ("cell", "hidden", "layers", "embed")
TRAIN_OPTIONS = ("seq_len", "batch_size", "optimizer", "lr", "lr_decay", "grad_clip", "max_steps",
                 "max_epochs", "max_time", "eval_every", "checkpoint_every", "log_every",
                 "patience", "val_frac", "seed")
POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)


@click.command("train")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--cell", type=click.Choice(CELLS), default="lstm", help="Recurrent cell.")
@click.option("--hidden", type=POSITIVE, default=256, help="Hidden units per layer.")
@click.option("--layers", type=POSITIVE, default=2, help="Stacked recurrent layers.")
@click.option("--embed", type=COUNT, default=64,
              help="Character embedding width; 0 feeds one-hot vectors instead.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="Dropout between stacked layers while training.")
@click.option("--seq-len", type=POSITIVE, default=128,
              help="Characters per stream per step (the BPTT truncation length).")
@click.option("--batch-size", type=POSITIVE, default=32, help="Parallel streams per step.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam",
              help="Update rule (torch.optim's defaults; SGD with momentum 0.9).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, help="Learning rate.")
@click.option("--lr-decay", default="none", metavar="SCHEDULE", callback=lambda c, p, v: _schedule(v),
              help="none, cosine[:FLOOR], linear[:FLOOR] (to FLOOR at the last step) or "
                   "step:EVERY:FACTOR (e.g. step:1000:0.5).")
@click.option("--grad-clip", type=click.FloatRange(min=0), default=5.0,
              help="Clip the global gradient norm to this; 0 turns clipping off.")
@click.option("--max-steps", type=COUNT, default=0,
              help="Stop after this many steps in all, those before a resume included; 0: no limit.")
@click.option("--max-epochs", type=COUNT, default=50, help="Stop after this many passes; 0: no limit.")
@click.option("--max-time", type=Duration(), default=None,
              help="Stop after this much time in this session, e.g. 90s, 10m, 2h.")
@click.option("--eval-every", type=COUNT, default=250,
              help="Steps between validation runs; 0 evaluates only at the end.")
@click.option("--checkpoint-every", type=COUNT, default=250,
              help="Steps between checkpoints; 0 saves only at the end.")
@click.option("--log-every", type=POSITIVE, default=50,
              help="Steps per progress line and metrics record.")
@click.option("--patience", type=COUNT, default=0,
              help="Stop after this many evaluations without a better validation loss; 0: never.")
@click.option("--val-frac", type=click.FloatRange(0, 1, max_open=True), default=0.05,
              help="Share of the text, at its end, held out for validation; 0: none.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Checkpoint file; the best one goes beside it as FILE.best.safetensors.  "
                   "[default: CORPUS's name with .safetensors, or the --resume file]")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue training from this checkpoint exactly where it stopped.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file when not resuming.")
@click.option("--seed", type=int, default=0, help="Seed for the initial weights and dropout.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32",
              help="Floating-point type of weights and arithmetic.")
@click.option("--threads", type=POSITIVE, default=None,
              help="CPU threads for BLAS and numba.  [default: all cores]")
@click.option("--device", type=click.Choice(DEVICES), default="auto",
              help="Where to train; auto is the CPU until the CUDA backend lands.")
@click.option("--metrics", type=click.Path(path_type=Path), default=None,
              help="Append one JSON object per log interval and per evaluation to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output; errors still show.")
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
    if options["threads"]:
        _limit_threads(options["threads"])
    from numrnn_cli.train_run import run_training

    explicit = {name for name in options
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    result = run_training(corpus, options, explicit)
    if result.reason == "interrupted":
        raise click.exceptions.Exit(ExitCode.INTERRUPTED)


def _schedule(spec):
    from numrnn.configs import LRSchedule
    from numrnn.errors import ConfigError

    try:
        LRSchedule.parse(spec)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("lr_decay ")) from None
    return spec


def _limit_threads(threads):
    # Read by OpenBLAS and numba when they load, which is after this in a fresh process.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)


class InterruptFlag:
    """First Ctrl-C: finish the step, save, stop. Second: stop at once."""

    def __init__(self, on_first):
        self.set = False
        self.on_first = on_first
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.on_first()

    def __call__(self):
        return self.set
