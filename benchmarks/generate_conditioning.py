"""How the label should enter a conditioned generator: validation loss at equal steps.

What it measures. A label-conditioned character generator (``numrnn generate train``'s model:
embedding -> recurrent stack -> head, start and end tokens) is trained through numrnn's own
``Trainer`` on the names data once per way of conditioning (``ModelConfig.condition``):

- ``state``: a learnt initial state per label (``cond.h0``, and ``cond.c0`` for the LSTM);
- ``input``: a learnt per-label row added to layer 0's gate pre-activations at every step;
- ``both``: the two together;
- ``none``: no label at all (the same model reading no label), the baseline that shows what
  the label is worth.

Every run of one seed sees the same split, the same batches in the same order (per (seed,
epoch)) and the same initial weights for every layer they share (the conditioning tables
are the last entries of the parameter buffer, drawn after the rest). The table shows the
validation loss per character (nats, the end token counted as a character) and bits/char
after --steps updates, averaged over --seeds, with the spread between seeds; the best
validation loss of each run (evaluated every --eval-every steps), averaged; and the train
chars/s (characters of the batches / training time, compiles excluded by a warm-up run).
The defaults are `numrnn generate train`'s model (LSTM 1x256, embed 32, batch 64, Adam 1e-3).

Run it from the repository root:

    python benchmarks/generate_conditioning.py --quick      # a smoke run, under a minute
    python benchmarks/generate_conditioning.py              # LSTM 1x256, 4000 steps, 3 seeds
    python benchmarks/generate_conditioning.py --cell gru --lr 2e-3 --steps 2000 --seeds 0 1

The data defaults to ../shared/data/names next to the repository; when it is missing the
script says so and exits 0. Nothing is written outside a temporary folder.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Siblings beside this script (its folder is on sys.path); the repository goes there too.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tables import print_table  # noqa: E402

from numrnn.data import read_labelled, stratified_split  # noqa: E402
from numrnn.model import Model, ModelConfig  # noqa: E402
from numrnn.tasks import generate  # noqa: E402
from numrnn.trainer import LN2, StepReport, TrainConfig, Trainer  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "names"
MODES = ("none", "state", "input", "both")
VAL_FRAC = 0.1


class _NoLabel(Model):
    """The unconditioned baseline: the same model, reading no label."""

    def loss(self, *args, labels=None, **kwargs):
        return super().loss(*args, **kwargs)

    def loss_and_grad(self, *args, labels=None, **kwargs):
        return super().loss_and_grad(*args, **kwargs)


def run(data, split, mode, seed, args):
    train_texts = [data.texts[i] for i in split[0]]
    vocab = generate.build_vocab(train_texts)
    config = ModelConfig(
        cell=args.cell,
        vocab_size=len(vocab),
        hidden=args.hidden,
        layers=args.layers,
        embed=args.embed,
        dropout=args.dropout,
        output_size=generate.output_size(vocab),
        condition=mode,
        condition_classes=0 if mode == "none" else len(data.label_names),
    )
    rng = np.random.default_rng(seed)
    model = (_NoLabel if mode == "none" else Model)(config).init_weights(rng)
    task = generate.GenerateTask(model, vocab, data, split, batch_size=args.batch_size, seed=seed)
    train = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.steps,
        max_epochs=0,
        eval_every=args.eval_every,
        checkpoint_every=0,
        log_every=args.steps,
        seed=seed,
    )
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(
            task,
            train,
            Path(folder) / "run.safetensors",
            rng=rng,
            on_event=lambda e: reports.append(e) if isinstance(e, StepReport) else None,
        )
        started = time.perf_counter()
        result = trainer.run()
        wall = time.perf_counter() - started
    return {
        "val": result.last_val_loss,
        "best": result.best_val_loss,
        "chars_per_s": reports[-1].items_per_s,
        "params": model.layout.size,
        "wall": wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--eval-every",
        type=int,
        default=500,
        help="also evaluate every this many steps (the best column); 0: at the end",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--quick", action="store_true", help="100 steps, one seed, hidden 64")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.hidden = 100, [0], 64
    if not args.data.exists():
        print(f"{args.data} is not there; give a folder of <label>.txt files with --data")
        return 0
    data = read_labelled(args.data)
    warm = argparse.Namespace(**{**vars(args), "steps": 3})
    for mode in args.modes:  # compiles every kernel each run calls (and warms the caches)
        run(data, stratified_split(data.labels, VAL_FRAC, 0.0, 0), mode, 0, warm)
    results = {mode: [] for mode in args.modes}
    for seed in args.seeds:
        split = stratified_split(data.labels, VAL_FRAC, 0.0, seed)
        for mode in args.modes:
            results[mode].append(run(data, split, mode, seed, args))
            print(
                f"seed {seed} {mode:>5}: val {results[mode][-1]['val']:.4f} best "
                f"{results[mode][-1]['best']:.4f}",
                file=sys.stderr,
            )
    baseline = np.mean([r["val"] for r in results["none"]]) if "none" in results else None
    rows = []
    for mode, runs in results.items():
        vals = np.array([r["val"] for r in runs])
        rows.append(
            [
                mode,
                f"{runs[0]['params']:,}",
                f"{vals.mean():.4f}",
                f"{vals.max() - vals.min():.4f}" if len(vals) > 1 else "-",
                f"{vals.mean() / LN2:.4f}",
                "-" if baseline is None else f"{vals.mean() - baseline:+.4f}",
                " ".join(f"{v:.4f}" for v in vals),
                f"{np.mean([r['best'] for r in runs]):.4f}",
                f"{np.mean([r['chars_per_s'] for r in runs]):,.0f}",
            ]
        )
    title = (
        f"{args.cell} {args.layers}x{args.hidden}, embed {args.embed}, dropout {args.dropout:g}, "
        f"batch {args.batch_size}, "
        f"Adam {args.lr:g}, {args.steps} steps, seeds {' '.join(map(str, args.seeds))}: "
        f"validation loss per character on {args.data.name}"
    )
    print_table(
        [
            "condition",
            "params",
            "val nats/char\n(mean)",
            "spread\n(max-min)",
            "bits/char",
            "vs none",
            "per seed",
            "best val\n(mean)",
            "train chars/s",
        ],
        rows,
        title,
        width=130,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
