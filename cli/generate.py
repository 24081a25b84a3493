"""`numrnn generate`: one-to-many models that write a name (a line of text) for a label."""

import os
from pathlib import Path

import click

from numrnn.configs import CONDITIONS
from numrnn_cli.params import device_option, draw_options
from numrnn_cli.training import explicit_options, limit_threads, training_options

DEFAULT_CONDITION = "input"  # measured: benchmarks/generate_conditioning.py
DEFAULT_MAX_LENGTH = 40


@click.group("generate")
def generate():
    """Generate lines of text for a label: names in the style of a language.

    DATA is a folder of LABEL.txt files with one example per line (the file's name is
    the label), or a UTF-8 TSV file of text<TAB>label lines. The model learns to write
    each label's examples character by character, from a start token to an end token, so
    a generated name ends by itself.

    \b
    Examples:
      numrnn generate train ../shared/data/names -o names-gen.safetensors --max-time 2m
      numrnn generate sample -c names-gen.best.safetensors --label Russian -n 10
      numrnn generate sample -c names-gen.best.safetensors --label Irish --start "O'" --novel
    """


@generate.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--condition",
    type=click.Choice(CONDITIONS[1:]),
    default=DEFAULT_CONDITION,
    help="How the label enters the model: state (a learnt initial state per label), "
    "input (a learnt per-label input added at every step) or both.",
)
@training_options(
    cell="lstm",
    hidden=256,
    layers=1,
    embed=32,
    batch_size=64,
    lr=1e-3,
    max_epochs=20,
    val_frac=0.1,
    batch_help="Names per step (batched by similar length).",
    val_help="Share of each label's examples held out for validation (loss per character, "
    "the best checkpoint); 0: none.",
    data_name="DATA",
)
@click.pass_context
def train(ctx, data, **options):
    """Train a character model that writes examples of a given label.

    The examples of each label are split with --seed into training and validation
    (--val-frac) sets in the same proportions; the vocabulary is the training examples'
    characters plus a start and an end token (the control characters U+0002 and U+0003,
    which the data may not hold). Each step reads --batch-size examples of similar length,
    each with its label (--condition says how the label enters). Every --eval-every steps
    the validation set is scored (nats and bits per character, the end token counted) and
    the best model so far is kept in FILE.best.safetensors; the latest goes to FILE every
    --checkpoint-every steps and at the end.

    Ctrl-C saves a checkpoint and exits 130; --resume FILE continues exactly where it
    stopped (weights, optimizer, batches, random state), taking every option you do not
    give again from the checkpoint.

    \b
    Examples:
      numrnn generate train ../shared/data/names -o names-gen.safetensors --max-time 2m
      numrnn generate train ../shared/data/names --cell lstm --hidden 512 --dropout 0.1 \\
          --layers 2 --lr-decay cosine --max-epochs 40 --metrics run.jsonl
      numrnn generate train ../shared/data/names --resume names-gen.safetensors --max-epochs 60
    """
    limit_threads(options["threads"])
    from numrnn_cli.generate_run import GENERATOR
    from numrnn_cli.training_run import run_training

    run_training(GENERATOR, data, options, explicit_options(ctx, options))


@generate.command("sample")
@click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The generator's checkpoint (.safetensors).",
)
@click.option("--label", required=True, help="The label to write examples of, e.g. Russian.")
@click.option(
    "--start",
    default=None,
    metavar="TEXT",
    help="Every sample begins with this text, and the model goes on from it.  [default: none]",
)
@click.option(
    "-n", "--num-samples", type=click.IntRange(min=1), default=10, help="How many samples, one per line."
)
@draw_options(temperature_help="Below 1: safer, more common names; above 1: wilder ones.")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for the draws: the same seed gives the same samples.  [default: random, shown on stderr]",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_LENGTH,
    help="At most this many characters after --start; a sample that reaches it "
    "without ending is cut there (with a warning).",
)
@click.option(
    "--unique",
    is_flag=True,
    help="No sample twice: keep drawing until -n distinct samples, or until 20 x N + "
    "100 draws (then fewer come out, with a warning).",
)
@click.option(
    "--novel",
    is_flag=True,
    help="Also leave out samples that are examples in the training data, of any label (implies --unique).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="The examples --novel leaves out.  [default: the training data, read again "
    "from where the checkpoint says it was]",
)
@device_option
def sample(
    checkpoint,
    label,
    start,
    num_samples,
    temperature,
    top_k,
    top_p,
    seed,
    max_length,
    unique,
    novel,
    data,
    device,
):
    """Write samples for a label from a trained generator, one per line on stdout.

    Each sample starts at the start token (then --start), and the model writes one
    character at a time, drawn from its predicted distribution (shaped by --temperature,
    --top-k and --top-p), until it writes the end token. The generation loop is compiled:
    no Python runs between characters.

    \b
    Examples:
      numrnn generate sample -c names-gen.best.safetensors --label Russian -n 10
      numrnn generate sample -c names-gen.best.safetensors --label Japanese --temperature 0.7 --seed 1
      numrnn generate sample -c names-gen.best.safetensors --label Irish --start "O'" -n 20 --novel
    """
    if data is not None and not novel:
        raise click.UsageError("--data names the examples --novel leaves out; give --novel too")
    # Batch-1 products are too small to share between threads (as `numrnn sample`). Set
    # before numpy/scipy load BLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from numrnn_cli.generate_sample import run_sample

    run_sample(
        checkpoint,
        label=label,
        start=start or "",
        count=num_samples,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        max_length=max_length,
        unique=unique or novel,
        novel=novel,
        data=data,
        device=device,
    )
