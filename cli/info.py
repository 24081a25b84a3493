"""`numrnn info`: what a checkpoint holds."""

import json
import sys
from pathlib import Path

import click


@click.command("info")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint's metadata as JSON.")
def info(checkpoint, as_json):
    """Show a checkpoint's model, training state and file format.

    \b
    Examples:
      numrnn info shakespeare.safetensors
      numrnn info shakespeare.safetensors --json | python -m json.tool
    """
    from numrnn.checkpoint import load_checkpoint
    from numrnn.tasks import TASKS

    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    if as_json:
        summary = {key: value for key, value in meta.items() if key not in ("rng", "tensors")}
        summary["parameters"] = loaded.parameter_count
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.table import Table

    from numrnn_cli.console import out_console

    config = loaded.model_config
    progress = meta.get("progress", {})
    train = meta.get("train", {})
    best = progress.get("best_val_loss")
    table = Table(title=str(checkpoint), title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("task", f"{loaded.task}: {TASKS[loaded.task].what} (use it with {TASKS[loaded.task].commands})"),
        (
            "model",
            f"{config.cell}, {config.layers} x {config.hidden} hidden, "
            + ("bidirectional, " if config.bidirectional else "")
            + (f"embedding {config.embed}" if config.embed else "one-hot input")
            + (f", dropout {config.dropout:g}" if config.dropout else "")
            + (f", label as {config.condition}" if config.condition != "none" else "")
            + (
                f"; decoder {config.layers} x {config.decoder_width}, attention {config.attention}"
                if loaded.task == "translate"
                else ""
            ),
        ),
        ("parameters", f"{loaded.parameter_count:,} ({meta['dtype']})"),
        ("vocabulary", f"{len(loaded.vocab)} characters: {_preview(loaded.vocab.chars)}"),
    ]
    if loaded.target_vocab is not None:
        rows[-1] = ("source vocabulary", rows[-1][1])
        rows.append(
            (
                "target vocabulary",
                f"{len(loaded.target_vocab)} characters: {_preview(loaded.target_vocab.chars)}",
            )
        )
    if loaded.labels is not None:
        rows.append(("labels", f"{len(loaded.labels)}: {', '.join(loaded.labels)}"))
    data = meta.get("data")
    if data:
        split = meta.get("split", {})
        rows.append(
            (
                "data",
                (f"{data['pairs']:,} pairs" if "pairs" in data else f"{data.get('examples', 0):,} examples")
                + f" from {data.get('path', '?')} "
                f"(digest {data.get('digest', '?')})",
            )
        )
        rows.append(
            (
                "split",
                f"{split.get('train', 0):,} training, {split.get('val', 0):,} "
                f"validation, {split.get('test', 0):,} test (seed {train.get('seed')}, "
                f"val {train.get('val_frac')}, test {train.get('test_frac', 0)})",
            )
        )
    decoding = meta.get("translate", {})
    if "max_length" in decoding:
        limits = decoding.get("limits", {})
        left_out = limits.get("filtered_source", 0) + limits.get("filtered_target", 0)
        rows.append(
            (
                "decoding",
                f"sources up to {decoding['max_source_len']} characters, outputs up to "
                f"{decoding['max_length']} (--max-length)"
                + (f"; {left_out:,} pairs left out by the length filters" if left_out else "")
                + (" (columns swapped)" if data and data.get("reverse") else ""),
            )
        )
    unit = "example" if loaded.task == "classify" else "char"
    rows += [
        ("step", f"{progress.get('step', 0):,} (epoch {progress.get('epoch', 0)})"),
        (
            "best validation loss",
            "-"
            if best is None
            else f"{best:.4f} nats/{unit}"
            + (f" ({best / 0.6931471805599453:.4f} bits/char)" if unit == "char" else "")
            + f" at step {progress.get('best_step'):,}"
            + (
                f" (the best greedy chrF, {-progress['best_selection']:.1f})"
                if loaded.task == "translate" and progress.get("best_selection") is not None
                else ""
            ),
        ),
        (
            "training",
            ", ".join(
                f"{key} {train[key]}"
                for key in ("optimizer", "lr", "lr_decay", "batch_size", "seq_len", "grad_clip")
                if key in train and (key != "seq_len" or unit == "char")
            )
            or "-",
        ),
        (
            "format",
            f"numrnn checkpoint v{meta['format_version']}, written by numrnn "
            f"{meta.get('numrnn_version', '?')}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out_console().print(table)


def _preview(chars, limit=60):
    shown = "".join(chars).translate({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})
    return shown if len(shown) <= limit else shown[:limit] + "..."
