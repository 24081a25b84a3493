"""`numrnn sample`: generate text from a trained model, streamed to stdout."""

import os
import sys
from pathlib import Path

import click

from numrnn_cli.console import closed_pipe_exit
from numrnn_cli.params import device_option, draw_options, weights_option


@click.command("sample")
@click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The model's checkpoint (.safetensors).",
)
@click.option(
    "--length", type=click.IntRange(min=0), default=1000, help="Characters to generate after the prime text."
)
@click.option(
    "--prime",
    default=None,
    metavar="TEXT",
    help="Text the model reads first; it is printed first.  [default: none; the first "
    "character is drawn uniformly]",
)
@click.option(
    "--prime-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read the prime text from this UTF-8 file.",
)
@draw_options(temperature_help="Below 1: safer, more repetitive text; above 1: wilder text.")
@click.option("--argmax", is_flag=True, help="Always take the most probable character (no randomness).")
@click.option(
    "--stop",
    default=None,
    metavar="TEXT",
    help="End a sample as soon as this text is generated (e.g. $'\\n\\n').",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed for the draws: the same seed gives the same text.  [default: random, shown on stderr]",
)
@click.option("-n", "--num-samples", type=click.IntRange(min=1), default=1, help="How many samples.")
@click.option("--separator", default="\n\n", show_default=r"a blank line", help="Printed between samples.")
@click.option(
    "--drop-unknown",
    is_flag=True,
    help="Drop prime characters the model never saw (with a warning) instead of failing.",
)
@weights_option(
    help="The weights generation reads: float32 as trained, or bf16 (rounded to bfloat16) or int8 "
    "(one scale per row), converted once at load: 2x or 4x fewer bytes read per character, faster "
    "sampling at a small cost in quality (numrnn eval --weights measures it). float32 models on "
    "the CPU only."
)
@device_option
def sample(
    checkpoint,
    length,
    prime,
    prime_file,
    temperature,
    top_k,
    top_p,
    argmax,
    stop,
    seed,
    num_samples,
    separator,
    drop_unknown,
    weights,
    device,
):
    """Generate text from a trained character-level model.

    The model reads the prime text (if any), then writes --length more characters, drawing
    each from its predicted distribution (shaped by --temperature, --top-k and --top-p) or
    taking the most probable with --argmax. Text streams to stdout as it is generated.

    \b
    Examples:
      numrnn sample -c shakespeare.safetensors --prime "ROMEO:" --length 500
      numrnn sample -c shakespeare.safetensors --temperature 0.7 --seed 7 -n 3
      numrnn sample -c shakespeare.safetensors --prime-file intro.txt --top-p 0.9 --stop $'\\n\\n'
      numrnn sample -c shakespeare.safetensors --weights int8 --length 5000
    """
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if weights != "float32" and device != "cpu":
        from numrnn.errors import ConfigError

        raise ConfigError(
            f"--weights {weights} is read by the CPU's generation kernels only, and the device "
            f"is {device}: add --device cpu, or sample with --weights float32 on the GPU"
        )
    # Batch-1 products are too small to share between threads: one BLAS thread is faster
    # (measured 12.9k vs 8.0k chars/s, 2 x 256 LSTM). Set before numpy/scipy load BLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    from numrnn.checkpoint import load_checkpoint
    from numrnn.data import read_text
    from numrnn.sampling import SampleConfig, Sampler
    from numrnn.tasks import require_task
    from numrnn.tunables import kernels_compiled
    from numrnn_cli.console import err_console, warn

    loaded = load_checkpoint(checkpoint)
    require_task(loaded, "char-lm")
    if prime_file is not None:
        prime = read_text(prime_file)
    prime = prime or ""
    vocab = loaded.vocab
    prime_ids, dropped = vocab.encode(prime, drop_unknown=drop_unknown, what="the prime text")
    if dropped:
        warn(f"dropped {dropped} prime character(s) the model never saw")
    config = SampleConfig(
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, argmax=argmax, stop=stop or ""
    ).validate()
    sampler = Sampler(loaded.build_model(device), vocab, weights=weights)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
        if not argmax:
            # click, not rich: a warm start with nothing else to say never imports rich.
            click.echo(f"seed {seed} (pass --seed {seed} to get this text again)", err=True)
    rng = np.random.default_rng(seed)
    spinner = None
    if not kernels_compiled(*sampler.kernel_names) and err_console().is_terminal:
        spinner = err_console().status(
            "compiling the sampler (first run only; later runs start at once)...", spinner="dots"
        )
    try:
        _stream_samples(sampler, prime, prime_ids, config, rng, num_samples, separator, spinner)
    except BrokenPipeError:
        closed_pipe_exit()


def _stream_samples(sampler, prime, prime_ids, config, rng, num_samples, separator, spinner):
    """Write each sample (prime first) as its chunks arrive; the spinner, if any, runs until
    the first chunk (the compile of a cold start)."""
    if spinner is not None:
        spinner.start()
    try:
        for index in range(num_samples):
            pieces = sampler.generate(prime_ids, config, rng)
            first = next(pieces, "")
            if spinner is not None:
                spinner.stop()
                spinner = None
            _write((separator if index else "") + prime + first)
            for piece in pieces:
                _write(piece)
        _write("\n")
    finally:
        if spinner is not None:
            spinner.stop()


def _write(text):
    sys.stdout.write(text)
    sys.stdout.flush()
