"""Character-level translation: numrnn against PyTorch, same model, same start, same batches.

What it measures. The encoder-decoder of `numrnn translate` (``numrnn.tasks.translate``:
embedding 64 -> bidirectional GRU 128 encoder over packed sources -> bridge
h0 = tanh(Linear(final encoder states)) -> GRU 256 decoder, teacher-forced -> Luong "general"
attention with padding masked -> attentional state tanh(combine([context; h])) -> Linear to the
target characters) is trained English -> French on ../shared/data/eng-fra.txt for the same
number of steps twice: once through numrnn's own ``Trainer`` on a ``TranslateTask`` (the
product path) and once as its PyTorch twin (``twins.Translator``: ``torch.nn.GRU`` over
``pack_padded_sequence``, the same bridge, attention and head in plain torch; its loss,
gradients, greedy and beam outputs equal numrnn's in float64, tests/test_translate_parity.py).
Both sides

- read the same pairs (``read_pairs``), shuffled with ``default_rng(seed)`` and split 90/5/5
  (``shuffled_split``), with the same vocabularies (``translate.build_vocabs`` of the training
  pairs);
- see the same batches in the same order: ``TranslateTask.batch_at(epoch, position)`` (64
  pairs of similar source length, longest source first, shuffled per (seed, epoch));
- start from the same float32 weights (numrnn's ``init_weights(default_rng(seed))``, loaded
  into the twin with ``Translator.from_numrnn``);
- use Adam (lr 2e-3, torch's defaults otherwise), global-norm clipping at 5, teacher forcing
  and the mean cross-entropy per target character (END counted, padding ignored);
- are evaluated after every epoch on the validation pairs the same way (``translate.score``:
  nats per target character, END counted, in length-sorted batches of 256), and keep the
  weights of the best validation loss (the model over-fits this small corpus).

The best weights of each side then translate the test pairs (those whose source has a known
character): greedy and beam 5 (length-normalised, log-probability / length**1.0 with END
counted, run until every hypothesis has ended or 100 characters), scored with chrF2
(``numrnn.metrics.chrf``, sacrebleu's) and exact match against the reference.

Speed. Train target chars/s is the median over the steps after 5 warm-up steps of (target
characters of the batch, END counted / step time), the batch built inside the timed step on
both sides, evaluation left out. Decoding speed is test sentences/s on the best weights.
Greedy is batched on both sides (the test sources sorted by length, 256 per call): the median
of --decode-repeats timed runs after an untimed one. Beam 5 is batched over all test sentences
for numrnn (``Translator.beam_search``: sentences x hypotheses decoder rows per step; the
median of --decode-repeats - 1 runs, at least one, after an untimed one) against the
straightforward PyTorch beam search one sentence at a time (``twins.Translator.beam_search``:
its 5 hypotheses as 5 rows, a forward call per character; one timed run after 8 warm-up
sentences) - the issue's comparison. numrnn runs with BLAS at its default (all cores), as a
user gets it; torch trains with 2 threads, and its decoding (greedy and beam) is timed with 1
and with 2 threads and the faster counts (at these shapes a second thread often costs more
than it gives). PyTorch's beam is timed once more stopping early the way numrnn's does
(``stop_early``: once no live hypothesis can beat the best ended one; the same translations),
which shows how much of the difference is that algorithm rather than the implementation. The
twin also decodes numrnn's best weights, so the agreement of the two decoders on a trained
float32 model is shown.

Run it from the repository root (torch is optional; without it only numrnn's row is shown):

    python benchmarks/translate.py --quick            # a smoke run, under a minute
    python benchmarks/translate.py                    # the issue's model, 16 epochs, ~4-7 min
    python benchmarks/translate.py --epochs 30 --json

The data defaults to ../shared/data/eng-fra.txt next to the repository; when it is missing the
script says so and exits 0. Each side runs in its own spawned process, one after the other.
Nothing is written outside a temporary folder (the Trainer's checkpoints), apart from numba's
usual kernel cache.
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Siblings beside this script (its folder is on sys.path); harness puts the repository there too.
from harness import REPO_ROOT, chosen_settings, median, ratio, run_in_own_process
from machine import BUSY_LOAD, load_average, package_version, run_context
from tables import print_table

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "eng-fra.txt"
LR = 2e-3
GRAD_CLIP = 5.0
VAL_FRAC = TEST_FRAC = 0.05
WARMUP_STEPS = 5
TORCH_THREADS = 2  # training
DECODE_THREADS = (1, 2)  # torch's decoding is timed with each; the faster counts
BEAM = 5
ALPHA = 1.0  # length penalty: log-probability / length**ALPHA, END counted
MAX_LENGTH = 100  # characters per translation, both decoders
DECODE_BATCH = 256  # test sentences per batched decoding call (translate.EVAL_BATCH)
BEAM_WARMUP = 8  # sentences PyTorch beam-decodes before its timed runs (numrnn: one whole run)

# The model; steps None: --epochs passes over the training pairs.
DEFAULTS = dict(
    cell="gru",
    embed=64,
    hidden=128,
    decoder_hidden=256,
    attention="general",
    batch_size=64,
    steps=None,
    epochs=16,
    seed=0,
    decode_repeats=3,
    beam_sentences=0,
)
QUICK = dict(
    cell="gru",
    embed=16,
    hidden=32,
    decoder_hidden=64,
    attention="general",
    batch_size=64,
    steps=None,
    epochs=2,
    seed=0,
    decode_repeats=2,
    beam_sentences=20,
)


@dataclass(frozen=True)
class Settings:
    data: str
    cell: str
    embed: int
    hidden: int
    decoder_hidden: int
    attention: str
    batch_size: int
    steps: int
    seed: int
    decode_repeats: int
    beam_sentences: int  # test sentences beam-decoded (0: all)


# --------------------------------------------------------------------------- shared set-up


def prepare(settings):
    """(TranslateTask, model) as `numrnn translate train` makes them: the pairs read and
    split, the vocabularies of the training pairs, the model initialised from
    default_rng(seed), float32."""
    import numpy as np

    from numrnn.data import read_pairs, shuffled_split
    from numrnn.model import ModelConfig
    from numrnn.tasks import generate, translate

    data = read_pairs(settings.data)
    split = shuffled_split(len(data), VAL_FRAC, TEST_FRAC, settings.seed)
    source_vocab, target_vocab = translate.build_vocabs(data, split[0])
    config = ModelConfig(
        cell=settings.cell,
        vocab_size=len(source_vocab),
        hidden=settings.hidden,
        layers=1,
        embed=settings.embed,
        output_size=generate.output_size(target_vocab),
        bidirectional=True,
        attention=settings.attention,
        decoder_hidden=settings.decoder_hidden,
    )
    model = translate.Translator(config, dtype=np.float32).init_weights(np.random.default_rng(settings.seed))
    task = translate.TranslateTask(
        model,
        source_vocab,
        target_vocab,
        data,
        split,
        batch_size=settings.batch_size,
        seed=settings.seed,
        split_meta={"path": settings.data},
    )
    return task, model


def test_chunks(task, settings, beam=False):
    """The test pairs to decode, as batches for a Translator: a list of (rows, source (S, B),
    lengths (B)), the rows sorted longest source first, DECODE_BATCH per batch. Pairs whose
    source has no known character are left out; with beam, only the first --beam-sentences
    test pairs (0: all)."""
    import numpy as np

    rows = task.test_rows[task.encoded.lengths[task.test_rows] > 0]
    if beam and settings.beam_sentences:
        rows = rows[: settings.beam_sentences]
    rows = rows[np.argsort(-task.encoded.lengths[rows], kind="stable")]
    chunks = []
    for begin in range(0, len(rows), DECODE_BATCH):
        part = rows[begin : begin + DECODE_BATCH]
        source, _, lengths = task.encoded.batch(part)
        chunks.append((part, source, lengths))
    return chunks


def text_of(task, ids):
    chars = task.target_vocab.chars
    return "".join(chars[i] for i in ids)


def quality(task, outputs):
    """chrF2 and exact match of {row: translation} against the test references."""
    from numrnn.metrics import chrf

    rows = sorted(outputs)
    hypotheses = [outputs[r] for r in rows]
    references = [task.data.targets[r] for r in rows]
    return dict(
        chrf=float(chrf(hypotheses, references)),
        exact=sum(h == r for h, r in zip(hypotheses, references)) / len(rows),
        sentences=len(rows),
        mean_chars=sum(len(h) for h in hypotheses) / len(rows),
    )


def timed_runs(call, repeats):
    """(the last run's result, [seconds per run]) of ``repeats`` runs of call()."""
    runs, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        runs.append(time.perf_counter() - started)
    return result, runs


def batch_chars(task, steps):
    """Target characters (END counted) of each of the first ``steps`` batches, in order."""
    spe = task.steps_per_epoch
    return [task.items_at(step // spe, step % spe) for step in range(steps)]


def train_summary(step_times, chars, losses, evals, eval_s):
    steady = slice(WARMUP_STEPS, None) if len(step_times) > WARMUP_STEPS else slice(-1, None)
    pairs = list(zip(chars, step_times))[steady]
    best = min(range(len(evals)), key=lambda i: evals[i][1])
    return dict(
        train_chars_per_s=median([c / t for c, t in pairs]),
        train_chars_per_s_overall=sum(c for c, _ in pairs) / sum(t for _, t in pairs),
        train_wall_s=float(sum(step_times)),
        eval_wall_s=float(eval_s),
        first_loss=losses[0],
        last_loss=losses[-1],
        steps=len(losses),
        evals=evals,  # (step, val loss)
        val_loss=evals[-1][1],
        best_val_loss=evals[best][1],
        best_step=evals[best][0],
    )


def speed(sentences, runs):
    return dict(sentences_per_s=median([sentences / t for t in runs]), run_s=[float(t) for t in runs])


# --------------------------------------------------------------------------- numrnn


def run_numrnn(settings, checkpoint):
    """Train through numrnn.trainer.Trainer, evaluating every epoch and keeping the best
    weights; then decode the test pairs with them."""
    import numpy as np

    from numrnn.trainer import CheckpointSaved, EvalReport, StepDone, TrainConfig, Trainer, TrainStarted

    task, model = prepare(settings)
    # Both sides keep the weights of the best validation loss (ANCHORS.md's protocol);
    # `numrnn translate train` itself chooses by greedy chrF (TranslateTask.select_by).
    task.select_by = None
    spe = task.steps_per_epoch
    config = TrainConfig(
        batch_size=settings.batch_size,
        optimizer="adam",
        lr=LR,
        grad_clip=GRAD_CLIP,
        max_steps=settings.steps,
        max_epochs=0,
        eval_every=spe,
        checkpoint_every=0,
        log_every=settings.steps,
        val_frac=VAL_FRAC,
        test_frac=TEST_FRAC,
        seed=settings.seed,
    )
    step_times, losses, evals, best = [], [], [], {}
    clock = {"last": None, "eval_s": 0.0}

    def on_event(event):
        now = time.perf_counter()
        if isinstance(event, StepDone):
            step_times.append(now - clock["last"])
            losses.append(event.loss)
        elif isinstance(event, EvalReport):
            clock["eval_s"] += now - clock["last"]
            evals.append((event.step, float(event.val_loss)))
            if event.improved:
                best["params"] = model.params.copy()
        if isinstance(event, (TrainStarted, StepDone, EvalReport, CheckpointSaved)):
            clock["last"] = time.perf_counter()  # a step's time starts after the last event

    Trainer(task, config, Path(checkpoint), on_event=on_event).run()
    result = train_summary(step_times, batch_chars(task, len(losses)), losses, evals, clock["eval_s"])
    model.params[...] = best["params"]
    start, end = task.start, task.end

    def greedy(chunks):
        out = {}
        for rows, source, lengths in chunks:
            ids, _, _ = model.greedy(source, lengths, start, end, MAX_LENGTH)
            out.update((int(r), text_of(task, i)) for r, i in zip(rows, ids))
        return out

    def beam(chunks):
        out = {}
        for rows, source, lengths in chunks:
            found = model.beam_search(
                source, lengths, start, end, beam=BEAM, max_length=MAX_LENGTH, alpha=ALPHA
            )
            out.update((int(r), text_of(task, f[0][0])) for r, f in zip(rows, found))
        return out

    chunks, beam_chunks = test_chunks(task, settings), test_chunks(task, settings, beam=True)
    greedy(chunks), beam(beam_chunks)  # untimed: compiles, workspaces of these shapes
    greedy_out, greedy_runs = timed_runs(lambda: greedy(chunks), settings.decode_repeats)
    beam_out, beam_runs = timed_runs(lambda: beam(beam_chunks), max(1, settings.decode_repeats - 1))
    result.update(
        name="numrnn",
        greedy=dict(**quality(task, greedy_out), **speed(len(greedy_out), greedy_runs)),
        beam=dict(**quality(task, beam_out), **speed(len(beam_out), beam_runs)),
        outputs={"greedy": greedy_out, "beam": beam_out},
        best_params=np.asarray(best["params"]),
        pairs=len(task.data),
        train_pairs=len(task.train_rows),
        val_pairs=len(task.val_rows),
        val_skipped=task.val_skipped,
        test_pairs=len(task.test_rows),
        test_decoded=len(greedy_out),
        beam_decoded=len(beam_out),
        source_vocab=len(task.vocab),
        target_vocab=len(task.target_vocab),
        steps_per_epoch=spe,
        val_chars=task.val_items,
        parameters=int(model.layout.size),
    )
    return result


# --------------------------------------------------------------------------- PyTorch


def torch_score(torch, twin, task):
    """numrnn.tasks.translate.score in torch: the validation pairs sorted by source length,
    in batches of EVAL_BATCH, the summed loss over the real targets / their count."""
    import numpy as np

    from numrnn.tasks import translate

    rows = task.val_rows[np.argsort(-task.encoded.lengths[task.val_rows], kind="stable")]
    total, count = 0.0, 0
    twin.eval()
    with torch.no_grad():
        for begin in range(0, len(rows), translate.EVAL_BATCH):
            batch = translate.pair_batch(
                task.encoded, task.targets, rows[begin : begin + translate.EVAL_BATCH], task.start, task.end
            )
            source, lengths, tokens, targets = (torch.from_numpy(np.asarray(a, np.int64)) for a in batch[:4])
            logits = twin(source, lengths, tokens)
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=-1,
                    reduction="sum",
                )
            )
            count += int((targets >= 0).sum())
    twin.train()
    return total / count


def torch_beam(twin, task, chunks, stop_early=False):
    """The one-sentence beam over every sentence of ``chunks``: {row: translation}."""
    out = {}
    for rows, source, lengths in chunks:
        for b, row in enumerate(rows):
            found = twin.beam_search(
                source[: lengths[b], b],
                task.start,
                task.end,
                beam=BEAM,
                max_length=MAX_LENGTH,
                alpha=ALPHA,
                stop_early=stop_early,
            )
            out[int(row)] = text_of(task, found[0][0])
    return out


def torch_greedy(twin, task, chunks):
    out = {}
    for rows, source, lengths in chunks:
        ids, _ = twin.greedy(source, lengths, task.start, task.end, MAX_LENGTH)
        out.update((int(r), text_of(task, i)) for r, i in zip(rows, ids))
    return out


def run_torch(settings, numrnn_params, numrnn_outputs):
    """The same run in PyTorch: the task's batches in the Trainer's order, Adam, clipping,
    evaluation every epoch, the best weights kept; then the test pairs decoded with them, and
    with numrnn's best weights (agreement of the two decoders)."""
    import torch
    from twins import Translator as Twin

    torch.set_num_threads(TORCH_THREADS)
    task, model = prepare(settings)
    twin = Twin.from_numrnn(model)
    optimizer = torch.optim.Adam(twin.parameters(), lr=LR)
    spe = task.steps_per_epoch
    step_times, losses, evals, best, eval_s = [], [], [], None, 0.0
    twin.train()
    for step in range(settings.steps):
        started = time.perf_counter()
        source, lengths, tokens, targets, _ = task.batch_at(step // spe, step % spe)
        losses.append(twin.train_step(optimizer, source, lengths, tokens, targets, GRAD_CLIP))
        step_times.append(time.perf_counter() - started)
        if (step + 1) % spe == 0 or step + 1 == settings.steps:  # the Trainer's cadence
            started = time.perf_counter()
            evals.append((step + 1, torch_score(torch, twin, task)))
            if best is None or evals[-1][1] < min(loss for _, loss in evals[:-1]):
                best = {name: value.detach().clone() for name, value in twin.state_dict().items()}
            eval_s += time.perf_counter() - started
    result = train_summary(step_times, batch_chars(task, len(losses)), losses, evals, eval_s)
    twin.load_state_dict(best)
    twin.eval()
    chunks, beam_chunks = test_chunks(task, settings), test_chunks(task, settings, beam=True)
    first = beam_chunks[0]
    warm = [(first[0][:BEAM_WARMUP], first[1][:, :BEAM_WARMUP], first[2][:BEAM_WARMUP])]
    torch_greedy(twin, task, chunks), torch_beam(twin, task, warm)  # untimed
    greedy_by_threads, beam_by_threads = {}, {}
    for threads in DECODE_THREADS:
        torch.set_num_threads(threads)
        greedy_out, runs = timed_runs(lambda: torch_greedy(twin, task, chunks), settings.decode_repeats)
        greedy_by_threads[threads] = speed(len(greedy_out), runs)
        beam_out, runs = timed_runs(lambda: torch_beam(twin, task, beam_chunks), 1)
        beam_by_threads[threads] = speed(len(beam_out), runs)
    fast_greedy = max(greedy_by_threads, key=lambda t: greedy_by_threads[t]["sentences_per_s"])
    fast_beam = max(beam_by_threads, key=lambda t: beam_by_threads[t]["sentences_per_s"])
    result.update(
        name="PyTorch",
        greedy=dict(**quality(task, greedy_out), **greedy_by_threads[fast_greedy], threads=fast_greedy),
        beam=dict(**quality(task, beam_out), **beam_by_threads[fast_beam], threads=fast_beam),
        greedy_by_threads=greedy_by_threads,
        beam_by_threads=beam_by_threads,
        threads=TORCH_THREADS,
    )
    # How much of numrnn's beam speed is its early stop: the same search, stopping early.
    torch.set_num_threads(fast_beam)
    early_out, runs = timed_runs(lambda: torch_beam(twin, task, beam_chunks, stop_early=True), 1)
    result["beam_early"] = dict(**speed(len(early_out), runs), same=_share_equal(early_out, beam_out))
    # The twin on numrnn's best weights: the same translations as numrnn's decoders?
    model.params[...] = numrnn_params
    twin = Twin.from_numrnn(model).eval()
    torch.set_num_threads(fast_beam)
    same_greedy = torch_greedy(twin, task, chunks)
    same_beam = torch_beam(twin, task, beam_chunks)
    result["agreement"] = dict(
        greedy=_share_equal(same_greedy, numrnn_outputs["greedy"]),
        beam=_share_equal(same_beam, numrnn_outputs["beam"]),
    )
    return result


def _share_equal(a, b):
    return sum(a[r] == b[r] for r in a) / len(a)


# --------------------------------------------------------------------------- orchestration


def summarise(settings, rows, torch_ver, walls, loads):
    n, t = rows["numrnn"], rows.get("PyTorch")
    summary = dict(
        settings=asdict(settings),
        **run_context(torch_ver),
        load=loads,
        warmup_steps=WARMUP_STEPS,
        beam=BEAM,
        alpha=ALPHA,
        max_length=MAX_LENGTH,
        numrnn=n,
        torch=t,
        wall_s=walls,
    )
    if t is not None:
        summary.update(
            best_val_loss_ratio=ratio(n["best_val_loss"], t["best_val_loss"]),
            chars_per_s_ratio=ratio(n["train_chars_per_s"], t["train_chars_per_s"]),
            greedy_per_s_ratio=ratio(n["greedy"]["sentences_per_s"], t["greedy"]["sentences_per_s"]),
            beam_per_s_ratio=ratio(n["beam"]["sentences_per_s"], t["beam"]["sentences_per_s"]),
        )
    return summary


# --------------------------------------------------------------------------- output


def header_line(summary):
    s, n = summary["settings"], summary["numrnn"]
    torch_part = (
        f"torch {summary['torch_version']} ({TORCH_THREADS} threads training)"
        if summary["torch_version"]
        else "torch not installed"
    )
    load = summary["load"]["start"]
    load_part = f", load {load:.2f} at start" if load is not None else ""
    epochs = s["steps"] / n["steps_per_epoch"]
    return (
        f"{summary['cpu']} ({summary['cpus']} CPUs{load_part}) | embed {s['embed']}, bidirectional "
        f"{s['cell']} {s['hidden']} encoder, {s['cell']} {s['decoder_hidden']} decoder, "
        f"{s['attention']} attention, B{s['batch_size']}, {s['steps']} steps ({epochs:.2f} epochs), "
        f"Adam {LR:g}, clip {GRAD_CLIP:g}, seed {s['seed']}, {n['parameters']:,} parameters | "
        f"numrnn {summary['numrnn_version']}, {torch_part} | {Path(s['data']).name}: "
        f"{n['pairs']:,} pairs, {n['train_pairs']:,} train / {n['val_pairs']:,} val "
        f"({n['val_chars']:,} target chars scored) / {n['test_pairs']:,} test, vocab "
        f"{n['source_vocab']} -> {n['target_vocab']}"
    )


def table_rows(summary):
    def row(side):
        return [
            side["name"],
            f"{side['best_val_loss']:.4f}",
            f"{side['val_loss']:.4f}",
            f"{side['greedy']['chrf']:.2f}",
            f"{side['beam']['chrf']:.2f}",
            f"{100 * side['greedy']['exact']:.1f} / {100 * side['beam']['exact']:.1f}",
            f"{side['train_chars_per_s']:,.0f}",
            f"{side['greedy']['sentences_per_s']:,.0f}",
            f"{side['beam']['sentences_per_s']:,.1f}",
        ]

    rows = [row(summary["numrnn"])]
    if summary["torch"] is not None:
        n, t = summary["numrnn"], summary["torch"]
        rows.append(row(t))
        rows.append(
            [
                "ratio (numrnn/PyTorch)",
                f"{summary['best_val_loss_ratio']:.4f}",
                f"{ratio(n['val_loss'], t['val_loss']):.4f}",
                f"{ratio(n['greedy']['chrf'], t['greedy']['chrf']):.3f}",
                f"{ratio(n['beam']['chrf'], t['beam']['chrf']):.3f}",
                "",
                f"{summary['chars_per_s_ratio']:.2f}",
                f"{summary['greedy_per_s_ratio']:.2f}",
                f"{summary['beam_per_s_ratio']:.1f}",
            ]
        )
    return rows


COLUMNS = [
    "",
    "best val\nloss",
    "final\nval loss",
    "chrF2\ngreedy",
    "chrF2\nbeam 5",
    "exact %\ngreedy/beam",
    "train\nchars/s",
    "greedy\nsent/s",
    "beam 5\nsent/s",
]


def notes(summary):
    s, n, t, w = summary["settings"], summary["numrnn"], summary["torch"], summary["wall_s"]
    spe = n["steps_per_epoch"]
    lines = []
    best = f"numrnn's best validation loss after epoch {n['best_step'] / spe:g}"
    if t is None:
        lines.append("PyTorch rows skipped: torch is not installed (pip install torch).")
        lines.append(best + ".")
    else:
        lines.append(
            f"{best}, PyTorch's after epoch {t['best_step'] / spe:g}; numrnn's is "
            f"{100 * (summary['best_val_loss_ratio'] - 1):+.2f}% of PyTorch's (negative = better)."
        )
        lines.append(
            f"first-step train loss (same weights, same batch): numrnn {n['first_loss']:.6f}, "
            f"PyTorch {t['first_loss']:.6f}; last step: numrnn {n['last_loss']:.4f}, "
            f"PyTorch {t['last_loss']:.4f}."
        )
        curve = lambda side: " ".join(f"{loss:.3f}" for _, loss in side["evals"])  # noqa: E731
        lines.append(f"val loss per epoch: numrnn {curve(n)}")
        lines.append(f"                    PyTorch {curve(t)}")
        lines.append(
            f"the twin decoding numrnn's best weights (float32) gives numrnn's translation for "
            f"{100 * t['agreement']['greedy']:.1f}% of the test sentences greedily and "
            f"{100 * t['agreement']['beam']:.1f}% with beam {BEAM}."
        )
        for what, key in (("batched greedy", "greedy_by_threads"), ("one-sentence beam", "beam_by_threads")):
            by_threads = ", ".join(
                f"{threads} thread{'s' if threads > 1 else ''} {r['sentences_per_s']:,.1f}/s"
                for threads, r in t[key].items()
            )
            lines.append(f"PyTorch's {what}: {by_threads} (sentences/s); the faster is in the table.")
        early = t["beam_early"]
        lines.append(
            f"PyTorch's one-sentence beam stopping early as numrnn's does (once no live hypothesis "
            f"can beat the best ended one): {early['sentences_per_s']:,.1f} sentences/s, the same "
            f"translation for {100 * early['same']:.1f}%; numrnn's beam is "
            f"{ratio(n['beam']['sentences_per_s'], early['sentences_per_s']):.1f}x that."
        )
    decoded = n["beam_decoded"]
    lines.append(
        f"decoding: {n['test_decoded']:,} test sentences (sources with a known character), beam on "
        f"{'all of them' if decoded == n['test_decoded'] else f'the first {decoded:,}'}; beam "
        f"{BEAM}, score log-prob / length**{ALPHA:g} (END counted), at most {MAX_LENGTH} chars; "
        f"greedy batched {DECODE_BATCH} sentences per call on both sides; numrnn's beam batched "
        f"the same way, PyTorch's one sentence at a time (its {BEAM} hypotheses as rows); "
        f"median of {s['decode_repeats']} greedy runs; mean chars per translation (greedy): "
        f"numrnn {n['greedy']['mean_chars']:.1f}"
        + (f", PyTorch {t['greedy']['mean_chars']:.1f}." if t else ".")
    )
    loads = summary["load"]
    if loads["start"] is not None and loads["start"] > BUSY_LOAD:
        lines.append(
            f"note: the machine was busy (1-min load {loads['start']:.2f} at start); other work "
            f"skews the speed columns (the losses are unaffected)."
        )
    if loads["end"] is not None:
        lines.append(f"1-min load at the end: {loads['end']:.2f} (this run's own work included).")
    train = f"numrnn {n['train_wall_s']:.1f} s" + (f", PyTorch {t['train_wall_s']:.1f} s" if t else "")
    evals = f"numrnn {n['eval_wall_s']:.1f} s" + (f", PyTorch {t['eval_wall_s']:.1f} s" if t else "")
    overall = f"numrnn {n['train_chars_per_s_overall']:,.0f}" + (
        f", PyTorch {t['train_chars_per_s_overall']:,.0f}" if t else ""
    )
    lines.append(
        f"training time of all {s['steps']} steps: {train}; evaluations: {evals}; after the "
        f"warm-up, total chars / total step time: {overall} chars/s (the median is steadier "
        f"when other work shares the cores)."
    )
    walls = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in w.items())
    lines.append(
        f"train chars/s: median over the steps after {WARMUP_STEPS} warm-up steps of the batch's "
        f"target characters (END counted) / step time. Process wall time: {walls}."
    )
    return lines


def json_ready(summary):
    """The summary without the bulky parts (weights, translations)."""
    out = dict(summary)
    for side in ("numrnn", "torch"):
        if out.get(side) is not None:
            out[side] = {k: v for k, v in out[side].items() if k not in ("best_params", "outputs")}
    return out


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Character-level translation, numrnn vs PyTorch: validation loss and test "
        "chrF at equal steps, train and decoding speed.",
        epilog="Example: python benchmarks/translate.py --quick --json",
    )
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="TSV of source<TAB>target pairs (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, help="training steps (default: --epochs passes over the training pairs)"
    )
    parser.add_argument("--epochs", type=int, help="epochs when --steps is not given (16)")
    parser.add_argument("--cell", choices=("gru", "lstm", "rnn"), help="recurrent cell (gru)")
    parser.add_argument("--embed", type=int, help="embedding width of both sides (64)")
    parser.add_argument("--hidden", type=int, help="encoder units per direction (128)")
    parser.add_argument("--decoder-hidden", type=int, help="decoder units (256)")
    parser.add_argument(
        "--attention", choices=("general", "dot", "additive", "none"), help="attention kind (general)"
    )
    parser.add_argument("--batch-size", type=int, help="pairs per step (64)")
    parser.add_argument("--seed", type=int, help="seed of the split, batches and weights (0)")
    parser.add_argument("--decode-repeats", type=int, help="timed greedy runs per side (3)")
    parser.add_argument(
        "--beam-sentences", type=int, help="test sentences beam-decoded, 0 for all of them (0)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: encoder 32, decoder 64, embed 16, 2 epochs, beam on 20 sentences "
        "(options given explicitly still win)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args(argv)


def settings_from(args):
    return chosen_settings(
        args,
        DEFAULTS,
        QUICK,
        at_least_one=("embed", "hidden", "decoder_hidden", "batch_size", "epochs", "decode_repeats", "steps"),
        at_least_zero=("beam_sentences",),
    )


def resolve_steps(chosen, data):
    """--steps, or --epochs passes over the training pairs (read here: numpy only)."""
    epochs = chosen.pop("epochs")
    if chosen["steps"] is None:
        from numrnn.data import read_pairs, shuffled_split

        train = len(shuffled_split(len(read_pairs(data)), VAL_FRAC, TEST_FRAC, chosen["seed"])[0])
        chosen["steps"] = epochs * -(-train // chosen["batch_size"])
    return chosen


def main(argv=None):
    args = parse_args(argv)
    chosen = settings_from(args)
    data = Path(args.data).resolve()
    if not data.is_file():
        print(f"skipped: {data} not found; pass --data FILE (a TSV of source<TAB>target pairs)")
        return 0
    if chosen["attention"] == "dot" and chosen["decoder_hidden"] != 2 * chosen["hidden"]:
        raise SystemExit("error: --attention dot needs --decoder-hidden equal to 2 x --hidden")
    settings = Settings(data=str(data), **resolve_steps(chosen, data))
    torch_ver = package_version("torch")
    loads = {"start": load_average()}
    walls, rows = {}, {}
    with tempfile.TemporaryDirectory(prefix="numrnn-translate-") as tmp:
        checkpoint = str(Path(tmp) / "translate.safetensors")
        rows["numrnn"], walls["numrnn"] = run_in_own_process(run_numrnn, settings, checkpoint)
    if torch_ver is not None:
        n = rows["numrnn"]
        rows["PyTorch"], walls["PyTorch"] = run_in_own_process(
            run_torch, settings, n["best_params"], n["outputs"]
        )
    loads["end"] = load_average()
    summary = summarise(settings, rows, torch_ver, walls, loads)
    print(header_line(summary))
    print_table(
        COLUMNS,
        table_rows(summary),
        f"English -> French, characters: {settings.steps} steps; losses (nats per target char), "
        f"test chrF2 of the best-validation weights; speed",
        width=130,
    )
    for line in notes(summary):
        print(line)
    if args.json:
        print(json.dumps(json_ready(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
