"""Quality at equal steps: numrnn against PyTorch, same data, same start, same optimizer.

What it measures. A character-level language model (embedding -> stacked LSTM/GRU/RNN ->
linear head) is trained for the same number of steps twice: once through numrnn's own
``Trainer`` (the product path) and once as the same architecture in PyTorch. Both sides

- read the same corpus (``read_text``, ``Vocab.from_text``, ``split_by_position`` with
  val_frac 0.05) as the same ``batch_size`` contiguous streams, and see the same truncated-BPTT
  batches (``TextStreams.batch_at``) in the same order, the hidden state carried from step to
  step (detached in torch) and reset to zeros at each epoch boundary, as ``Trainer`` does;
- start from the same float32 weights: numrnn's ``Model.init_weights(default_rng(seed))``,
  copied into its PyTorch twin (``twins.CharLM``: ``torch.nn.Embedding`` / ``torch.nn.LSTM``
  (GRU, RNN tanh) / ``torch.nn.Linear``) through ``numrnn.params.to_torch``;
- use Adam (lr 2e-3, torch's defaults otherwise), global-norm gradient clipping at 5.0 and the
  mean cross-entropy over all T*B characters of a batch;
- are scored the same way: the mean loss over the whole validation split read as
  ``batch_size`` streams with carried state (``numrnn.tasks.lm.evaluate`` for numrnn, the same
  stream layout re-implemented for torch).

The table shows validation loss (nats/char), bits/char and train chars/s (B*T / the median
step time after 5 warm-up steps, so numba's compile time is left out) for both, and their
ratios (numrnn / PyTorch). Each side runs in its own spawned process, one after the other;
torch uses 2 threads, numrnn leaves BLAS at its default (all cores).

Run it from the repository root (torch is optional; without it only numrnn's row is shown):

    python benchmarks/quality.py --quick            # a smoke run, well under a minute
    python benchmarks/quality.py                    # LSTM 2x256, embed 64, B32 x T128
    python benchmarks/quality.py --cell gru --steps 200 --json

The corpus defaults to ../shared/data/tinyshakespeare.txt next to the repository; when it is
missing the script says so and exits 0. Nothing is written outside a temporary folder (the
numrnn checkpoint the Trainer saves at the end), apart from numba's usual kernel cache.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

# Siblings beside this script (its folder is on sys.path); harness puts the repository there too.
from harness import DEFAULT_CORPUS, chosen_settings, ratio, run_in_own_process
from machine import BUSY_LOAD, load_average, package_version, run_context
from tables import print_table

LR = 2e-3
GRAD_CLIP = 5.0
VAL_FRAC = 0.05
WARMUP_STEPS = 5
TORCH_THREADS = 2
TARGET_PCT = 2.0
LN2 = math.log(2.0)

# The `numrnn train` defaults; --steps keeps the default run near 5 minutes on 2 cores.
DEFAULTS = dict(cell="lstm", hidden=256, layers=2, embed=64, batch_size=32, seq_len=128, steps=300, seed=0)
QUICK = dict(cell="lstm", hidden=64, layers=1, embed=32, batch_size=16, seq_len=32, steps=60, seed=0)


@dataclass(frozen=True)
class Settings:
    corpus: str
    cell: str
    hidden: int
    layers: int
    embed: int
    batch_size: int
    seq_len: int
    steps: int
    seed: int


# --------------------------------------------------------------------------- shared set-up


def load_splits(settings):
    """(vocab, train ids, validation ids), as `numrnn train` splits them."""
    from numrnn.data import Vocab, read_text, split_by_position

    text = read_text(settings.corpus)
    vocab = Vocab.from_text(text)
    ids, _ = vocab.encode(text)
    train_ids, val_ids = split_by_position(ids, VAL_FRAC)
    return vocab, train_ids, val_ids


def build_numrnn_model(settings, vocab_size):
    """numrnn's model with its own initialisation drawn from default_rng(seed), float32."""
    import numpy as np

    from numrnn.model import Model, ModelConfig

    config = ModelConfig(
        cell=settings.cell,
        vocab_size=vocab_size,
        hidden=settings.hidden,
        layers=settings.layers,
        embed=settings.embed,
    )
    return Model(config, dtype=np.float32).init_weights(np.random.default_rng(settings.seed))


def steady_chars_per_s(step_times, chars_per_step):
    """B*T over the median step time after the warm-up steps (compilation, first touches)."""
    import numpy as np

    steady = step_times[WARMUP_STEPS:] if len(step_times) > WARMUP_STEPS else step_times[-1:]
    return chars_per_step / float(np.median(steady))


def side_result(name, val_loss, val_chars, step_times, losses, settings, extra):
    chars_per_step = settings.batch_size * settings.seq_len
    return dict(
        name=name,
        val_loss=val_loss,
        val_bpc=val_loss / LN2,
        val_chars=val_chars,
        train_chars_per_s=steady_chars_per_s(step_times, chars_per_step),
        train_wall_s=float(sum(step_times)),
        warmup_wall_s=float(sum(step_times[:WARMUP_STEPS])),
        first_loss=losses[0],
        last_loss=losses[-1],
        steps=len(losses),
        **extra,
    )


# --------------------------------------------------------------------------- numrnn side


def run_numrnn(settings):
    """Train through numrnn.trainer.Trainer, then score with numrnn.tasks.lm.evaluate."""
    from numrnn.tasks.lm import LanguageModelTask, evaluate
    from numrnn.trainer import StepDone, TrainConfig, Trainer, TrainStarted

    vocab, train_ids, val_ids = load_splits(settings)
    model = build_numrnn_model(settings, len(vocab))
    config = TrainConfig(
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        optimizer="adam",
        lr=LR,
        grad_clip=GRAD_CLIP,
        max_steps=settings.steps,
        max_epochs=0,
        eval_every=0,
        checkpoint_every=0,
        log_every=max(settings.steps, 1),
        val_frac=VAL_FRAC,
        seed=settings.seed,
    )
    arrivals, losses = [], []

    def on_event(event):
        if isinstance(event, (TrainStarted, StepDone)):
            arrivals.append(time.perf_counter())
        if isinstance(event, StepDone):
            losses.append(event.loss)

    with tempfile.TemporaryDirectory(prefix="numrnn-quality-") as tmp:
        # val_ids=None: the trainer would score the split at the end with the same evaluate();
        # it is called once below instead. Training itself never reads the validation ids.
        task = LanguageModelTask(
            model, vocab, train_ids, None, batch_size=settings.batch_size, seq_len=settings.seq_len
        )
        trainer = Trainer(task, config, Path(tmp) / "quality.safetensors", on_event=on_event)
        trainer.run()
    step_times = [b - a for a, b in pairwise(arrivals)]
    val_loss, val_chars = evaluate(model, val_ids, batch_size=settings.batch_size, seq_len=settings.seq_len)
    return side_result(
        "numrnn",
        float(val_loss),
        int(val_chars),
        step_times,
        losses,
        settings,
        dict(
            corpus_chars=int(len(train_ids) + len(val_ids)),
            train_chars=len(train_ids),
            vocab_size=len(vocab),
            parameters=int(model.layout.size),
        ),
    )


# --------------------------------------------------------------------------- PyTorch side


def torch_evaluate(torch, model, ids, settings):
    """The stream layout of numrnn.tasks.lm.evaluate: (mean loss, characters scored)."""
    import numpy as np

    seq_len = settings.seq_len
    batch = max(1, min(settings.batch_size, (len(ids) - 1) // max(seq_len, 1)))
    length = len(ids) // batch
    streams = np.asarray(ids, dtype=np.int64)[: batch * length].reshape(batch, length)
    state = model.zero_state(batch)
    total, count = 0.0, 0
    with torch.no_grad():
        for pos in range(0, length - 1, seq_len):
            T = min(seq_len, length - 1 - pos)
            tokens = torch.from_numpy(np.ascontiguousarray(streams[:, pos : pos + T].T))
            targets = torch.from_numpy(np.ascontiguousarray(streams[:, pos + 1 : pos + T + 1].T))
            logits, state = model(tokens, state)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
            )
            total += float(loss) * T * batch
            count += T * batch
    return total / count, count


def run_torch(settings):
    """The same run in PyTorch: Trainer's batches, state carrying and epoch resets."""
    import torch
    from twins import CharLM

    from numrnn.data import TextStreams

    torch.set_num_threads(TORCH_THREADS)
    vocab, train_ids, val_ids = load_splits(settings)
    model = CharLM.from_numrnn(build_numrnn_model(settings, len(vocab)))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    streams = TextStreams(train_ids, settings.batch_size, settings.seq_len)
    state = model.zero_state(settings.batch_size)
    pos, step_times, losses = 0, [], []
    model.train()
    for _ in range(settings.steps):
        started = time.perf_counter()
        tokens, targets = streams.batch_at(pos)
        loss, state = model.train_step(optimizer, tokens, targets, state, GRAD_CLIP)
        losses.append(loss)
        pos += settings.seq_len
        if pos + settings.seq_len >= streams.stream_length:  # Trainer._next_epoch
            pos, state = 0, model.zero_state(settings.batch_size)
        step_times.append(time.perf_counter() - started)
    model.eval()
    val_loss, val_chars = torch_evaluate(torch, model, val_ids, settings)
    return side_result(
        "PyTorch",
        float(val_loss),
        int(val_chars),
        step_times,
        losses,
        settings,
        dict(threads=torch.get_num_threads()),
    )


# --------------------------------------------------------------------------- orchestration


def summarise(settings, numrnn_row, torch_row, torch_ver, walls, load_at_start):
    summary = dict(
        settings=asdict(settings),
        **run_context(torch_ver),
        load_at_start=load_at_start,
        warmup_steps=WARMUP_STEPS,
        numrnn=numrnn_row,
        torch=torch_row,
        wall_s=walls,
    )
    if torch_row is not None:
        pct = 100.0 * (numrnn_row["val_loss"] / torch_row["val_loss"] - 1.0)
        summary.update(
            val_loss_ratio=ratio(numrnn_row["val_loss"], torch_row["val_loss"]),
            chars_per_s_ratio=ratio(numrnn_row["train_chars_per_s"], torch_row["train_chars_per_s"]),
            val_loss_pct=pct,
            meets_target=pct <= TARGET_PCT,
        )
    return summary


# --------------------------------------------------------------------------- output


def header_line(summary):
    s, n = summary["settings"], summary["numrnn"]
    embed = f"embed {s['embed']}" if s["embed"] else "one-hot"
    torch_part = (
        f"torch {summary['torch_version']} ({TORCH_THREADS} threads)"
        if summary["torch_version"]
        else "torch not installed"
    )
    load = summary["load_at_start"]
    load_part = f", load {load:.2f} at start" if load is not None else ""
    return (
        f"{summary['cpu']} ({summary['cpus']} CPUs{load_part}) | "
        f"{s['cell']} {s['layers']}x{s['hidden']}, {embed}, "
        f"B{s['batch_size']} x T{s['seq_len']}, {s['steps']} steps, Adam {LR:g}, "
        f"clip {GRAD_CLIP:g}, seed {s['seed']} | numrnn {summary['numrnn_version']}, "
        f"{torch_part} | {Path(s['corpus']).name}: "
        f"{n['corpus_chars']:,} chars, vocab {n['vocab_size']}, val {n['val_chars']:,} "
        f"scored, {n['parameters']:,} parameters"
    )


def table_rows(summary):
    def row(side):
        return [
            side["name"],
            f"{side['val_loss']:.4f}",
            f"{side['val_bpc']:.4f}",
            f"{side['train_chars_per_s']:,.0f}",
        ]

    rows = [row(summary["numrnn"])]
    if summary["torch"] is not None:
        rows.append(row(summary["torch"]))
        bpc_ratio = ratio(summary["numrnn"]["val_bpc"], summary["torch"]["val_bpc"])
        rows.append(
            [
                "ratio (numrnn/PyTorch)",
                f"{summary['val_loss_ratio']:.4f}",
                f"{bpc_ratio:.4f}",
                f"{summary['chars_per_s_ratio']:.3f}",
            ]
        )
    return rows


COLUMNS = ["", "val loss (nats/char)", "val bits/char", "train chars/s"]


def notes(summary):
    n, t, w = summary["numrnn"], summary["torch"], summary["wall_s"]
    lines = []
    if t is None:
        lines.append("PyTorch rows skipped: torch is not installed (pip install torch).")
    else:
        pct = summary["val_loss_pct"]
        verdict = "meets" if summary["meets_target"] else "misses"
        lines.append(
            f"numrnn's validation loss is within {pct:+.2f}% of PyTorch's "
            f"(negative = better); this {verdict} the {TARGET_PCT:g}% target."
        )
        lines.append(
            f"first-step train loss (same weights, same batch): "
            f"numrnn {n['first_loss']:.6f}, PyTorch {t['first_loss']:.6f}; "
            f"last step: numrnn {n['last_loss']:.4f}, PyTorch {t['last_loss']:.4f}."
        )
    load = summary["load_at_start"]
    if load is not None and load > BUSY_LOAD:
        lines.append(
            f"note: the machine was busy (load {load:.2f}) when this started; other "
            f"work skews the chars/s columns (the losses are unaffected)."
        )
    walls = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in w.items())
    lines.append(
        f"chars/s: {summary['settings']['batch_size'] * summary['settings']['seq_len']:,} "
        f"chars per step / median step time after {WARMUP_STEPS} warm-up steps. "
        f"Process wall time: {walls}."
    )
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Validation loss and train speed of numrnn vs PyTorch at equal steps.",
        epilog="Example: python benchmarks/quality.py --quick --json",
    )
    parser.add_argument(
        "--corpus", default=str(DEFAULT_CORPUS), help="UTF-8 text to train on (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, help=f"training steps (default {DEFAULTS['steps']})")
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), help="recurrent cell (lstm)")
    parser.add_argument("--hidden", type=int, help="hidden units per layer (256)")
    parser.add_argument("--layers", type=int, help="stacked layers (2)")
    parser.add_argument("--embed", type=int, help="embedding width, 0 for one-hot (64)")
    parser.add_argument("--batch-size", type=int, help="parallel streams (32)")
    parser.add_argument("--seq-len", type=int, help="characters per step and stream (128)")
    parser.add_argument("--seed", type=int, help="seed of the initial weights (0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: lstm 1x64, embed 32, B16 x T32, 60 steps (options given explicitly still win)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args(argv)


def settings_from(args):
    chosen = chosen_settings(
        args,
        DEFAULTS,
        QUICK,
        at_least_one=("steps", "hidden", "layers", "batch_size", "seq_len"),
        at_least_zero=("embed",),
    )
    return Settings(corpus=str(Path(args.corpus).resolve()), **chosen)


def main(argv=None):
    args = parse_args(argv)
    settings = settings_from(args)
    if not Path(settings.corpus).is_file():
        print(f"skipped: {settings.corpus} not found; pass --corpus PATH")
        return 0
    torch_ver = package_version("torch")
    load_at_start = load_average()
    walls = {}
    numrnn_row, walls["numrnn"] = run_in_own_process(run_numrnn, settings)
    torch_row = None
    if torch_ver is not None:
        torch_row, walls["PyTorch"] = run_in_own_process(run_torch, settings)
    summary = summarise(settings, numrnn_row, torch_row, torch_ver, walls, load_at_start)
    title = header_line(summary)
    print(title)
    print_table(COLUMNS, table_rows(summary), f"validation loss after {settings.steps} steps", width=100)
    for line in notes(summary):
        print(line)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
