"""Names classification: numrnn against PyTorch at equal steps, then numrnn for a time budget.

    python benchmarks/classify.py --quick              # a smoke run, about a minute
    python benchmarks/classify.py                      # GRU 128, 3 epochs x 3 seeds, then 120 s twice
    python benchmarks/classify.py --steps 500 --seeds 1 --time 60 --json
    python benchmarks/classify.py --torch-time         # PyTorch also trains for --time seconds

What it measures. A surname classifier (one-hot characters -> 1-layer GRU 128 -> the state after
each name's last character -> Linear to the 20 languages) on ../shared/data/names/, split by
label 80/10/10 with seed 0 (``numrnn.data.stratified_split``); the vocabulary is the training
names' characters, as `numrnn classify train` makes it.

1. Equal steps (default 3 epochs), once per seed (``--seeds``, default 3: seed s draws the
   initial weights from ``default_rng(s)`` and the batch order from ``batch_order`` with
   ``default_rng([s, epoch])``, as ``ClassifyTask`` does). Both sides
   - start from the same float32 weights: numrnn's ``Classifier.init_weights``, copied into its
     PyTorch twin (``twins.CharClassifier``: one-hot -> ``torch.nn.GRU`` over
     ``pack_padded_sequence(enforce_sorted=False)`` -> the final state -> ``torch.nn.Linear``);
   - see the same batches in the same order: 64 names of similar length, right-padded
     (``EncodedTexts.batch``), each batch as long as its longest name (T about 4 to 26);
   - use Adam (lr 1e-3, torch's defaults otherwise), global-norm clipping at 5 and the mean
     cross-entropy of the batch.
   numrnn trains through its own ``Trainer`` on a ``ClassifyTask`` (the product path); PyTorch
   in a plain loop. Both are scored the same way: validation loss (nats per name) and test
   accuracy and macro-F1 (``numrnn.metrics.classification_report``) of the final weights.
   Train names/s = 64 / the median step time after the warm-up steps (numba's compile time and
   first touches left out). With several seeds the table shows mean +- standard deviation over
   seeds; "within noise" means the mean paired difference (numrnn - PyTorch) is at most twice
   the larger seed-to-seed standard deviation of the two sides.
2. numrnn alone for ``--time`` seconds (default 120), twice: plain and with --balance (class
   weights n / (C * n_c), in the training and validation losses): ``Trainer`` with a
   ``ClassifyTask``, validation every half epoch, the best-validation checkpoint kept as
   `numrnn classify train` keeps it (FILE.best.safetensors), then its test split scored without
   weights, as `numrnn classify eval` scores it. The final weights' test scores are shown too.
   ANCHORS.md's PyTorch figure for 120 s (accuracy 0.747, macro-F1 0.451) is the reference;
   --torch-time trains the twin for the same time, evaluating at the same cadence.

Every measurement runs in its own spawned process (``harness.run_in_own_process``), one after the
other. Threads are left as a user gets them: numrnn's BLAS and numba at their defaults (all
cores), torch at its default (``torch.get_num_threads()``); --threads N sets numrnn's the way
`numrnn classify train --threads N` does. Nothing is written outside a temporary folder apart
from numba's usual kernel cache. Without torch only numrnn's rows are shown; without the data
the script says so and exits 0.
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Siblings beside this script (its folder is on sys.path); harness puts the repository there too.
from harness import REPO_ROOT, chosen_settings, ratio, run_in_own_process
from machine import BUSY_LOAD, load_average, package_version, run_context
from tables import print_table

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "names"
LR = 1e-3
GRAD_CLIP = 5.0
VAL_FRAC = 0.1
TEST_FRAC = 0.1
SPLIT_SEED = 0
WARMUP_STEPS = 10
EVAL_BATCH = 512
SPEED_TARGET = 3.0  # numrnn names/s over PyTorch's
ANCHOR = dict(accuracy=0.747, macro_f1=0.451, seconds=120)  # ANCHORS.md, PyTorch 2 threads

DEFAULTS = dict(cell="gru", hidden=128, layers=1, embed=0, batch_size=64, epochs=3, seeds=3, time=120.0)
QUICK = dict(cell="gru", hidden=32, layers=1, embed=0, batch_size=64, epochs=0.2, seeds=1, time=8.0)


@dataclass(frozen=True)
class Settings:
    data: str
    cell: str
    hidden: int
    layers: int
    embed: int
    batch_size: int
    epochs: float  # equal-steps run length when steps is 0
    steps: int  # 0: epochs * steps per epoch
    seeds: int
    time: float  # seconds of the numrnn-alone runs; 0 skips them
    threads: int  # numrnn's BLAS/numba threads; 0: the default
    seed: int = 0  # this run's seed (set per child)
    balance: bool = False


# --------------------------------------------------------------------------- shared set-up


def load_data(settings):
    """(data, (train, val, test) rows, vocab, encoded texts), as `numrnn classify train` reads
    and splits them."""
    from numrnn.data import Vocab, read_labelled, stratified_split
    from numrnn.tasks.examples import EncodedTexts

    data = read_labelled(settings.data)
    split = stratified_split(data.labels, VAL_FRAC, TEST_FRAC, SPLIT_SEED)
    vocab = Vocab.from_text("".join(data.texts[i] for i in split[0]))
    return data, split, vocab, EncodedTexts(vocab, data.texts, data.labels)


def new_classifier(settings, vocab_size, classes):
    """numrnn's classifier with its own initialisation from default_rng(seed), float32."""
    import numpy as np

    from numrnn.model import ModelConfig
    from numrnn.tasks.classify import Classifier

    config = ModelConfig(
        cell=settings.cell,
        vocab_size=vocab_size,
        hidden=settings.hidden,
        layers=settings.layers,
        embed=settings.embed,
        output_size=classes,
    )
    return Classifier(config, dtype=np.float32).init_weights(np.random.default_rng(settings.seed))


def steps_per_epoch(train_rows, batch_size):
    return -(-len(train_rows) // batch_size)


def total_steps(settings, train_rows):
    if settings.steps:
        return settings.steps
    return max(1, round(settings.epochs * steps_per_epoch(train_rows, settings.batch_size)))


def epoch_batches(encoded, train_rows, batch_size, seed, epoch):
    """One epoch's batches (arrays of example rows), exactly as ClassifyTask draws them."""
    import numpy as np

    from numrnn.tasks.examples import batch_order

    rng = np.random.default_rng([seed, epoch])
    return [train_rows[b] for b in batch_order(encoded.lengths[train_rows], batch_size, rng)]


def report(data, rows, predictions):
    from numrnn.metrics import classification_report

    r = classification_report(data.labels[rows], predictions, data.label_names)
    return dict(accuracy=r["accuracy"], macro_f1=r["macro_f1"])


def numrnn_scores(model, data, encoded, split):
    """Validation loss, test loss, accuracy and macro-F1 as `numrnn classify eval` scores them."""
    from numrnn.tasks.classify import score

    val_loss, _, _ = score(model, encoded, split[1])
    test_loss, probs, rows = score(model, encoded, split[2])
    return dict(
        val_loss=float(val_loss),
        test_loss=float(test_loss),
        test_names=len(rows),
        **report(data, rows, probs.argmax(axis=1)),
    )


def step_rate(step_times, batch_size):
    """(names/s from the median step time after the warm-up, names/s over all those steps)."""
    steady = step_times[WARMUP_STEPS:] if len(step_times) > WARMUP_STEPS else step_times[-1:]
    return batch_size / statistics.median(steady), batch_size * len(steady) / sum(steady)


class StepClock:
    """Trainer events -> step times (between StepDone arrivals) and losses."""

    def __init__(self):
        self.arrivals, self.losses, self.evals = [], [], []

    def __call__(self, event):
        from numrnn.trainer import EvalReport, StepDone, TrainStarted

        if isinstance(event, (TrainStarted, StepDone)):
            self.arrivals.append(time.perf_counter())
        if isinstance(event, StepDone):
            self.losses.append(event.loss)
        if isinstance(event, EvalReport):
            self.evals.append(dict(step=event.step, val_loss=event.val_loss, **event.metrics))

    @property
    def step_times(self):
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


def train_numrnn(settings, model, vocab, data, split, *, max_steps=0, max_time=0.0, eval_every=0, folder):
    """numrnn's product path: Trainer on a ClassifyTask. Returns (trainer result, clock, task)."""
    from numrnn.tasks.classify import ClassifyTask
    from numrnn.trainer import TrainConfig, Trainer

    config = TrainConfig(
        batch_size=settings.batch_size,
        optimizer="adam",
        lr=LR,
        grad_clip=GRAD_CLIP,
        max_steps=max_steps,
        max_epochs=0,
        max_time=max_time,
        eval_every=eval_every,
        checkpoint_every=0,
        log_every=1_000_000,
        val_frac=VAL_FRAC,
        test_frac=TEST_FRAC,
        seed=settings.seed,
    )
    task = ClassifyTask(
        model,
        vocab,
        data,
        split,
        batch_size=settings.batch_size,
        seed=settings.seed,
        balance=settings.balance,
        split_meta={"path": settings.data, "val_frac": VAL_FRAC, "test_frac": TEST_FRAC, "seed": SPLIT_SEED},
    )
    clock = StepClock()
    trainer = Trainer(task, config, Path(folder) / "names.safetensors", on_event=clock)
    return trainer.run(), clock, task


def threads_env(settings):
    """numrnn's thread variables, set as `numrnn classify train --threads N` sets them."""
    if not settings.threads:
        return None
    value = str(settings.threads)
    return {
        name: value
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    }


# --------------------------------------------------------------------------- equal steps


def run_numrnn_steps(settings):
    """numrnn for the equal-steps comparison, through Trainer (no evaluation during training)."""
    import numba

    data, split, vocab, encoded = load_data(settings)
    model = new_classifier(settings, len(vocab), len(data.label_names))
    steps = total_steps(settings, split[0])
    with tempfile.TemporaryDirectory(prefix="numrnn-classify-") as tmp:
        # The trainer scores the validation split once at the end (eval_every 0); the scores
        # below are computed again the same way as PyTorch's.
        _, clock, _ = train_numrnn(settings, model, vocab, data, split, max_steps=steps, folder=tmp)
    times = clock.step_times
    median_rate, mean_rate = step_rate(times, settings.batch_size)
    return dict(
        name="numrnn",
        seed=settings.seed,
        steps=len(clock.losses),
        names_per_s=median_rate,
        names_per_s_mean=mean_rate,
        warmup_s=float(sum(times[:WARMUP_STEPS])),
        train_s=float(sum(times)),
        first_loss=clock.losses[0],
        last_loss=clock.losses[-1],
        threads=numba.get_num_threads(),
        blas_threads=blas_threads(),
        parameters=int(model.layout.size),
        vocab_size=len(vocab),
        split=[len(s) for s in split],
        classes=len(data.label_names),
        **numrnn_scores(model, data, encoded, split),
    )


def blas_threads():
    """OpenBLAS's thread setting as this process got it: the variable's value, or "default"
    (OpenBLAS then uses every core)."""
    return os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"


def torch_scores(torch, twin, data, encoded, split):
    """The same scores for the twin: rows sorted by length, EVAL_BATCH names per call."""
    import numpy as np

    def run(rows):
        rows = np.asarray(rows)
        rows = rows[encoded.lengths[rows] > 0]
        rows = rows[np.argsort(encoded.lengths[rows], kind="stable")]
        total, predictions = 0.0, np.zeros(len(rows), np.int64)
        with torch.no_grad():
            for start in range(0, len(rows), EVAL_BATCH):
                part = rows[start : start + EVAL_BATCH]
                tokens, targets, lengths = encoded.batch(part)
                logits, _ = twin(torch.from_numpy(tokens), lengths)
                total += float(
                    torch.nn.functional.cross_entropy(
                        logits.double(), torch.from_numpy(targets), reduction="sum"
                    )
                )
                predictions[start : start + len(part)] = logits.argmax(dim=1).numpy()
        return total / max(len(rows), 1), predictions, rows

    val_loss, _, _ = run(split[1])
    test_loss, predictions, rows = run(split[2])
    return dict(
        val_loss=val_loss, test_loss=test_loss, test_names=len(rows), **report(data, rows, predictions)
    )


def torch_setup(settings):
    import torch
    from twins import CharClassifier

    data, split, vocab, encoded = load_data(settings)
    twin = CharClassifier.from_numrnn(new_classifier(settings, len(vocab), len(data.label_names)))
    optimizer = torch.optim.Adam(twin.parameters(), lr=LR)
    weights = None
    if settings.balance:
        from numrnn.tasks.classify import balanced_weights

        weights = torch.from_numpy(balanced_weights(data.labels[split[0]], len(data.label_names))).float()
    return torch, data, split, encoded, twin, optimizer, weights


def run_torch_steps(settings):
    """The same steps in PyTorch, on the batches ClassifyTask draws, in its order."""
    torch, data, split, encoded, twin, optimizer, weights = torch_setup(settings)
    steps = total_steps(settings, split[0])
    per_epoch = steps_per_epoch(split[0], settings.batch_size)
    step_times, losses, batches = [], [], None
    twin.train()
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            batches = epoch_batches(encoded, split[0], settings.batch_size, settings.seed, epoch)
        started = time.perf_counter()
        tokens, targets, lengths = encoded.batch(batches[position])
        losses.append(twin.train_step(optimizer, tokens, targets, lengths, GRAD_CLIP, weights))
        step_times.append(time.perf_counter() - started)
    twin.eval()
    median_rate, mean_rate = step_rate(step_times, settings.batch_size)
    return dict(
        name="PyTorch",
        seed=settings.seed,
        steps=len(losses),
        names_per_s=median_rate,
        names_per_s_mean=mean_rate,
        warmup_s=float(sum(step_times[:WARMUP_STEPS])),
        train_s=float(sum(step_times)),
        first_loss=losses[0],
        last_loss=losses[-1],
        threads=torch.get_num_threads(),
        **torch_scores(torch, twin, data, encoded, split),
    )


# --------------------------------------------------------------------------- for a time budget


def run_numrnn_timed(settings):
    """numrnn for settings.time seconds, validation every half epoch; the best-validation
    checkpoint and the final weights scored on the test split."""
    from numrnn.checkpoint import load_checkpoint

    data, split, vocab, encoded = load_data(settings)
    model = new_classifier(settings, len(vocab), len(data.label_names))
    eval_every = max(1, steps_per_epoch(split[0], settings.batch_size) // 2)
    with tempfile.TemporaryDirectory(prefix="numrnn-classify-") as tmp:
        result, clock, _ = train_numrnn(
            settings, model, vocab, data, split, max_time=settings.time, eval_every=eval_every, folder=tmp
        )
        final = numrnn_scores(model, data, encoded, split)
        best = final
        if result.best_out is not None:
            best = numrnn_scores(load_checkpoint(result.best_out).build_model(), data, encoded, split)
    best_eval = min(clock.evals, key=lambda e: e["val_loss"]) if clock.evals else dict(step=result.step)
    return timed_result(
        "numrnn", settings, result.elapsed_s, clock.step_times, clock.evals, best_eval, best, final, split
    )


def run_torch_timed(settings):
    """The twin for settings.time seconds at the same cadence, the best-validation weights kept
    (validation loss weighted like numrnn's when balanced)."""
    import copy

    torch, data, split, encoded, twin, optimizer, weights = torch_setup(settings)
    per_epoch = steps_per_epoch(split[0], settings.batch_size)
    eval_every = max(1, per_epoch // 2)
    val_rows = split[1][encoded.lengths[split[1]] > 0]
    step_times, evals, best_state, batches, step = [], [], None, None, 0
    twin.train()
    begun = time.perf_counter()
    while time.perf_counter() - begun < settings.time:
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            batches = epoch_batches(encoded, split[0], settings.batch_size, settings.seed, epoch)
        started = time.perf_counter()
        tokens, targets, lengths = encoded.batch(batches[position])
        twin.train_step(optimizer, tokens, targets, lengths, GRAD_CLIP, weights)
        step_times.append(time.perf_counter() - started)
        step += 1
        if step % eval_every == 0:
            twin.eval()
            with torch.no_grad():
                tokens, targets, lengths = encoded.batch(val_rows)
                logits, _ = twin(torch.from_numpy(tokens), lengths)
                val_loss = float(
                    torch.nn.functional.cross_entropy(
                        logits.double(),
                        torch.from_numpy(targets),
                        weight=None if weights is None else weights.double(),
                    )
                )
            twin.train()
            evals.append(dict(step=step, val_loss=val_loss))
            if val_loss <= min(e["val_loss"] for e in evals):
                best_state = copy.deepcopy(twin.state_dict())
    elapsed = time.perf_counter() - begun
    twin.eval()
    final = torch_scores(torch, twin, data, encoded, split)
    if best_state is not None:
        twin.load_state_dict(best_state)
    best = torch_scores(torch, twin, data, encoded, split) if best_state is not None else final
    best_eval = min(evals, key=lambda e: e["val_loss"]) if evals else dict(step=step)
    return timed_result(
        "PyTorch",
        settings,
        elapsed,
        step_times,
        evals,
        best_eval,
        best,
        final,
        split,
        threads=torch.get_num_threads(),
    )


def timed_result(name, settings, elapsed, step_times, evals, best_eval, best, final, split, **extra):
    per_epoch = steps_per_epoch(split[0], settings.batch_size)
    median_rate, mean_rate = step_rate(step_times, settings.batch_size)
    return dict(
        name=name,
        balance=settings.balance,
        seconds=float(elapsed),
        steps=len(step_times),
        epochs=len(step_times) / per_epoch,
        evaluations=len(evals),
        best_step=best_eval["step"],
        best_epoch=best_eval["step"] / per_epoch,
        names_per_s=median_rate,
        names_per_s_mean=mean_rate,
        warmup_s=float(sum(step_times[:WARMUP_STEPS])),
        best=best,
        final=final,
        **extra,
    )


# --------------------------------------------------------------------------- orchestration


def with_load(function, *args):
    """``function(*args)``'s result dict with the 1-minute load average at its start and end
    (the child's own work counts in it: about 1 for numrnn's or torch's 2 threads at work on
    a 2-core machine is this run; well above that is someone else's)."""
    start = load_average()
    result = function(*args)
    result["load"] = [start, load_average()]
    return result


def mean_sd(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


QUALITY = ("accuracy", "macro_f1", "val_loss")


def summarise_steps(numrnn_runs, torch_runs):
    """Mean and SD over seeds of each side, the paired differences and the verdicts."""

    def side(runs):
        out = {key: mean_sd([r[key] for r in runs]) for key in QUALITY + ("test_loss",)}
        out["names_per_s"] = statistics.median([r["names_per_s"] for r in runs])
        out["names_per_s_mean"] = statistics.median([r["names_per_s_mean"] for r in runs])
        return out

    summary = dict(numrnn=side(numrnn_runs))
    if not torch_runs:
        return summary
    summary["torch"] = side(torch_runs)
    # Paired: each seed's two processes ran one after the other, so a load that comes and goes
    # skews a pair less than the two sides' medians taken apart.
    summary["speed_ratios"] = [
        ratio(n["names_per_s"], t["names_per_s"]) for n, t in zip(numrnn_runs, torch_runs)
    ]
    summary["speed_ratio"] = statistics.median(summary["speed_ratios"])
    summary["speed_ratio_mean"] = statistics.median(
        ratio(n["names_per_s_mean"], t["names_per_s_mean"]) for n, t in zip(numrnn_runs, torch_runs)
    )
    summary["meets_speed_target"] = summary["speed_ratio"] >= SPEED_TARGET
    differences = {}
    for key in QUALITY:
        diffs = [n[key] - t[key] for n, t in zip(numrnn_runs, torch_runs)]
        mean, sd = mean_sd(diffs)
        noise = max(summary["numrnn"][key][1], summary["torch"][key][1])
        differences[key] = dict(
            mean=mean,
            sd=sd,
            noise=noise,
            within_noise=(abs(mean) <= 2 * noise) if not math.isnan(noise) else None,
        )
    summary["differences"] = differences
    summary["first_loss_rel"] = max(
        abs(n["first_loss"] / t["first_loss"] - 1.0) for n, t in zip(numrnn_runs, torch_runs)
    )
    return summary


# --------------------------------------------------------------------------- output


def fmt(pair, digits):
    mean, sd = pair
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


STEP_COLUMNS = ["", "test\naccuracy", "test\nmacro-F1", "val loss\n(nats/name)", "train names/s"]


def step_rows(summary):
    def row(name, side):
        return [
            name,
            fmt(side["accuracy"], 3),
            fmt(side["macro_f1"], 3),
            fmt(side["val_loss"], 4),
            f"{side['names_per_s']:,.0f}",
        ]

    rows = [row("numrnn", summary["numrnn"])]
    if "torch" in summary:
        rows.append(row("PyTorch (packed)", summary["torch"]))
        n, t = summary["numrnn"], summary["torch"]
        rows.append(
            ["ratio (numrnn/PyTorch)"]
            + [f"{ratio(n[key][0], t[key][0]):.3f}" for key in QUALITY]
            + [f"{summary['speed_ratio']:.2f}x"]
        )
    return rows


TIMED_COLUMNS = [
    "",
    "steps\n(epochs)",
    "best val\nat epoch",
    "best: test\naccuracy",
    "best: test\nmacro-F1",
    "final: test\naccuracy",
    "final: test\nmacro-F1",
    "train names/s",
]


def timed_rows(timed):
    rows = []
    for r in timed:
        if "error" in r:
            rows.append([r["label"], r["error"], *[""] * 6])
            continue
        rows.append(
            [
                r["label"],
                f"{r['steps']:,} ({r['epochs']:.1f})",
                f"{r['best_epoch']:.1f}",
                f"{r['best']['accuracy']:.3f}",
                f"{r['best']['macro_f1']:.3f}",
                f"{r['final']['accuracy']:.3f}",
                f"{r['final']['macro_f1']:.3f}",
                f"{r['names_per_s']:,.0f}",
            ]
        )
    rows.append(
        [
            f"PyTorch, ANCHORS.md ({ANCHOR['seconds']} s)",
            "",
            "",
            "",
            "",
            f"{ANCHOR['accuracy']:.3f}",
            f"{ANCHOR['macro_f1']:.3f}",
            "",
        ]
    )
    return rows


def header_line(result):
    s, first = result["settings"], result["numrnn_runs"][0]
    torch_part = (
        f"torch {result['torch_version']} ({result['torch_runs'][0]['threads']} threads)"
        if result["torch_runs"]
        else "torch not installed"
    )
    load = result["load_at_start"]
    load_part = f", load {load:.2f} at start" if load is not None else ""
    return (
        f"{result['cpu']} ({result['cpus']} CPUs{load_part}) | {s['cell']} {s['layers']}x"
        f"{s['hidden']}, {'embed ' + str(s['embed']) if s['embed'] else 'one-hot'}, batch "
        f"{s['batch_size']}, Adam {LR:g}, clip {GRAD_CLIP:g} | numrnn "
        f"{result['numrnn_version']} (numba {first['threads']} threads, BLAS threads "
        f"{first['blas_threads']}), {torch_part} | {Path(s['data']).name}: "
        f"{sum(first['split']):,} names, {first['classes']} classes, split "
        f"{'/'.join(f'{n:,}' for n in first['split'])} (seed {SPLIT_SEED}), vocab "
        f"{first['vocab_size']}, {first['parameters']:,} parameters"
    )


def step_notes(result):
    summary, lines = result["steps_summary"], []
    seeds = len(result["numrnn_runs"])
    if "torch" in summary:
        d = summary["differences"]
        parts = []
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("val_loss", "val loss")):
            diff = d[key]
            verdict = (
                "no noise estimate with one seed"
                if diff["within_noise"] is None
                else f"{'within' if diff['within_noise'] else 'OUTSIDE'} noise (seed SD {diff['noise']:.4f})"
            )
            spread = "" if math.isnan(diff["sd"]) else f" ± {diff['sd']:.4f}"
            parts.append(f"{label} {diff['mean']:+.4f}{spread}, {verdict}")
        lines.append(f"numrnn - PyTorch over {seeds} seed(s): " + "; ".join(parts) + ".")
        lines.append(
            f"first-step train loss (same weights, same batch) differs by at most "
            f"{summary['first_loss_rel']:.1e} (relative)."
        )
        verdict = "meets" if summary["meets_speed_target"] else "MISSES"
        each = ", ".join(f"{value:.2f}x" for value in summary["speed_ratios"])
        lines.append(
            f"names/s: numrnn {summary['speed_ratio']:.2f}x PyTorch, the median of the "
            f"seeds' ratios ({each}) by median step; {summary['speed_ratio_mean']:.2f}x "
            f"by total time after warm-up; this {verdict} the {SPEED_TARGET:g}x target."
        )
    else:
        lines.append("PyTorch rows skipped: torch is not installed (pip install torch).")
    per_seed = "; ".join(
        f"seed {n['seed']}: acc {n['accuracy']:.3f}/{t['accuracy']:.3f}, F1 "
        f"{n['macro_f1']:.3f}/{t['macro_f1']:.3f}, names/s {n['names_per_s']:,.0f}/"
        f"{t['names_per_s']:,.0f}, load at the end {n['load'][1]:.2f}/{t['load'][1]:.2f}"
        for n, t in zip(result["numrnn_runs"], result["torch_runs"] or [None] * seeds)
        if t
    )
    if per_seed:
        lines.append(f"per seed (numrnn/PyTorch): {per_seed}.")
    lines.append(
        f"names/s: {result['settings']['batch_size']} names per step / median step time "
        f"after {WARMUP_STEPS} warm-up steps; batches are as long as their longest name."
    )
    return lines


def general_notes(result):
    lines = []
    load, load_end = result["load_at_start"], result["load_at_end"]
    if load is not None:
        busy = load > BUSY_LOAD or (load_end is not None and load_end > BUSY_LOAD + 1.0)
        lines.append(
            f"load average: {load:.2f} at start, {load_end:.2f} at the end"
            + (
                "; note: the machine was busy, other work skews the names/s columns "
                "(the scores are unaffected)."
                if busy
                else "."
            )
        )
    loads = [f"{row['label']} {row['load'][1]:.2f}" for row in result["timed"] if "load" in row]
    if loads:
        lines.append(
            "load average at the end of each timed run: "
            + ", ".join(loads)
            + " (this run's own threads count about 1-2 in it)."
        )
    walls = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["wall_s"].items())
    lines.append(f"Process wall time: {walls}.")
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Names classification: numrnn vs PyTorch at equal steps (accuracy, macro-F1, "
        "val loss, names/s), then numrnn alone for --time seconds.",
        epilog="Example: python benchmarks/classify.py --quick --json",
    )
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="folder of <label>.txt files (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="equal-steps training steps (default: --epochs worth)"
    )
    parser.add_argument(
        "--epochs", type=float, help=f"epochs when --steps is not given ({DEFAULTS['epochs']})"
    )
    parser.add_argument("--seeds", type=int, help=f"equal-steps runs, seeds 0..N-1 ({DEFAULTS['seeds']})")
    parser.add_argument(
        "--time", type=float, help=f"seconds of the numrnn-alone runs, 0 to skip them ({DEFAULTS['time']:g})"
    )
    parser.add_argument(
        "--torch-time", action="store_true", help="also train PyTorch for --time seconds, plain and balanced"
    )
    parser.add_argument("--cell", choices=("gru", "lstm", "rnn"), help="recurrent cell (gru)")
    parser.add_argument("--hidden", type=int, help="hidden units (128)")
    parser.add_argument("--layers", type=int, help="stacked layers (1)")
    parser.add_argument("--embed", type=int, help="embedding width, 0 for one-hot (0)")
    parser.add_argument("--batch-size", type=int, help="names per step (64)")
    parser.add_argument(
        "--balance",
        action="store_true",
        help="equal steps with balanced class weights on both sides (the timed "
        "runs do plain and --balance either way)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="numrnn's BLAS and numba threads, as `numrnn classify train "
        "--threads` (default: theirs, all cores)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: GRU 32, 0.2 epoch, 1 seed, 8 s timed runs (options given explicitly still win)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args(argv)


def settings_from(args):
    chosen = chosen_settings(
        args,
        DEFAULTS,
        QUICK,
        at_least_one=("hidden", "layers", "batch_size", "seeds"),
        at_least_zero=("embed", "time"),
    )
    if args.steps < 0 or chosen["epochs"] <= 0:
        raise SystemExit("error: --steps must be 0 or more, --epochs above 0")
    return Settings(
        data=str(Path(args.data).resolve()),
        steps=args.steps,
        threads=args.threads,
        balance=args.balance,
        **chosen,
    )


def main(argv=None):
    args = parse_args(argv)
    settings = settings_from(args)
    if not Path(settings.data).is_dir():
        print(f"skipped: {settings.data} not found; pass --data FOLDER")
        return 0
    torch_ver = package_version("torch")
    env = threads_env(settings)
    result = dict(
        settings=asdict(settings),
        **run_context(torch_ver),
        load_at_start=load_average(),
        warmup_steps=WARMUP_STEPS,
        numrnn_runs=[],
        torch_runs=[],
        timed=[],
        wall_s={},
    )
    walls = result["wall_s"]
    for seed in range(settings.seeds):
        seeded = replace(settings, seed=seed)
        row, walls[f"numrnn seed {seed}"] = run_in_own_process(with_load, run_numrnn_steps, seeded, env=env)
        result["numrnn_runs"].append(row)
        if torch_ver is not None:
            row, walls[f"PyTorch seed {seed}"] = run_in_own_process(with_load, run_torch_steps, seeded)
            result["torch_runs"].append(row)
    result["steps_summary"] = summarise_steps(result["numrnn_runs"], result["torch_runs"])
    if settings.time:
        sides = [("numrnn", run_numrnn_timed, env)]
        if args.torch_time and torch_ver is not None:
            sides.append(("PyTorch", run_torch_timed, None))
        for name, function, side_env in sides:
            for balance in (False, True):
                label = f"{name}{' --balance' if balance else ''}, {settings.time:g} s"
                row, walls[label] = run_in_own_process(
                    with_load, function, replace(settings, balance=balance), env=side_env
                )
                result["timed"].append(dict(label=label, **row))
    result["load_at_end"] = load_average()

    print(header_line(result))
    steps = result["numrnn_runs"][0]["steps"]
    per_epoch = -(-result["numrnn_runs"][0]["split"][0] // settings.batch_size)
    seeds = "seed 0" if settings.seeds == 1 else f"mean ± SD over seeds 0..{settings.seeds - 1}"
    print_table(
        STEP_COLUMNS,
        step_rows(result["steps_summary"]),
        f"after {steps:,} steps ({steps / per_epoch:.2f} epochs), same weights and "
        f"batches{', balanced class weights' if settings.balance else ''}, {seeds}",
        width=110,
    )
    for line in step_notes(result):
        print(line)
    if result["timed"]:
        print_table(
            TIMED_COLUMNS,
            timed_rows(result["timed"]),
            f"{settings.time:g} s of training, validation every half epoch; best = the "
            f"best-validation checkpoint, final = the last weights",
            width=120,
        )
    for line in general_notes(result):
        print(line)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
