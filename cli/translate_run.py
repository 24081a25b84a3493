"""The bodies of `numrnn translate train/run/eval`, imported only when one runs."""

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from numrnn.checkpoint import load_checkpoint
from numrnn.data import read_pairs, shuffled_split
from numrnn.errors import ConfigError, DataError
from numrnn.metrics import chrf
from numrnn.model import ModelConfig
from numrnn.tasks import generate, require_task, translate
from numrnn.tasks.examples import EncodedTexts
from numrnn_cli.console import closed_pipe_exit, out_console, warn, warn_dropped
from numrnn_cli.training import MODEL_OPTIONS
from numrnn_cli.training_run import TrainingCommand, recorded_data

SPLITS = ("train", "val", "test")
LIMITS = ("max_source_len", "max_target_len")
NOTHING_TO_TRAIN = (
    "no pair is left to train on after the length filters and the validation and test splits; "
    "raise --max-source-len/--max-target-len or lower --val-frac/--test-frac"
)

# --------------------------------------------------------------------------- train


def _read(path, options, resume):
    trained_reversed = bool(resume.meta.get("data", {}).get("reverse")) if resume is not None else False
    if resume is not None and options["reverse"] and not trained_reversed:
        raise ConfigError(
            f"--reverse contradicts the checkpoint, trained on {path}'s columns in order; leave "
            f"--reverse out to resume it"
        )
    data = read_pairs(path, reverse=options["reverse"] or trained_reversed)
    generate.check_reserved(data.targets, what=str(path))
    return data


def _limits(options, resume):
    """The length filters: the options', or on --resume the checkpoint's."""
    saved = resume.meta.get("translate", {}).get("limits", {}) if resume is not None else {}
    limits = {}
    for name in LIMITS:
        given, before = options[name], saved.get(name, 0)
        if resume is not None and given and given != before:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} {given} contradicts the checkpoint ({before or 'no limit'}), which fixed "
                f"the pairs it trains on; leave {flag} out to resume it"
            )
        limits[name] = given or before
    return limits


def _split(data, train_config, limits):
    """(train, val, test) rows, and the limits with how many pairs they left out: the
    filters apply to the training and validation pairs; the test split stays whole."""
    train, val, test = shuffled_split(
        len(data), train_config.val_frac, train_config.test_frac, train_config.seed
    )
    source_lengths = np.array([len(text) for text in data.sources])
    target_lengths = np.array([len(text) for text in data.targets])
    long_source = (
        source_lengths > limits["max_source_len"] if limits["max_source_len"] else np.zeros(len(data), bool)
    )
    long_target = (
        target_lengths > limits["max_target_len"] if limits["max_target_len"] else np.zeros(len(data), bool)
    )
    long_target &= ~long_source  # each pair counted once
    used = np.concatenate([train, val])
    counted = {
        **limits,
        "filtered_source": int(np.count_nonzero(long_source[used])),
        "filtered_target": int(np.count_nonzero(long_target[used])),
    }
    keep = ~(long_source | long_target)
    return (train[keep[train]], val[keep[val]], test), counted


def _new_model(data, options, train_config):
    (train_rows, _, _), _ = _split(data, train_config, _limits(options, None))
    if len(train_rows) == 0:
        raise DataError(NOTHING_TO_TRAIN)
    source_vocab, target_vocab = translate.build_vocabs(data, train_rows)
    config = ModelConfig(
        cell=options["cell"],
        vocab_size=len(source_vocab),
        hidden=options["hidden"],
        layers=options["layers"],
        embed=options["embed"],
        output_size=generate.output_size(target_vocab),
        dropout=options["dropout"],
        bidirectional=options["bidirectional"],
        attention=options["attention"],
        decoder_hidden=options["decoder_hidden"],
    )
    return source_vocab, config


def _prepare(path, data, vocab, options, train_config, resume):
    split, limits = _split(data, train_config, _limits(options, resume))
    if len(split[0]) == 0:
        raise DataError(f"{path}: {NOTHING_TO_TRAIN}")
    if resume is not None:
        target_vocab = resume.target_vocab
    else:
        target_vocab = translate.build_vocabs(data, split[0])[1]
    return {"path": path, "data": data, "split": split, "limits": limits, "target_vocab": target_vocab}


def _make_task(model, vocab, prepared, options, train_config, on_event):
    from numrnn.trainer import Notice

    task = translate.TranslateTask(
        model,
        vocab,
        prepared["target_vocab"],
        prepared["data"],
        prepared["split"],
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        split_meta={"path": str(Path(prepared["path"]).resolve())},
        limits=prepared["limits"],
    )
    if task.val_skipped:
        on_event(
            Notice(
                f"{task.val_skipped} validation pair(s) have characters no training pair has; "
                f"they are left out of the validation loss"
            )
        )
    return task


def _filter_note(limits):
    parts = []
    if limits["filtered_source"]:
        parts.append(
            f"{limits['filtered_source']:,} with a source over --max-source-len {limits['max_source_len']}"
        )
    if limits["filtered_target"]:
        parts.append(
            f"{limits['filtered_target']:,} with a target over --max-target-len {limits['max_target_len']}"
        )
    return "left out of training and validation: " + " and ".join(parts) if parts else None


def _describe(data, prepared):
    train, val, test = (len(rows) for rows in prepared["split"])
    notes = []
    if data.reverse:
        notes.append("columns swapped: the second is the source")
    if data.blank_lines:
        notes.append(f"{data.blank_lines:,} blank line{'' if data.blank_lines == 1 else 's'} skipped")
    lines = [
        f"{len(data):,} pairs from {prepared['path']}" + (f" ({', '.join(notes)})" if notes else ""),
        f"shuffled split: {train:,} training, {val:,} validation, {test:,} test pairs",
    ]
    note = _filter_note(prepared["limits"])
    return lines + ([note] if note else [])


def _summary(result, out, prepared):
    best = shlex.quote(str(result.best_out or out))
    lines = []
    if result.best_out is not None:
        lines.append(
            f"best greedy chrF {-result.best_selection:.1f} on the validation pairs (validation loss "
            f"{result.best_val_loss:.4f} nats/char) in {result.best_out}"
        )
    note = _filter_note(prepared["limits"])
    if note:
        lines.append(note)
    lines.append(f'translate with it: numrnn translate run -c {best} "TEXT"')
    lines.append(f"score it:          numrnn translate eval -c {best}")
    return lines


TRANSLATOR = TrainingCommand(
    task=translate.NAME,
    command="numrnn translate train",
    read=_read,
    new_model=_new_model,
    prepare=_prepare,
    make_task=_make_task,
    summary=_summary,
    describe=_describe,
    model_options=MODEL_OPTIONS + ("bidirectional", "attention", "decoder_hidden"),
    fixed_options=("val_frac", "test_frac", "seed"),
)


# --------------------------------------------------------------------------- shared by run and eval


def _load(checkpoint):
    loaded = load_checkpoint(checkpoint)
    require_task(loaded, translate.NAME)
    return loaded


def _decoding_limits(loaded, max_length):
    meta = loaded.meta.get("translate", {})
    return int(meta.get("max_source_len") or 0), int(max_length or meta.get("max_length") or 100)


def _encoded_sources(loaded, texts, truncate, *, what):
    """EncodedTexts of the source texts, unknown characters dropped (warned); sources over
    the model's limit are an error, or cut with --truncate (warned)."""
    limit, _ = _decoding_limits(loaded, None)
    sources = EncodedTexts(loaded.vocab, texts)
    warn_dropped(sources.dropped)
    if limit:
        long = np.flatnonzero(sources.lengths > limit)
        if len(long) and not truncate:
            first = texts[long[0]]
            raise DataError(
                f"{what} {_shorten(first)!r} has {sources.lengths[long[0]]} characters, more than the "
                f"{limit} of the longest source the model was trained on"
                + (f" ({len(long)} such sources)" if len(long) > 1 else "")
                + "; shorten it, or pass --truncate to cut it"
            )
        if len(long):
            warn(f"cut {len(long)} source(s) to their first {limit} characters (--truncate)")
            sources.lengths = np.minimum(sources.lengths, limit)
    return sources


def _shorten(text, width=60):
    return text if len(text) <= width else text[: width - 3] + "..."


def _warn_unended(translations, max_length):
    unended = sum(not row[0].ended for row in translations if row)
    if unended:
        warn(f"{unended} translation(s) reached --max-length {max_length} without ending and were cut there")


# --------------------------------------------------------------------------- run


def run_translate(
    checkpoint, texts, *, beam, alpha, n_best, max_length, truncate, show_attention, device="auto"
):
    loaded = _load(checkpoint)
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin]
        if not any(text.strip() for text in texts):
            raise DataError("no text on stdin; give one text per line")
    _, max_length = _decoding_limits(loaded, max_length)
    sources = _encoded_sources(loaded, texts, truncate, what="the source")
    rows = np.flatnonzero(sources.lengths > 0)
    for i in np.flatnonzero(sources.lengths == 0):
        if texts[i].strip():
            raise DataError(f"{texts[i]!r} has no character the model knows, so it cannot be translated")
    model = loaded.build_model(device)
    decoded = translate.decode(
        model,
        sources,
        rows,
        loaded.target_vocab,
        beam=beam,
        alpha=alpha,
        n_best=n_best,
        max_length=max_length,
        keep_attention=show_attention,
    )
    outputs = [[] for _ in texts]
    for row, translations in zip(rows, decoded):
        outputs[row] = translations
    console = out_console() if show_attention else None
    if show_attention and model.attention is None:
        warn("this model has no attention (trained with --attention none): there is no grid to show")
        console = None
    limit = _decoding_limits(loaded, None)[0]
    try:
        for text, translations in zip(texts, outputs):
            if n_best > 1:
                line = "\t".join(f"{t.text}\t{t.score:.4f}" for t in translations)
            else:
                line = translations[0].text if translations else ""
            sys.stdout.write(line + "\n")
            if console is not None and translations:
                sys.stdout.flush()
                best = translations[0]
                source = _visible_source(loaded.vocab, text, truncate, limit)
                console.print(attention_grid(source, best.text, best.attention, best.ended), crop=False)
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe_exit()
    _warn_unended(outputs, max_length)


def _visible_source(vocab, text, truncate, limit):
    """The source characters the model read (unknown ones dropped, cut at the limit)."""
    kept = "".join(char for char in text if char in vocab)
    return kept[:limit] if truncate and limit else kept


def attention_grid(source, output, weights, ended):
    """A rich Table: a row per output character (END last when it ended), a column per source
    character; each cell shaded by that output character's attention to that source
    character (the weights of a row sum to 1)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, padding=(0, 0), show_edge=False, show_header=True, pad_edge=False)
    table.add_column("", justify="right", no_wrap=True, style="bold")
    table.add_column("", width=1)  # between the labels and the grid
    for char in source:
        table.add_column(_label(char), justify="center", no_wrap=True, min_width=2)
    rows = list(output) + (["<end>"] if ended else [])
    for char, row in zip(rows, weights):
        cells = []
        for weight in row[: len(source)]:
            cells.append(_shade(float(weight)))
        table.add_row(Text(_label(char)), "", *cells)
    return table


_SHADES = " ░▒▓█"


def _shade(weight):
    from rich.text import Text

    glyph = _SHADES[min(int(weight * len(_SHADES)), len(_SHADES) - 1)]
    level = int(round(40 + 215 * weight))
    return Text(glyph * 2, style=f"rgb({level},{level},{max(level - 60, 0)})")


def _label(char):
    return {" ": "␣", "\t": "⇥"}.get(char, char) if len(char) == 1 else char


# --------------------------------------------------------------------------- eval


def run_eval(
    checkpoint, data_path, split_name, *, reverse, beam, alpha, max_length, truncate, as_json, device="auto"
):
    loaded = _load(checkpoint)
    recorded = loaded.meta.get("data", {})
    if data_path is None:
        data = recorded_data(
            loaded,
            lambda path: read_pairs(path, reverse=bool(recorded.get("reverse"))),
            "PAIRS",
            "other pairs",
        )
        split_name = split_name or "test"
        where = f"the {split_name} split of {recorded['path']}"
    else:
        data = read_pairs(data_path, reverse=bool(recorded.get("reverse")) if reverse is None else reverse)
        split_name = split_name or "all"
        where = str(data_path) if split_name == "all" else f"the {split_name} split of {data_path}"
    rows = np.arange(len(data))
    if split_name != "all":
        train = loaded.meta["train"]
        rows = shuffled_split(len(data), train["val_frac"], train.get("test_frac", 0.0), train["seed"])[
            SPLITS.index(split_name)
        ]
    if len(rows) == 0:
        raise DataError(
            f"{where} is empty (trained with --{split_name}-frac 0?); give PAIRS to score other pairs"
        )
    _, max_length = _decoding_limits(loaded, max_length)
    source_texts = [data.sources[i] for i in rows]
    references = [data.targets[i] for i in rows]
    sources = _encoded_sources(loaded, source_texts, truncate, what="the source")
    known = np.flatnonzero(sources.lengths > 0)
    if len(known) < len(rows):
        warn(f"{len(rows) - len(known)} pair(s) have no source character the model knows and are left out")
        references = [references[i] for i in known]
    target_vocab = loaded.target_vocab
    targets = EncodedTexts(target_vocab, [data.targets[i] for i in rows])
    whole = known[
        targets.lengths[known] == np.array([len(references[j]) for j in range(len(known))], np.intp)
    ]
    if len(whole) < len(known):
        warn(
            f"{len(known) - len(whole)} pair(s) have target characters the model cannot write: "
            f"they count in chrF and exact match, not in the loss"
        )
    model = loaded.build_model(device)
    start, end = generate.special_ids(target_vocab)
    loss, chars = translate.score(model, sources, targets, whole, start, end) if len(whole) else (None, 0)
    report = {
        "checkpoint": str(checkpoint),
        "data": where,
        "pairs": len(known),
        "loss": loss,
        "bpc": None if loss is None else loss / np.log(2),
        "loss_chars": chars,
        "max_length": max_length,
    }
    for name, width in (("greedy", 0), ("beam", beam)):
        began = time.perf_counter()
        decoded = translate.decode(
            model, sources, known, target_vocab, beam=width, alpha=alpha, max_length=max_length
        )
        elapsed = time.perf_counter() - began
        hypotheses = [row[0].text for row in decoded]
        report[name] = {
            "chrf": chrf(hypotheses, references),
            "exact_match": float(np.mean([h == r for h, r in zip(hypotheses, references)])),
            "unended": sum(not row[0].ended for row in decoded),
            "sentences_per_s": len(known) / elapsed if elapsed > 0 else None,
        }
        if width:
            report[name].update(beam=width, length_penalty=alpha)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    _print_report(report)


def _print_report(report):
    from rich.table import Table

    console = out_console()
    console.print(
        f"[bold]{report['checkpoint']}[/] on {report['data']}: {report['pairs']:,} pairs", soft_wrap=True
    )
    if report["loss"] is not None:
        console.print(
            f"loss {report['loss']:.4f} nats/char ({report['bpc']:.4f} bits/char), teacher-forced, over "
            f"{report['loss_chars']:,} target characters",
            soft_wrap=True,
        )
    table = Table(padding=(0, 2), box=None, pad_edge=False)
    for column in ("decoding", "chrF", "exact match", "sentences/s", "cut at max length"):
        table.add_column(column, justify="left" if column == "decoding" else "right", no_wrap=True)
    for name in ("greedy", "beam"):
        scores = report[name]
        label = name if name == "greedy" else f"beam {scores['beam']}, alpha {scores['length_penalty']:g}"
        rate = scores["sentences_per_s"]
        table.add_row(
            label,
            f"{scores['chrf']:.2f}",
            f"{scores['exact_match']:.1%}",
            "-" if rate is None else f"{rate:,.0f}",
            f"{scores['unended']:,}",
        )
    console.print(table, crop=False)
