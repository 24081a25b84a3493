"""Click parameter types shared by the commands."""

import re

import click

from numrnn.configs import DEVICES
from numrnn_cli.console import resolve_device

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A span of time: 90s, 10m, 2h, 1h30m, or plain seconds (45)."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
                seconds = float(text)
            elif re.fullmatch(r"([0-9]+(\.[0-9]+)?[smhd])+", text):
                seconds = sum(
                    float(number) * _UNITS[unit]
                    for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)([smhd])", text)
                )
            else:
                self.fail(f"{value!r} is not a duration; write e.g. 90s, 10m, 2h or 1h30m", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return seconds


def format_duration(seconds):
    """1h02m03s, 4m05s, 12.3s."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def draw_options(*, temperature_help):
    """--temperature, --top-k and --top-p: how a sampling command shapes each draw."""
    specs = [
        click.option(
            "--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, help=temperature_help
        ),
        click.option(
            "--top-k",
            type=click.IntRange(min=0),
            default=0,
            help="Draw only from the K most probable characters; 0: off.",
        ),
        click.option(
            "--top-p",
            type=click.FloatRange(0, 1, min_open=True),
            default=1.0,
            help="Draw only from the most probable characters whose probabilities sum to P; 1: off.",
        ),
    ]

    def apply(function):
        for spec in reversed(specs):
            function = spec(function)
        return function

    return apply


DEVICE_HELP = (
    "cpu, or cuda (an NVIDIA GPU; needs pip install 'numrnn[cuda]'); auto takes the GPU when "
    "one is usable, else the CPU."
)

device_option = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    callback=resolve_device,
    help=f"Where to run: {DEVICE_HELP}",
)


# numrnn.sampling.WEIGHT_FORMATS, spelled out here so that the CLI loads no numpy to parse.
WEIGHT_FORMATS = ("float32", "bf16", "int8")


def weights_option(*, help):
    """--weights: the weights batch-1 generation reads (float32 as trained, or converted)."""
    return click.option(
        "--weights",
        type=click.Choice(WEIGHT_FORMATS),
        default="float32",
        help=help,
    )
