"""The encoder-decoder network (numrnn.tasks.translate): masking, shapes and its errors.
Its gradients are checked against finite differences by tests/test_gradcheck.py."""

import numpy as np
import pytest

from numrnn.errors import ConfigError
from numrnn.model import ModelConfig
from numrnn.tasks.translate import Translator

F64_RTOL = 1e-10
F64_ATOL = 1e-12
V_SOURCE, V_TARGET = 7, 6
CELLS = ["rnn", "lstm", "gru"]
ATTENTIONS = ["none", "dot", "general", "additive"]


def make_translator(cell, attention, rng, *, bidirectional=True, layers=2, embed=4, decoder_hidden=0):
    config = ModelConfig(
        cell=cell,
        vocab_size=V_SOURCE,
        hidden=3,
        layers=layers,
        embed=embed,
        output_size=V_TARGET,
        bidirectional=bidirectional,
        attention=attention,
        decoder_hidden=decoder_hidden,
    )
    return Translator(config, np.float64).init_weights(rng)


def pad(sequences, fill):
    T = max(len(s) for s in sequences)
    out = np.full((T, len(sequences)), fill, np.intp)
    for b, s in enumerate(sequences):
        out[: len(s), b] = s
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_padded_batch_equals_each_pair_alone(cell, attention, bidirectional, rng):
    """Padding changes no loss and no gradient: source padding is skipped by the encoder and
    masked out of the attention, target padding is ignored."""
    model = make_translator(cell, attention, rng, bidirectional=bidirectional)
    sources = [rng.integers(0, V_SOURCE, n) for n in (5, 3, 3, 1)]  # longest first
    inputs = [rng.integers(0, V_TARGET + 1, n) for n in (2, 4, 1, 3)]  # V_TARGET: START
    outputs = [rng.integers(0, V_TARGET, len(t)) for t in inputs]
    lengths = np.array([len(s) for s in sources])
    result = model.loss_and_grad(pad(sources, 0), lengths, pad(inputs, 0), pad(outputs, -1))
    count = sum(len(t) for t in outputs)
    batch_total, batch_grads = result.loss * count, model.grads * count

    total, grads = 0.0, np.zeros_like(model.grads)
    for source, tokens, targets in zip(sources, inputs, outputs):
        alone = model.loss_and_grad(source[:, None], [len(source)], tokens[:, None], targets[:, None])
        total += alone.loss * len(targets)
        grads += model.grads * len(targets)
    assert batch_total == pytest.approx(total, rel=F64_RTOL)
    np.testing.assert_allclose(batch_grads, grads, rtol=F64_RTOL, atol=F64_ATOL)
    evaluated = model.loss(pad(sources, 0), lengths, pad(inputs, 0), pad(outputs, -1))
    assert evaluated.loss == pytest.approx(result.loss, rel=F64_RTOL)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_float32_close_to_float64(attention, rng):
    model = make_translator("gru", attention, rng)
    source, lengths = rng.integers(0, V_SOURCE, (6, 4)), np.array([6, 5, 5, 2])
    tokens, targets = rng.integers(0, V_TARGET + 1, (5, 4)), rng.integers(0, V_TARGET, (5, 4))
    single = Translator(model.config, np.float32)
    single.params[...] = model.params
    expected = model.loss_and_grad(source, lengths, tokens, targets)
    got = single.loss_and_grad(source, lengths, tokens, targets)
    assert got.loss == pytest.approx(expected.loss, rel=1e-5)
    np.testing.assert_allclose(single.grads, model.grads, rtol=1e-3, atol=1e-5)


def test_source_rows_must_come_longest_first(rng):
    model = make_translator("gru", "dot", rng)
    source, tokens = rng.integers(0, V_SOURCE, (4, 2)), rng.integers(0, V_TARGET, (3, 2))
    with pytest.raises(ValueError, match="longest first"):
        model.loss(source, [2, 4], tokens, tokens)
    with pytest.raises(ValueError, match="1..4"):
        model.loss(source, [5, 4], tokens, tokens)


def test_dot_attention_needs_equal_widths(rng):
    with pytest.raises(ConfigError, match="use general or additive"):
        make_translator("gru", "dot", rng, decoder_hidden=5)
    model = make_translator("gru", "general", rng, decoder_hidden=5)
    assert model.weights["attention.weight"].shape == (6, 5)  # (encoder outputs, decoder units)


def test_layout_names_its_parts(rng):
    model = make_translator("lstm", "additive", rng, layers=1)
    names = list(model.weights)
    assert names[0] == "encoder.embed.weight" and names[-1] == "head.bias"
    assert "encoder.rnn.weight_ih_l0_reverse" in names and "decoder.rnn.weight_hh_l0" in names
    assert {"bridge.h.weight", "bridge.c.weight", "attention.v", "combine.weight"} <= set(names)
    assert not any(name.startswith("attention") for name in make_translator("lstm", "none", rng).weights)


# --------------------------------------------------------------------------- the task

WORDS = ["ab", "abc", "ba", "cab", "bca", "a", "cc", "acb", "bb", "cba", "abca", "b"]


def reversal_pairs(tmp_path, count=60, seed=0):
    """A tiny translation: each source is a few words, its target the same reversed (capital)."""
    from numrnn.data import read_pairs

    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        source = " ".join(rng.choice(WORDS, rng.integers(1, 4)))
        lines.append(f"{source}\t{source[::-1].upper()}")
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return read_pairs(path)


def make_task(data, rng, *, attention="general", batch_size=8, split=None):
    from numrnn.data import shuffled_split
    from numrnn.tasks.translate import TranslateTask, build_vocabs

    split = split or shuffled_split(len(data), 0.2, 0.0, seed=0)
    source_vocab, target_vocab = build_vocabs(data, split[0])
    config = ModelConfig(
        cell="gru",
        vocab_size=len(source_vocab),
        hidden=12,
        layers=1,
        embed=8,
        output_size=len(target_vocab) - 1,
        bidirectional=True,
        attention=attention,
    )
    model = Translator(config).init_weights(rng)
    return TranslateTask(model, source_vocab, target_vocab, data, split, batch_size=batch_size, seed=3)


def test_task_batches_are_longest_source_first_and_count_target_characters(tmp_path, rng):
    data = reversal_pairs(tmp_path)
    task = make_task(data, rng)
    seen = []
    for position in range(task.steps_per_epoch):
        source, lengths, tokens, targets, rows = task.batch_at(0, position)
        assert (np.diff(lengths) <= 0).all() and source.shape == (lengths[0], len(rows))
        assert (tokens[0] == task.start).all()
        assert int((targets >= 0).sum()) == task.items_at(0, position)
        assert int((targets == task.end).sum()) == len(rows)
        seen += rows.tolist()
    assert sorted(seen) == sorted(task.train_rows.tolist())  # an epoch sees every pair once
    assert task.train_items == sum(len(data.targets[i]) + 1 for i in task.train_rows)
    assert [b.tolist() for b in task.epoch_batches(1)] != [b.tolist() for b in task.epoch_batches(0)]


def test_training_learns_the_pairs(tmp_path, rng):
    from tests.helpers import labelled_trainer, step_losses

    data = reversal_pairs(tmp_path, count=80)
    task = make_task(data, rng)
    first = task.evaluate().loss
    events = []
    result = labelled_trainer(task, tmp_path / "t.safetensors", events=events, max_steps=150).run()
    assert result.step == 150 and (tmp_path / "t.safetensors").exists()
    losses = [loss for _, loss in step_losses(events)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert task.evaluate().loss < 0.6 * first
    meta = task.meta()
    assert meta["translate"]["target_vocab"] == list(task.target_vocab.chars)
    assert meta["data"]["pairs"] == 80 and meta["split"]["train"] == len(task.train_rows)


def test_validation_pairs_the_vocabularies_cannot_read_are_left_out(tmp_path, rng):
    from numrnn.data import PairsData

    data = PairsData(["ab", "ba", "ab", "xy", "ab"], ["BA", "AB", "BA", "YX", "BQ"], 0, "d", False)
    split = (np.array([0, 1]), np.array([2, 3, 4]), np.array([], np.int64))
    task = make_task(data, rng, split=split)
    assert task.val_rows.tolist() == [2] and task.val_skipped == 2  # "xy": no known source; "BQ": Q unknown


@pytest.mark.parametrize("cell", CELLS)
def test_batches_of_changing_shapes_share_one_buffer(cell, rng):
    """Every (S, T, B) is carved from one arena: going back to a shape gives the same loss and
    gradients bit for bit, and the buffer is the largest workspace's, not the sum."""
    model = make_translator(cell, "additive", rng)
    a = (rng.integers(0, V_SOURCE, (5, 3)), [5, 4, 2], rng.integers(0, V_TARGET + 1, (4, 3)))
    b = (rng.integers(0, V_SOURCE, (7, 2)), [7, 1], rng.integers(0, V_TARGET + 1, (9, 2)))
    first = model.loss_and_grad(*a, a[2] % V_TARGET)
    grads = model.grads.copy()
    model.loss_and_grad(*b, b[2] % V_TARGET)
    size = model._arena.buffer.size
    again = model.loss_and_grad(*a, a[2] % V_TARGET)
    assert again.loss == first.loss
    np.testing.assert_array_equal(model.grads, grads)
    assert model._arena.buffer.size == size  # the smaller shape fits in what is there


def test_a_trained_translator_checkpoint_loads_and_computes_the_same_loss(tmp_path, rng):
    from numrnn.checkpoint import load_checkpoint
    from numrnn.errors import CheckpointError
    from tests.helpers import labelled_trainer
    from tests.test_checkpoint import rewrite_document

    data = reversal_pairs(tmp_path, count=40)
    task = make_task(data, rng, attention="dot")
    path = tmp_path / "t.safetensors"
    labelled_trainer(task, path, max_steps=6).run()
    loaded = load_checkpoint(path)
    assert loaded.task == "translate" and loaded.vocab.chars == task.vocab.chars
    assert loaded.target_vocab.chars == task.target_vocab.chars
    model = loaded.build_model()
    assert isinstance(model, Translator) and model.config == task.model.config
    np.testing.assert_array_equal(model.params, task.model.params)
    batch = task.batch_at(0, 0)[:4]
    assert model.loss(*batch).loss == task.model.loss(*batch).loss

    from click.testing import CliRunner

    from numrnn_cli.app import cli

    shown = CliRunner().invoke(cli, ["info", str(path)])
    assert shown.exit_code == 0, shown.output
    assert (
        "attention dot" in shown.output and "target vocabulary" in shown.output and "40 pairs" in shown.output
    )

    def drop_start(doc):
        doc["translate"]["target_vocab"] = doc["translate"]["target_vocab"][:-1]

    with pytest.raises(CheckpointError, match="START last"):
        load_checkpoint(rewrite_document(path, drop_start))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_decoding_steps_equal_the_teacher_forced_pass(cell, attention, rng):
    """Each greedy step's choice is the argmax of the teacher-forced logits over the greedy
    output, and its attention weights are that pass's (float64, rows of different lengths)."""
    model = make_translator(cell, attention, rng)
    model.params *= 3.0  # sharper distributions: fewer near-ties between the top two
    source, lengths = rng.integers(0, V_SOURCE, (6, 4)), np.array([6, 5, 3, 1])
    start, end = V_TARGET, V_TARGET - 1
    ids, ended, weights = model.greedy(source, lengths, start, end, max_length=7)
    steps = weights.shape[1]
    assert len(ids) == 4 and all(len(row) <= 7 for row in ids) and weights.shape == (4, steps, 6)
    outputs = np.full((steps, 4), end)
    for b, row in enumerate(ids):
        outputs[: len(row), b] = row
    tokens = np.concatenate([np.full((1, 4), start), outputs[:-1]])
    model.loss(source, lengths, tokens, outputs)
    ws = model._workspace(6, steps, 4)
    chosen = ws.logits.reshape(steps, 4, -1).argmax(axis=2)
    for b, row in enumerate(ids):
        n = len(row) + 1 if ended[b] else len(row)  # the END step counts
        np.testing.assert_array_equal(chosen[:n, b], outputs[:n, b])
        if attention != "none":
            np.testing.assert_allclose(weights[b, :n], ws.att.weights[b, :n], rtol=1e-10, atol=1e-12)
            assert not weights[b, :, lengths[b] :].any()  # padding gets no attention


@pytest.mark.parametrize("attention", ["none", "general", "additive"])
def test_beam_search_scores_are_the_hypotheses_log_probabilities(attention, rng):
    model = make_translator("lstm", attention, rng)
    model.params *= 3.0
    source, lengths = rng.integers(0, V_SOURCE, (6, 3)), np.array([6, 4, 2])
    start, end = V_TARGET, V_TARGET - 1
    one = model.beam_search(source, lengths, start, end, beam=1, max_length=8)
    ids, ended, _ = model.greedy(source, lengths, start, end, max_length=8)
    assert [r[0][0] for r in one] == ids and [r[0][3] for r in one] == ended.tolist()  # beam 1 is greedy

    results = model.beam_search(
        source, lengths, start, end, beam=4, max_length=8, alpha=0.7, n_best=4, keep_attention=True
    )
    for b, hypotheses in enumerate(results):
        assert len(hypotheses) == 4
        normalised = [h[1] for h in hypotheses]
        assert normalised == sorted(normalised, reverse=True)
        for ids_b, norm, logprob, has_ended, weights in hypotheses:
            steps = len(ids_b) + (1 if has_ended else 0)
            targets = np.array(ids_b + ([end] if has_ended else []))[:, None]
            tokens = np.array([start] + ids_b)[:steps, None]
            alone = model.loss(source[: lengths[b], b : b + 1], [lengths[b]], tokens, targets)
            assert logprob == pytest.approx(-alone.loss * steps, rel=1e-9)
            assert norm == pytest.approx(logprob / steps**0.7, rel=1e-12)
            if attention == "none":
                assert weights is None
            else:  # each character's attention is the teacher-forced pass's
                assert weights.shape == (steps, 6) and not weights[:, lengths[b] :].any()
                forced = model._workspace(lengths[b], steps, 1).att.weights[0]
                np.testing.assert_allclose(weights[:, : lengths[b]], forced, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n_best"):
        model.beam_search(source, lengths, start, end, beam=2, n_best=3)


def reference_beam(model, source, length, start, end, beam, max_length, alpha, n_best):
    """A plain beam search over one source row, every hypothesis scored by a teacher-forced
    pass over its prefix, run to max_length: (ids, normalised score, log-probability, ended)."""
    live, ended = [([], 0.0)], []
    for step in range(max_length):
        extensions = []
        for ids, score in live:
            tokens = np.array([start] + ids)[:, None]
            model.loss(source, [length], tokens, np.zeros_like(tokens))
            logits = model._workspace(length, len(tokens), 1).logits[-1].astype(np.float64)
            logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
            extensions += [(score + logp[v], ids + [v]) for v in range(len(logp))]
        extensions.sort(key=lambda e: -e[0])
        live = []
        for score, ids in extensions[:beam]:
            if ids[-1] == end:
                ended.append((ids[:-1], score / (step + 1) ** alpha, score, True))
            else:
                live.append((ids, score))
        if not live:
            break
    candidates = list(ended)
    if len(candidates) < n_best:
        candidates += [(ids, score / len(ids) ** alpha, score, False) for ids, score in live]
    candidates.sort(key=lambda c: -c[1])
    return candidates[:n_best]


@pytest.mark.parametrize(("alpha", "n_best"), [(0.0, 1), (0.0, 3), (1.0, 1), (0.6, 2)])
def test_beam_search_stops_rows_early_and_finds_what_a_full_search_finds(alpha, n_best, rng, monkeypatch):
    """Rows leave the batch once no live hypothesis can beat their n-best ended ones; the
    result is a plain beam search's run to the length limit, row by row."""
    model = make_translator("gru", "general", rng)
    model.params *= 3.0
    source, lengths = rng.integers(0, V_SOURCE, (6, 5)), np.array([6, 6, 4, 3, 1])
    start, end = V_TARGET, V_TARGET - 1
    model.weights["head.bias"][end] += 2.0  # END likely: searches end early
    shrunk = []
    original = model._decoding_rows
    monkeypatch.setattr(
        model,
        "_decoding_rows",
        lambda ws, rows, group: shrunk.append(rows.dtype == bool) or original(ws, rows, group),
    )
    results = model.beam_search(
        source, lengths, start, end, beam=3, max_length=12, alpha=alpha, n_best=n_best
    )
    assert any(shrunk), "no row stopped early"  # a bool mask: the batch shrank
    for b, hypotheses in enumerate(results):
        expected = reference_beam(
            model, source[: lengths[b], b : b + 1], lengths[b], start, end, 3, 12, alpha, n_best
        )
        assert [h[0] for h in hypotheses] == [e[0] for e in expected]
        assert [h[3] for h in hypotheses] == [e[3] for e in expected]
        np.testing.assert_allclose([h[1] for h in hypotheses], [e[1] for e in expected], rtol=1e-9)
        np.testing.assert_allclose([h[2] for h in hypotheses], [e[2] for e in expected], rtol=1e-9)
