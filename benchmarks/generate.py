"""Conditional generation: numrnn against PyTorch, same names, same start, same batches.

What it measures. A label-conditioned character generator (``numrnn generate train``'s model:
embedding -> LSTM/GRU/RNN -> head, start and end tokens, the label entering as
``--condition``) is trained for the same number of steps twice: once through numrnn's own
``Trainer`` on a ``GenerateTask`` (the product path) and once as its PyTorch twin
(``twins.ConditionalCharLM``: with the default condition "input" the RNN reads
[embedding(char); one_hot(label)], so ``weight_ih_l0`` is [numrnn's W_ih | cond.input^T]).
Both sides

- read the same names (``read_labelled``), split the same way (``stratified_split``,
  val_frac 0.1, by --seed), with the same vocabulary (``generate.build_vocab``);
- see the same batches in the same order: the padded tokens, targets (-1 at padding) and
  labels of ``GenerateTask.batch_at(epoch, position)`` (``batch_order`` per (seed, epoch));
- start from the same float32 weights (numrnn's ``init_weights(default_rng(seed))``, loaded
  into the twin with ``ConditionalCharLM.from_numrnn``);
- use Adam (lr 1e-3, `numrnn generate train`'s default; torch's defaults otherwise),
  global-norm clipping at 5.0 and the mean cross-entropy over the real targets
  (``cross_entropy(ignore_index=-1)`` in torch);
- are scored the same way: the validation loss per character, the end token counted
  (``GenerateTask.evaluate`` for numrnn; the same length-sorted batches of
  ``generate.sequences`` summed in torch).

Train chars/s is the median over the steps after 5 warm-up steps of (real characters of the
batch / step time), the batch built inside the timed step on both sides. Sample speed is
measured on the same trained weights (numrnn's, loaded into the twin): --names names for one
--label, batch 1, at most 40 characters each (`numrnn generate sample`'s --max-length), by
numrnn's compiled ``ConditionalSampler`` and by a plain PyTorch loop (``torch.no_grad``, a
forward call per character, softmax + ``torch.multinomial``, stop at the end token), the
median of --sample-repeats timed runs after a warm-up. Then `numrnn generate sample -n
--cli-names` runs end to end as a user would (a fresh process, the numba cache warmed by one
untimed run first). Each measurement runs in its own spawned process, one after the other;
torch trains with 2 threads and samples with 1 (as numrnn's sampler: `numrnn generate sample`
sets OPENBLAS_NUM_THREADS=1); numrnn trains with BLAS at its default (all cores).

Run it from the repository root (torch is optional; without it only numrnn's row is shown):

    python benchmarks/generate.py --quick            # a smoke run, about a minute
    python benchmarks/generate.py                    # LSTM 1x256, embed 32, B64, 3 epochs
    python benchmarks/generate.py --cell gru --steps 500 --json

The data defaults to ../shared/data/names next to the repository; when it is missing the
script says so and exits 0. Nothing is written outside a temporary folder (the checkpoint
the Trainer saves, which the samplers read), apart from numba's usual kernel cache.
"""

import argparse
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Siblings beside this script (its folder is on sys.path); harness puts the repository there too.
from harness import REPO_ROOT, chosen_settings, median, ratio, run_in_own_process
from machine import BUSY_LOAD, load_average, package_version, run_context
from tables import print_table

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "names"
LR = 1e-3  # `numrnn generate train --lr`
GRAD_CLIP = 5.0
VAL_FRAC = 0.1  # `numrnn generate train --val-frac`
WARMUP_STEPS = 5
TORCH_THREADS = 2  # training
SAMPLE_THREADS = 1  # batch-1 sampling, both sides (as `numrnn generate sample`)
MAX_LENGTH = 40  # `numrnn generate sample --max-length`
SAMPLE_WARMUP = 20  # names drawn before the timed runs (compiles, first touches)
LN2 = math.log(2.0)
SAMPLE_ENV = {
    "OPENBLAS_NUM_THREADS": str(SAMPLE_THREADS),
    "OMP_NUM_THREADS": str(SAMPLE_THREADS),
    "MKL_NUM_THREADS": str(SAMPLE_THREADS),
}

# `numrnn generate train`'s model; steps None: --epochs passes over the training names.
DEFAULTS = dict(
    cell="lstm",
    hidden=256,
    layers=1,
    embed=32,
    condition="input",
    batch_size=64,
    steps=None,
    epochs=3,
    seed=0,
    names=2000,
    sample_repeats=3,
    cli_names=10000,
)
QUICK = dict(
    cell="lstm",
    hidden=64,
    layers=1,
    embed=16,
    condition="input",
    batch_size=64,
    steps=60,
    epochs=1,
    seed=0,
    names=300,
    sample_repeats=2,
    cli_names=1000,
)


@dataclass(frozen=True)
class Settings:
    data: str
    label: str
    cell: str
    hidden: int
    layers: int
    embed: int
    condition: str
    batch_size: int
    steps: int
    seed: int
    names: int
    sample_repeats: int
    cli_names: int


# --------------------------------------------------------------------------- shared set-up


def prepare(settings):
    """(GenerateTask, model) as `numrnn generate train` makes them: the names read and split,
    the vocabulary of the training names, the model initialised from default_rng(seed),
    float32. The task's batches and validation rows are what both sides read."""
    import numpy as np

    from numrnn.data import read_labelled, stratified_split
    from numrnn.model import Model, ModelConfig
    from numrnn.tasks import generate

    data = read_labelled(settings.data)
    split = stratified_split(data.labels, VAL_FRAC, 0.0, settings.seed)
    vocab = generate.build_vocab([data.texts[i] for i in split[0]])
    config = ModelConfig(
        cell=settings.cell,
        vocab_size=len(vocab),
        hidden=settings.hidden,
        layers=settings.layers,
        embed=settings.embed,
        output_size=generate.output_size(vocab),
        condition=settings.condition,
        condition_classes=len(data.label_names),
    )
    model = Model(config, dtype=np.float32).init_weights(np.random.default_rng(settings.seed))
    task = generate.GenerateTask(
        model, vocab, data, split, batch_size=settings.batch_size, seed=settings.seed
    )
    return task, model


def batch_chars(task, steps):
    """Real characters (END counted) of each of the first ``steps`` batches, in order."""
    spe = task.steps_per_epoch
    return [task.items_at(step // spe, step % spe) for step in range(steps)]


def steady_rate(step_times, chars):
    """The median over the steps after the warm-up of (characters / step time)."""
    pairs = list(zip(chars, step_times))
    steady = pairs[WARMUP_STEPS:] if len(pairs) > WARMUP_STEPS else pairs[-1:]
    return median([c / t for c, t in steady])


def side_result(name, val_loss, val_chars, step_times, losses, chars, extra):
    steady = slice(WARMUP_STEPS, None) if len(step_times) > WARMUP_STEPS else slice(-1, None)
    return dict(
        name=name,
        val_loss=val_loss,
        val_bpc=val_loss / LN2,
        val_chars=val_chars,
        train_chars_per_s=steady_rate(step_times, chars),
        train_chars_per_s_overall=sum(chars[steady]) / sum(step_times[steady]),
        train_wall_s=float(sum(step_times)),
        warmup_wall_s=float(sum(step_times[:WARMUP_STEPS])),
        first_loss=losses[0],
        last_loss=losses[-1],
        steps=len(losses),
        **extra,
    )


# --------------------------------------------------------------------------- training


def train_numrnn(settings, checkpoint):
    """Train through numrnn.trainer.Trainer; the Trainer's final evaluation is the val loss.
    The checkpoint it saves at the end is what both samplers read."""
    from numrnn.trainer import StepDone, TrainConfig, Trainer, TrainStarted

    task, model = prepare(settings)
    config = TrainConfig(
        batch_size=settings.batch_size,
        optimizer="adam",
        lr=LR,
        grad_clip=GRAD_CLIP,
        max_steps=settings.steps,
        max_epochs=0,
        eval_every=0,
        checkpoint_every=0,
        log_every=settings.steps,
        val_frac=VAL_FRAC,
        seed=settings.seed,
    )
    arrivals, losses = [], []

    def on_event(event):
        if isinstance(event, (TrainStarted, StepDone)):
            arrivals.append(time.perf_counter())
        if isinstance(event, StepDone):
            losses.append(event.loss)

    result = Trainer(task, config, Path(checkpoint), on_event=on_event).run()
    step_times = [b - a for a, b in itertools.pairwise(arrivals)]
    return side_result(
        "numrnn",
        float(result.last_val_loss),
        task.val_items,
        step_times,
        losses,
        batch_chars(task, len(losses)),
        dict(
            names=len(task.data),
            train_names=len(task.train_rows),
            val_names=len(task.val_rows),
            val_skipped=task.val_skipped,
            labels=len(task.data.label_names),
            vocab_size=len(task.vocab),
            steps_per_epoch=task.steps_per_epoch,
            parameters=int(model.layout.size),
        ),
    )


def torch_score(torch, twin, task):
    """numrnn.tasks.generate.score in torch: the validation names sorted by length, in
    batches of EVAL_BATCH, the summed loss over the real targets / their count."""
    import numpy as np

    from numrnn.tasks import generate

    rows = task.val_rows[np.argsort(task.encoded.lengths[task.val_rows], kind="stable")]
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(rows), generate.EVAL_BATCH):
            tokens, targets, labels = generate.sequences(
                task.encoded, rows[begin : begin + generate.EVAL_BATCH], task.start, task.end
            )
            logits, _ = twin(
                torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))
            )
            targets = torch.from_numpy(targets.astype(np.int64))
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=-1,
                    reduction="sum",
                )
            )
            count += int((targets >= 0).sum())
    return total / count, count


def train_torch(settings):
    """The same run in PyTorch: the task's batches in the Trainer's order, Adam, clipping."""
    import torch
    from twins import ConditionalCharLM

    torch.set_num_threads(TORCH_THREADS)
    task, model = prepare(settings)
    twin = ConditionalCharLM.from_numrnn(model)
    optimizer = torch.optim.Adam(twin.parameters(), lr=LR)
    spe = task.steps_per_epoch
    step_times, losses = [], []
    twin.train()
    for step in range(settings.steps):
        started = time.perf_counter()
        tokens, targets, labels = task.batch_at(step // spe, step % spe)
        losses.append(twin.train_step(optimizer, tokens, targets, labels, GRAD_CLIP))
        step_times.append(time.perf_counter() - started)
    twin.eval()
    val_loss, val_chars = torch_score(torch, twin, task)
    return side_result(
        "PyTorch",
        float(val_loss),
        int(val_chars),
        step_times,
        losses,
        batch_chars(task, len(losses)),
        dict(threads=torch.get_num_threads()),
    )


# --------------------------------------------------------------------------- sampling


def _sampled(settings, checkpoint):
    """(loaded checkpoint, label id, start id, end id) for the samplers."""
    from numrnn.checkpoint import load_checkpoint
    from numrnn.tasks import generate

    loaded = load_checkpoint(checkpoint)
    start, end = generate.special_ids(loaded.vocab)
    return loaded, loaded.labels.index(settings.label), start, end


def sample_result(name, runs, settings, lengths, ended, extra=None):
    """names/s: the median over the timed runs of names / run time."""
    return dict(
        name=name,
        names_per_s=median([settings.names / t for t in runs]),
        run_s=[float(t) for t in runs],
        mean_chars=float(sum(lengths) / len(lengths)),
        unended=int(len(ended) - sum(ended)),
        **(extra or {}),
    )


def sample_numrnn(settings, checkpoint):
    """numrnn's ConditionalSampler: each timed run draws --names names in compiled calls."""
    import numpy as np

    from numrnn.sampling import ConditionalSampler, SampleConfig
    from numrnn.tasks import generate

    loaded, label, _, _ = _sampled(settings, checkpoint)
    sampler = ConditionalSampler(loaded.build_model(), loaded.vocab, generate.START, generate.END)
    config = SampleConfig(length=MAX_LENGTH)
    rng = np.random.default_rng(settings.seed)
    list(sampler.generate(label, SAMPLE_WARMUP, config, rng))
    runs, lengths, ended = [], [], []
    for _ in range(settings.sample_repeats):
        started = time.perf_counter()
        drawn = list(sampler.generate(label, settings.names, config, rng))
        runs.append(time.perf_counter() - started)
        lengths += [len(ids) for ids, _ in drawn]
        ended += [e for _, e in drawn]
    return sample_result("numrnn", runs, settings, lengths, ended)


def sample_torch(settings, checkpoint):
    """The plain PyTorch loop (ConditionalCharLM.sample) on numrnn's trained weights."""
    import torch
    from twins import ConditionalCharLM

    torch.set_num_threads(SAMPLE_THREADS)
    loaded, label, start, end = _sampled(settings, checkpoint)
    twin = ConditionalCharLM.from_numrnn(loaded.build_model()).eval()
    generator = torch.Generator().manual_seed(settings.seed)
    for _ in range(SAMPLE_WARMUP):
        twin.sample(label, start, end, MAX_LENGTH, generator)
    runs, lengths, ended = [], [], []
    for _ in range(settings.sample_repeats):
        started = time.perf_counter()
        drawn = [twin.sample(label, start, end, MAX_LENGTH, generator) for _ in range(settings.names)]
        runs.append(time.perf_counter() - started)
        lengths += [len(ids) for ids in drawn]
        ended += [len(ids) < MAX_LENGTH for ids in drawn]  # a 40-char name that ended: rare
    return sample_result("PyTorch", runs, settings, lengths, ended, dict(threads=torch.get_num_threads()))


def cli_sample(settings, checkpoint):
    """`numrnn generate sample -n --cli-names` end to end, stdout discarded: (wall s of a run
    with the kernel cache warm, wall s of the first run), None when it failed."""
    command = [
        sys.executable,
        "-m",
        "numrnn_cli",
        "generate",
        "sample",
        "-c",
        str(checkpoint),
        "--label",
        settings.label,
        "-n",
        str(settings.cli_names),
        "--seed",
        str(settings.seed),
    ]
    walls = []
    for _ in range(2):
        started = time.perf_counter()
        done = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT
        )
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            return dict(error=done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"])
    return dict(warm_s=walls[1], first_s=walls[0], names=settings.cli_names)


# --------------------------------------------------------------------------- orchestration


def summarise(settings, rows, torch_ver, walls, loads, cli):
    n, t = rows["numrnn"], rows.get("PyTorch")
    summary = dict(
        settings=asdict(settings),
        **run_context(torch_ver),
        load=loads,
        warmup_steps=WARMUP_STEPS,
        numrnn=n,
        torch=t,
        cli=cli,
        wall_s=walls,
    )
    if t is not None:
        summary.update(
            val_loss_ratio=ratio(n["val_loss"], t["val_loss"]),
            chars_per_s_ratio=ratio(n["train_chars_per_s"], t["train_chars_per_s"]),
            names_per_s_ratio=ratio(n["sample"]["names_per_s"], t["sample"]["names_per_s"]),
            val_loss_pct=100.0 * (n["val_loss"] / t["val_loss"] - 1.0),
        )
    return summary


# --------------------------------------------------------------------------- output


def header_line(summary):
    s, n = summary["settings"], summary["numrnn"]
    embed = f"embed {s['embed']}" if s["embed"] else "one-hot"
    torch_part = (
        f"torch {summary['torch_version']} ({TORCH_THREADS} threads training, {SAMPLE_THREADS} sampling)"
        if summary["torch_version"]
        else "torch not installed"
    )
    load = summary["load"]["start"]
    load_part = f", load {load:.2f} at start" if load is not None else ""
    epochs = s["steps"] / n["steps_per_epoch"]
    return (
        f"{summary['cpu']} ({summary['cpus']} CPUs{load_part}) | "
        f"{s['cell']} {s['layers']}x{s['hidden']}, {embed}, condition {s['condition']}, "
        f"B{s['batch_size']}, {s['steps']} steps ({epochs:.2f} epochs), Adam {LR:g}, "
        f"clip {GRAD_CLIP:g}, seed {s['seed']} | numrnn {summary['numrnn_version']}, "
        f"{torch_part} | {Path(s['data']).name}: {n['names']:,} names of {n['labels']} "
        f"labels, {n['train_names']:,} train / {n['val_names']:,} val "
        f"({n['val_chars']:,} chars scored), vocab {n['vocab_size']}, "
        f"{n['parameters']:,} parameters"
    )


def table_rows(summary):
    def row(side):
        sample = side["sample"]
        return [
            side["name"],
            f"{side['val_loss']:.4f}",
            f"{side['val_bpc']:.4f}",
            f"{side['train_chars_per_s']:,.0f}",
            f"{sample['names_per_s']:,.0f}",
            f"{sample['mean_chars']:.2f}",
        ]

    rows = [row(summary["numrnn"])]
    if summary["torch"] is not None:
        n, t = summary["numrnn"], summary["torch"]
        rows.append(row(t))
        rows.append(
            [
                "ratio (numrnn/PyTorch)",
                f"{summary['val_loss_ratio']:.4f}",
                f"{ratio(n['val_bpc'], t['val_bpc']):.4f}",
                f"{summary['chars_per_s_ratio']:.3f}",
                f"{summary['names_per_s_ratio']:.1f}",
                f"{ratio(n['sample']['mean_chars'], t['sample']['mean_chars']):.3f}",
            ]
        )
    return rows


COLUMNS = [
    "",
    "val loss\n(nats/char)",
    "val\nbits/char",
    "train\nchars/s",
    "sample\nnames/s",
    "chars per\nsampled name",
]


def notes(summary):
    s, n, t, w = summary["settings"], summary["numrnn"], summary["torch"], summary["wall_s"]
    lines = []
    if t is None:
        lines.append("PyTorch rows skipped: torch is not installed (pip install torch).")
    else:
        lines.append(
            f"numrnn's validation loss is {summary['val_loss_pct']:+.2f}% of PyTorch's (negative = better)."
        )
        lines.append(
            f"first-step train loss (same weights, same batch): "
            f"numrnn {n['first_loss']:.6f}, PyTorch {t['first_loss']:.6f}; "
            f"last step: numrnn {n['last_loss']:.4f}, PyTorch {t['last_loss']:.4f}."
        )
    lines.append(
        f"sampling: {s['names']:,} names of {s['label']} per run, batch 1, at most "
        f"{MAX_LENGTH} chars, both on numrnn's trained weights, median of "
        f"{s['sample_repeats']} runs after {SAMPLE_WARMUP} warm-up names; "
        f"cut at {MAX_LENGTH}: numrnn {n['sample']['unended']}"
        + (f", PyTorch {t['sample']['unended']}" if t else "")
        + "."
    )
    cli = summary["cli"]
    if cli is None:
        pass
    elif "error" in cli:
        lines.append(f"numrnn generate sample failed: {' '.join(cli['error'])}")
    else:
        lines.append(
            f"`numrnn generate sample -n {cli['names']:,} --label {s['label']}` end to "
            f"end: {cli['warm_s']:.2f} s with the kernel cache warm "
            f"({cli['names'] / cli['warm_s']:,.0f} names/s, start-up included); "
            f"first run {cli['first_s']:.2f} s."
        )
    loads = summary["load"]
    if loads["start"] is not None and loads["start"] > BUSY_LOAD:
        lines.append(
            f"note: the machine was busy (1-min load {loads['start']:.2f} at start); "
            f"other work skews the speed columns (the losses are unaffected)."
        )
    if loads["end"] is not None:
        lines.append(f"1-min load at the end: {loads['end']:.2f} (this run's own work included).")
    if t is not None:
        lines.append(
            f"training time of all {s['steps']} steps: numrnn {n['train_wall_s']:.1f} s, "
            f"PyTorch {t['train_wall_s']:.1f} s (after the warm-up, total chars / total "
            f"time: numrnn {n['train_chars_per_s_overall']:,.0f}, PyTorch "
            f"{t['train_chars_per_s_overall']:,.0f} chars/s)."
        )
    walls = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in w.items())
    lines.append(
        f"train chars/s: median over the steps after {WARMUP_STEPS} warm-up steps of the "
        f"batch's real characters (END counted) / step time. Process wall time: {walls}."
    )
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Conditional generation, numrnn vs PyTorch: validation loss at equal steps, "
        "train and sample speed.",
        epilog="Example: python benchmarks/generate.py --quick --json",
    )
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="folder of <label>.txt files (default: %(default)s)"
    )
    parser.add_argument("--label", default="Russian", help="the label sampled (Russian)")
    parser.add_argument(
        "--steps", type=int, help="training steps (default: --epochs passes over the training names)"
    )
    parser.add_argument("--epochs", type=int, help="epochs when --steps is not given (3)")
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), help="recurrent cell (lstm)")
    parser.add_argument("--hidden", type=int, help="hidden units per layer (256)")
    parser.add_argument("--layers", type=int, help="stacked layers (1)")
    parser.add_argument("--embed", type=int, help="embedding width, 0 for one-hot (32)")
    parser.add_argument(
        "--condition", choices=("input", "state", "both"), help="how the label enters (input)"
    )
    parser.add_argument("--batch-size", type=int, help="names per step (64)")
    parser.add_argument("--seed", type=int, help="seed of the split, batches and weights (0)")
    parser.add_argument("--names", type=int, help="names per timed sampling run (2000)")
    parser.add_argument("--sample-repeats", type=int, help="timed sampling runs per side (3)")
    parser.add_argument(
        "--cli-names", type=int, help="names for `numrnn generate sample -n`, 0 to skip (10000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: lstm 1x64, embed 16, 60 steps, 300 names (options given explicitly still win)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args(argv)


def settings_from(args):
    return chosen_settings(
        args,
        DEFAULTS,
        QUICK,
        at_least_one=("hidden", "layers", "batch_size", "epochs", "names", "sample_repeats", "steps"),
        at_least_zero=("embed", "cli_names"),
    )


def resolve_steps(chosen, data):
    """--steps, or --epochs passes over the training names (read here: numpy only)."""
    epochs = chosen.pop("epochs")
    if chosen["steps"] is None:
        from numrnn.data import read_labelled, stratified_split

        labelled = read_labelled(data)
        train = len(stratified_split(labelled.labels, VAL_FRAC, 0.0, chosen["seed"])[0])
        chosen["steps"] = epochs * -(-train // chosen["batch_size"])
    return chosen


def main(argv=None):
    args = parse_args(argv)
    chosen = settings_from(args)
    data = Path(args.data).resolve()
    if not data.is_dir():
        print(f"skipped: {data} not found; pass --data FOLDER (of <label>.txt files)")
        return 0
    chosen = resolve_steps(chosen, data)
    if not (data / f"{args.label}.txt").is_file():
        raise SystemExit(f"error: --label {args.label}: no {args.label}.txt in {data}")
    settings = Settings(data=str(data), label=args.label, **chosen)
    torch_ver = package_version("torch")
    loads = {"start": load_average()}
    walls, rows = {}, {}
    with tempfile.TemporaryDirectory(prefix="numrnn-generate-") as tmp:
        checkpoint = str(Path(tmp) / "generate.safetensors")
        rows["numrnn"], walls["numrnn train"] = run_in_own_process(train_numrnn, settings, checkpoint)
        if torch_ver is not None:
            rows["PyTorch"], walls["PyTorch train"] = run_in_own_process(train_torch, settings)
        rows["numrnn"]["sample"], walls["numrnn sample"] = run_in_own_process(
            sample_numrnn, settings, checkpoint, env=SAMPLE_ENV
        )
        if torch_ver is not None:
            rows["PyTorch"]["sample"], walls["PyTorch sample"] = run_in_own_process(
                sample_torch, settings, checkpoint, env=SAMPLE_ENV
            )
        cli = cli_sample(settings, checkpoint) if settings.cli_names else None
    loads["end"] = load_average()
    summary = summarise(settings, rows, torch_ver, walls, loads, cli)
    print(header_line(summary))
    print_table(
        COLUMNS,
        table_rows(summary),
        f"conditional generation: validation loss after {settings.steps} steps, speed",
        width=110,
    )
    for line in notes(summary):
        print(line)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
