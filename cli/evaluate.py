"""`numrnn eval`: a model's loss on a text file."""

import json
import sys
from pathlib import Path

import click

from numrnn_cli.params import device_option, weights_option

WEIGHTS_SHOWN = {
    "float32": "float32",
    "bf16": "bf16 (rounded from float32)",
    "int8": "int8 (per-row scales, dequantised)",
}


@click.command("eval")
@click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The model's checkpoint (.safetensors).",
)
@click.argument("text_file", metavar="FILE", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print one JSON object: {"loss", "bpc", "perplexity", "chars", "unknown_chars"}, and '
    '"weights" with --weights bf16 or int8.',
)
@weights_option(
    help="Score with the weights as numrnn sample --weights reads them: float32 as trained; bf16 "
    "rounded to bfloat16; int8 quantised and dequantised per row. The bits/char against float32's "
    "is the quality cost. float32 models only."
)
@device_option
def evaluate(checkpoint, text_file, as_json, weights, device):
    """Score a UTF-8 text: loss (nats/char), bits/char and perplexity.

    The model reads FILE as one stream from a zero state, carrying its state through the
    whole text, so the figure is exactly its sequential next-character loss. Characters
    the model never saw are dropped from the stream, counted and reported. With --weights
    bf16 or int8 the model scores with exactly the weight values `numrnn sample --weights`
    generates from.

    \b
    Examples:
      numrnn eval -c shakespeare.safetensors data/shakespeare.txt
      numrnn eval -c model.best.safetensors held_out.txt --json
      numrnn eval -c model.best.safetensors held_out.txt --weights int8
    """
    from numrnn.checkpoint import load_checkpoint
    from numrnn.data import read_text
    from numrnn.sampling import rounded_model
    from numrnn.tasks import require_task
    from numrnn.tasks.lm import score_text
    from numrnn_cli.console import err_console

    loaded = load_checkpoint(checkpoint)
    require_task(loaded, "char-lm")
    text = read_text(text_file)
    model = rounded_model(loaded.build_model(device), weights)
    console = err_console()
    status = console.status("scoring...", spinner="dots") if console.is_terminal else None
    if status is not None:
        status.start()
    try:
        score = score_text(model, loaded.vocab, text, what=str(text_file))
    finally:
        if status is not None:
            status.stop()
    if score.unknown_chars:
        console.print(
            f"[yellow]warning:[/] dropped {score.unknown_chars:,} character(s) of "
            f"{text_file} that the model never saw",
            highlight=False,
        )
    if as_json:
        # float32 (the default) keeps the document as it always was; converted weights are named.
        extra = {} if weights == "float32" else {"weights": weights}
        json.dump(dict(score.to_dict(), **extra), sys.stdout)
        sys.stdout.write("\n")
        return
    from rich.table import Table

    from numrnn_cli.console import out_console

    table = Table()
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("text", str(text_file))
    table.add_row("checkpoint", str(checkpoint))
    table.add_row("weights", WEIGHTS_SHOWN[weights])
    table.add_row("loss (nats/char)", f"{score.loss:.4f}")
    table.add_row("bits/char", f"{score.bpc:.4f}")
    table.add_row("perplexity", f"{score.perplexity:.3f}")
    table.add_row("characters scored", f"{score.chars:,}")
    table.add_row("unknown characters dropped", f"{score.unknown_chars:,}")
    out_console().print(table)
