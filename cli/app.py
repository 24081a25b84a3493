"""The `numrnn` command group: error handling, exit codes, `--debug`."""

import importlib
import os

import click

from numrnn import __version__
from numrnn_cli.exit_codes import ExitCode

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}

# Each command's module, imported when that command runs (or when `numrnn --help` lists it):
# `numrnn sample` never imports the trainers', classifier's or translator's command modules.
COMMANDS = {
    "train": "numrnn_cli.train:train",
    "sample": "numrnn_cli.sample:sample",
    "eval": "numrnn_cli.evaluate:evaluate",
    "info": "numrnn_cli.info:info",
    "gradcheck": "numrnn_cli.gradcheck:gradcheck",
    "classify": "numrnn_cli.classify:classify",
    "generate": "numrnn_cli.generate:generate",
    "translate": "numrnn_cli.translate:translate",
    "plot": "numrnn_cli.plot:plot",
}


def _debug_wanted(ctx):
    return bool(ctx.find_root().params.get("debug")) or os.environ.get("NUMRNN_DEBUG", "") not in ("", "0")


class NumrnnGroup(click.Group):
    """Turns the library's errors into one `error:` line and an exit code; loads each command
    (``COMMANDS``) at its first use."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            module, _, attribute = COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        from numrnn.errors import NumrnnError

        try:
            return super().invoke(ctx)
        except NumrnnError as exc:
            if _debug_wanted(ctx):
                raise
            from rich.markup import escape

            from numrnn_cli.console import err_console

            # Escaped: a message may hold brackets (pip install 'numrnn[plot]').
            err_console().print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            ctx.exit(ExitCode.ERROR)
        except KeyboardInterrupt:
            if _debug_wanted(ctx):
                raise
            click.echo("interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)


@click.group(cls=NumrnnGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="numrnn")
@click.option("--debug", is_flag=True, help="Show a full traceback on errors (also NUMRNN_DEBUG=1).")
def cli(debug):
    """numrnn: fast character-level recurrent networks (RNN, LSTM, GRU) on numba.

    Train a language model on any UTF-8 text, generate from it, score text with it;
    classify lines of text; write new examples of a label; translate lines of text.
    Exact backpropagation through time, checked against finite differences, with
    PyTorch's weight layout.

    \b
    Examples:
      numrnn train data/shakespeare.txt --max-time 2m -o shakespeare.safetensors
      numrnn sample -c shakespeare.safetensors --prime "ROMEO:" --length 300
      numrnn eval -c shakespeare.best.safetensors data/shakespeare.txt
      numrnn info shakespeare.safetensors
      numrnn classify train ../shared/data/names -o names.safetensors --max-time 2m
      numrnn classify predict -c names.best.safetensors Nakamura Schmidt
      numrnn generate train ../shared/data/names -o names-gen.safetensors
      numrnn generate sample -c names-gen.best.safetensors --label Russian -n 5
      numrnn translate train ../shared/data/eng-fra.txt -o fra.safetensors --max-time 5m
      numrnn translate run -c fra.best.safetensors "I'm cold."
      numrnn plot run.jsonl         # train and validation loss of a --metrics file
      numrnn gradcheck              # every cell's gradients against finite differences

    Exit codes: 0 ok, 1 error, 2 usage error, 3 gradient mismatch, 130 interrupted.
    """


def main():
    """Console-script entry point."""
    cli(prog_name="numrnn")
