"""What every training command shares: its options (with per-task defaults and wording),
thread limits, Ctrl-C handling and resume's reading of options.

Each training command (`numrnn train`, `numrnn classify train`, ...) declares its own
arguments and task options, then applies ``training_options(...)`` for the rest; the body
runs in ``numrnn_cli.training_run`` (imported only when a command runs: it loads numpy).
"""

import os
import signal
from pathlib import Path

import click

from numrnn.configs import CELLS, DEVICES, DTYPES, OPTIMIZERS
from numrnn_cli.console import resolve_device
from numrnn_cli.params import DEVICE_HELP, Duration

POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)
# Options that shape the network: on --resume they must match the checkpoint (or be left out).
MODEL_OPTIONS = ("cell", "hidden", "layers", "embed")
# Options that fill numrnn.configs.TrainConfig.
TRAIN_OPTIONS = (
    "seq_len",
    "batch_size",
    "optimizer",
    "lr",
    "lr_decay",
    "grad_clip",
    "max_steps",
    "max_epochs",
    "max_time",
    "eval_every",
    "checkpoint_every",
    "log_every",
    "patience",
    "val_frac",
    "test_frac",
    "seed",
)


def training_options(
    *,
    cell,
    hidden,
    layers,
    embed,
    batch_size,
    lr,
    max_epochs,
    val_frac,
    batch_help,
    val_help,
    data_name,
    eval_every=250,
    checkpoint_every=250,
    log_every=50,
    embed_help="Character embedding width; 0 feeds one-hot vectors.",
):
    """The options every training command takes, with this command's defaults and wording;
    ``data_name`` is the command's data argument as its help names it (CORPUS, DATA)."""
    out_help = (
        "Checkpoint file; the best one goes beside it as FILE.best.safetensors.  "
        f"[default: {data_name}'s name with .safetensors, or the --resume file]"
    )
    specs = [
        click.option("--cell", type=click.Choice(CELLS), default=cell, help="Recurrent cell."),
        click.option("--hidden", type=POSITIVE, default=hidden, help="Hidden units per layer."),
        click.option("--layers", type=POSITIVE, default=layers, help="Stacked recurrent layers."),
        click.option("--embed", type=COUNT, default=embed, help=embed_help),
        click.option(
            "--dropout",
            type=click.FloatRange(0, 1, max_open=True),
            default=0.0,
            help="Dropout between stacked layers while training.",
        ),
        click.option("--batch-size", type=POSITIVE, default=batch_size, help=batch_help),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default="adam",
            help="Update rule (torch.optim's defaults; SGD with momentum 0.9).",
        ),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, help="Learning rate."),
        click.option(
            "--lr-decay",
            default="none",
            metavar="SCHEDULE",
            callback=lambda c, p, v: _schedule(v),
            help="none, cosine[:FLOOR], linear[:FLOOR] (to FLOOR at the last step) or "
            "step:EVERY:FACTOR (e.g. step:1000:0.5).",
        ),
        click.option(
            "--grad-clip",
            type=click.FloatRange(min=0),
            default=5.0,
            help="Clip the global gradient norm to this; 0 turns clipping off.",
        ),
        click.option(
            "--max-steps",
            type=COUNT,
            default=0,
            help="Stop after this many steps in all, those before a resume included; 0: no limit.",
        ),
        click.option(
            "--max-epochs", type=COUNT, default=max_epochs, help="Stop after this many passes; 0: no limit."
        ),
        click.option(
            "--max-time",
            type=Duration(),
            default=None,
            help="Stop after this much time in this session, e.g. 90s, 10m, 2h.",
        ),
        click.option(
            "--eval-every",
            type=COUNT,
            default=eval_every,
            help="Steps between validation runs; 0 evaluates only at the end.",
        ),
        click.option(
            "--checkpoint-every",
            type=COUNT,
            default=checkpoint_every,
            help="Steps between checkpoints; 0 saves only at the end.",
        ),
        click.option(
            "--log-every",
            type=POSITIVE,
            default=log_every,
            help="Steps per progress line and metrics record.",
        ),
        click.option(
            "--patience",
            type=COUNT,
            default=0,
            help="Stop after this many evaluations without a better validation loss; 0: never.",
        ),
        click.option(
            "--val-frac", type=click.FloatRange(0, 1, max_open=True), default=val_frac, help=val_help
        ),
        click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help=out_help),
        click.option(
            "--resume",
            type=click.Path(path_type=Path),
            default=None,
            help="Continue training from this checkpoint exactly where it stopped.",
        ),
        click.option("--force", is_flag=True, help="Overwrite an existing --out file when not resuming."),
        click.option("--seed", type=int, default=0, help="Seed for the initial weights and dropout."),
        click.option(
            "--dtype",
            type=click.Choice(DTYPES),
            default="float32",
            help="Floating-point type of weights and arithmetic.",
        ),
        click.option(
            "--threads",
            type=POSITIVE,
            default=None,
            help="CPU threads, fixed (the count never changes a result: a resume is bit-identical "
            "with any).  [default: the cores other programs leave free, followed as it changes]",
        ),
        click.option(
            "--device",
            type=click.Choice(DEVICES),
            default="auto",
            callback=resolve_device,
            help=f"Where to train: {DEVICE_HELP} Checkpoints load on either device.",
        ),
        click.option(
            "--metrics",
            type=click.Path(path_type=Path),
            default=None,
            help="Append one JSON object per log interval and per evaluation to this file.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress output; errors still show."),
    ]

    def apply(function):
        for spec in reversed(specs):
            function = spec(function)
        return function

    return apply


def explicit_options(ctx, options):
    """The names of the options given on the command line (resume keeps the others)."""
    return {
        name for name in options if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }


def _schedule(spec):
    from numrnn.configs import LRSchedule
    from numrnn.errors import ConfigError

    try:
        LRSchedule.parse(spec)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("lr_decay ")) from None
    return spec


def limit_threads(threads):
    """Read by OpenBLAS and numba when they load, which is after this in a fresh process."""
    if not threads:
        return
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
