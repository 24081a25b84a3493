"""The label-conditioned generator: conditioning, padding, batches, resume, sampling."""

import numpy as np
import pytest

import numrnn.sampling as sampling
from numrnn.checkpoint import load_checkpoint, save_checkpoint
from numrnn.data import LabelledData, Vocab
from numrnn.errors import CheckpointError, ConfigError, DataError
from numrnn.gradcheck import DEFAULT_TOLERANCE, run_gradcheck
from numrnn.kernels import cpu
from numrnn.layers import Conditioning
from numrnn.model import Model, ModelConfig, model_layout
from numrnn.params import to_torch
from numrnn.sampling import ConditionalSampler, SampleConfig, unique_draw_limit
from numrnn.tasks import generate, require_task
from numrnn.tasks.generate import END, START, GenerateTask, build_vocab, sequences
from tests.helpers import labelled_trainer, step_losses

F64_RTOL = 1e-10
F64_ATOL = 1e-12
TORCH_RTOL = 1e-9
TORCH_ATOL = 1e-11
CELLS = ["rnn", "lstm", "gru"]
MODES = ["state", "input", "both"]
C = 3
NAMES = ["ab", "abba", "cab", "dacb", "bad", "a", "cc", "dabbac", "bcd", "ddd", "abcd", "ca"]
VOCAB = build_vocab(NAMES)
V = len(VOCAB)


def make_model(cell, rng, mode="both", *, layers=2, embed=4, hidden=5, dtype=np.float64):
    config = ModelConfig(
        cell=cell,
        vocab_size=V,
        hidden=hidden,
        layers=layers,
        embed=embed,
        output_size=V - 1,
        condition=mode,
        condition_classes=C,
    )
    model = Model(config, dtype).init_weights(rng)
    model.params *= 1.5  # beyond PyTorch's scale, so every path carries weight
    return model


def name_batch(rng, B=5, T=6):
    """A random padded batch: tokens (T, B), targets (T, B) with -1 after each row's end,
    labels (B) with repeats, lengths (B)."""
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    tokens = rng.integers(0, V, (T, B))
    targets = rng.integers(0, V - 1, (T, B))
    targets[np.arange(T)[:, None] >= lengths[None, :]] = -1
    labels = rng.integers(0, C, B)
    labels[1] = labels[0]
    return tokens, targets, labels, lengths


# --------------------------------------------------------------------------- config and layout


def test_config_validates_the_conditioning_fields():
    with pytest.raises(ConfigError, match="condition must be one of"):
        ModelConfig(condition="label").validate()
    with pytest.raises(ConfigError, match="condition_classes must be at least 1"):
        ModelConfig(condition="state").validate()
    with pytest.raises(ConfigError, match="condition_classes must be 0"):
        ModelConfig(condition_classes=3).validate()
    with pytest.raises(ConfigError, match="bidirectional"):
        ModelConfig(condition="input", condition_classes=2, bidirectional=True).validate()


@pytest.mark.parametrize("cell", CELLS)
def test_conditioning_entries_come_last_and_leave_the_rest_as_unconditioned(cell):
    plain = ModelConfig(cell=cell, vocab_size=V, hidden=5, layers=2, embed=4)
    base = model_layout(plain).names()
    assert not any(name.startswith("cond.") for name in base)
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    for mode, extra in (
        ("state", ["cond.h0"] + (["cond.c0"] if cell == "lstm" else [])),
        ("input", ["cond.input"]),
        ("both", ["cond.h0"] + (["cond.c0"] if cell == "lstm" else []) + ["cond.input"]),
    ):
        layout = model_layout(
            ModelConfig(
                cell=cell, vocab_size=V, hidden=5, layers=2, embed=4, condition=mode, condition_classes=C
            )
        )
        assert layout.names() == base + extra
        if "cond.h0" in extra:
            assert layout.slots["cond.h0"].shape == (C, 2, 5)
        if "cond.input" in extra:
            assert layout.slots["cond.input"].shape == (C, gates * 5)
    # The shared layers draw the same initial weights with and without conditioning.
    conditioned = Model(
        ModelConfig(
            cell=cell, vocab_size=V, hidden=5, layers=2, embed=4, condition="both", condition_classes=C
        )
    )
    conditioned.init_weights(np.random.default_rng(0))
    unconditioned = Model(plain).init_weights(np.random.default_rng(0))
    for name in base:
        np.testing.assert_array_equal(conditioned.weights[name], unconditioned.weights[name])


def test_labels_are_required_by_and_only_by_a_conditioned_model(rng):
    model = make_model("gru", rng)
    tokens, targets, labels, _ = name_batch(rng)
    with pytest.raises(ValueError, match="needs labels"):
        model.loss(tokens, targets)
    with pytest.raises(ValueError, match="labels must be 5 ids in 0..2"):
        model.loss(tokens, targets, labels=np.full(5, C))
    plain = Model(ModelConfig(cell="gru", vocab_size=V, hidden=5, layers=1, embed=4), np.float64)
    with pytest.raises(ValueError, match="condition none"):
        plain.loss(tokens, targets, labels=labels)


# --------------------------------------------------------------------------- what conditioning is


@pytest.mark.parametrize("cell", CELLS)
def test_input_conditioning_is_a_per_label_input_bias(cell, rng):
    """With every row of one label, "input" equals the unconditioned model with bias_ih_l0 +
    cond.input[label]; the row's gradient is that bias's gradient."""
    model = make_model(cell, rng, "input")
    label = 1
    tokens, targets, _, _ = name_batch(rng)
    labels = np.full(tokens.shape[1], label)
    result = model.loss_and_grad(tokens, targets, labels=labels)
    dinput = model.dweights["cond.input"].copy()

    plain = Model(
        ModelConfig(cell=cell, vocab_size=V, hidden=5, layers=2, embed=4, output_size=V - 1), np.float64
    )
    for name in plain.weights:
        plain.weights[name][...] = model.weights[name]
    plain.weights["rnn.bias_ih_l0"] += model.weights["cond.input"][label]
    expected = plain.loss_and_grad(tokens, targets)
    assert result.loss == pytest.approx(expected.loss, rel=F64_RTOL)
    np.testing.assert_allclose(dinput[label], plain.dweights["rnn.bias_ih_l0"], rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_array_equal(np.delete(dinput, label, axis=0), 0.0)
    for name in plain.dweights:
        np.testing.assert_allclose(
            model.dweights[name], plain.dweights[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name
        )


@pytest.mark.parametrize("cell", CELLS)
def test_state_conditioning_is_a_learnt_initial_state_per_label(cell, rng):
    model = make_model(cell, rng, "state")
    tokens, targets, labels, _ = name_batch(rng)
    result = model.loss_and_grad(tokens, targets, labels=labels)
    grads = {name: model.dweights[name].copy() for name in model.dweights}

    state = model.initial_state(labels)
    np.testing.assert_array_equal(state.h, model.weights["cond.h0"][labels].transpose(1, 0, 2))
    given = model.loss_and_grad(tokens, targets, state.copy(), labels=labels)
    assert result.loss == given.loss
    for name, table in (("h", "cond.h0"), ("c", "cond.c0")):
        if table not in grads:
            continue
        expected = np.zeros_like(grads[table])
        np.add.at(expected, labels, getattr(given.dstate, name).transpose(1, 0, 2))
        np.testing.assert_allclose(grads[table], expected, rtol=F64_RTOL, atol=F64_ATOL)
        # A state given explicitly is an input: the tables get nothing then.
        np.testing.assert_array_equal(model.dweights[table], 0.0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("embed", [0, 4])
def test_loss_and_gradients_match_torch(cell, mode, embed, rng):
    """The label as torch would take it: one-hot columns appended to layer 0's input (their
    weights are cond.input) and each row's learnt initial state indexed from a table."""
    torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")
    import torch.nn.functional as F
    from torch.func import functional_call

    model = make_model(cell, rng, mode, embed=embed)
    tokens, targets, labels, _ = name_batch(rng)
    result = model.loss_and_grad(tokens, targets, labels=labels)

    cfg = model.config
    RNN = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = RNN(cfg.layer_input_width(0) + C, cfg.hidden, num_layers=cfg.layers, dtype=torch.float64)
    weights = {
        name: torch.tensor(value, requires_grad=True) for name, value in to_torch(model.weights).items()
    }
    G = cfg.gate_width
    cond_input = weights.get("cond.input", torch.zeros(C, G, dtype=torch.float64))
    params = {}
    for name, _ in rnn.named_parameters():
        params[name] = weights[f"rnn.{name}"]
    params["weight_ih_l0"] = torch.cat([weights["rnn.weight_ih_l0"], cond_input.T], dim=1)
    tok = torch.from_numpy(tokens)
    x = weights["embed.weight"][tok] if embed else F.one_hot(tok, V).double()
    onehot = F.one_hot(torch.from_numpy(labels), C).double()
    x = torch.cat([x, onehot[None].expand(tokens.shape[0], -1, -1)], dim=2)
    zeros = torch.zeros(cfg.layers, len(labels), cfg.hidden, dtype=torch.float64)
    lab = torch.from_numpy(labels)
    h0 = weights["cond.h0"][lab].transpose(0, 1) if "cond.h0" in weights else zeros
    state = h0
    if cell == "lstm":
        state = (h0, weights["cond.c0"][lab].transpose(0, 1) if "cond.c0" in weights else zeros)
    out, _ = functional_call(rnn, params, (x, state))
    logits = out @ weights["head.weight"].T + weights["head.bias"]
    loss = F.cross_entropy(logits.reshape(-1, V - 1), torch.from_numpy(targets).reshape(-1), ignore_index=-1)
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=TORCH_RTOL)
    mine = to_torch(model.dweights)
    assert set(mine) == set(weights)
    for name, tensor in weights.items():
        np.testing.assert_allclose(
            mine[name], tensor.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL, err_msg=name
        )


# --------------------------------------------------------------------------- padding


def encoded_names(names, labels):
    from numrnn.tasks.examples import EncodedTexts

    return EncodedTexts(VOCAB, names, labels)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True])
def test_a_padded_shuffled_batch_equals_each_name_alone(cell, mode, packed, rng):
    """packed: rows sorted longest first with their lengths, as the task batches them (the
    padded steps are skipped); otherwise shuffled rows computed through their padding."""
    model = make_model(cell, rng, mode)
    labels = rng.integers(0, C, len(NAMES))
    encoded = encoded_names(NAMES, labels)
    start, end = generate.special_ids(VOCAB)
    rows = rng.permutation(len(NAMES))[:7]
    if packed:
        rows = rows[np.argsort([-len(NAMES[r]) for r in rows], kind="stable")]
    tokens, targets, batch_labels = sequences(encoded, rows, start, end)
    assert (targets == end).sum() == len(rows)
    assert (targets >= 0).sum() == sum(len(NAMES[r]) + 1 for r in rows)
    lengths = generate.steps_of(targets) if packed else None
    result = model.loss_and_grad(tokens, targets, labels=batch_labels, lengths=lengths)
    count = int((targets >= 0).sum())
    batch_total, batch_grads = result.loss * count, model.grads * count

    total, grads = 0.0, np.zeros_like(model.grads)
    for row in rows:
        name = NAMES[row]
        alone_tokens = np.array([start] + [VOCAB.index[ch] for ch in name])[:, None]
        alone_targets = np.array([VOCAB.index[ch] for ch in name] + [end])[:, None]
        alone = model.loss_and_grad(alone_tokens, alone_targets, labels=labels[[row]])
        total += alone.loss * len(alone_targets)
        grads += model.grads * len(alone_targets)
    assert batch_total == pytest.approx(total, rel=F64_RTOL)
    np.testing.assert_allclose(batch_grads, grads, rtol=F64_RTOL, atol=F64_ATOL)


def test_sequences_start_with_start_and_end_with_end():
    encoded = encoded_names(["ab", "dacb", "c"], [0, 2, 1])
    start, end = generate.special_ids(VOCAB)
    tokens, targets, labels = sequences(encoded, np.array([1, 0, 2]), start, end)
    i = VOCAB.index
    assert tokens[:, 0].tolist() == [start, i["d"], i["a"], i["c"], i["b"]]
    assert targets[:, 0].tolist() == [i["d"], i["a"], i["c"], i["b"], end]
    assert tokens[:3, 1].tolist() == [start, i["a"], i["b"]]
    assert targets[:, 1].tolist() == [i["a"], i["b"], end, -1, -1]
    assert targets[:, 2].tolist() == [i["c"], end, -1, -1, -1]
    assert labels.tolist() == [2, 0, 1]


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_the_characters_then_end_then_start():
    vocab = build_vocab(["ba", "ca"])
    assert vocab.chars == ["a", "b", "c", END, START]
    assert generate.output_size(vocab) == 4
    assert generate.special_ids(vocab) == (4, 3)
    with pytest.raises(DataError, match="U\\+0002.*'c\\\\x02d'.*reserved"):
        build_vocab(["ab", "c\x02d"])
    with pytest.raises(DataError, match="no start and end tokens"):
        generate.special_ids(Vocab("abc"))


# --------------------------------------------------------------------------- gradcheck


def test_gradcheck_catches_a_conditioning_gradient_that_overwrites_instead_of_adding(monkeypatch):
    def overwrite(self, k, dw, labels, dstate):
        for state, name in self.state_names.items():
            dw[name][labels] = dstate[state].transpose(1, 0, 2)  # repeated labels: last wins

    monkeypatch.setattr(Conditioning, "state_backward", overwrite)
    report = run_gradcheck(cells=("gru",), layer_counts=(1,), losses=("generate",))
    assert [row.tensor for row in report.rows if not row.ok] == ["cond.h0"]


def test_gradcheck_checks_every_conditioning_table():
    report = run_gradcheck(cells=("lstm",), layer_counts=(1,), losses=("generate",))
    assert {"cond.h0", "cond.c0", "cond.input", "embed.weight"} <= {row.tensor for row in report.rows}
    assert report.ok and report.worst() < DEFAULT_TOLERANCE


# --------------------------------------------------------------------------- training


def toy_data():
    """Three labels whose names start with their own letter: learnable, of varied length."""
    rng = np.random.default_rng(3)
    texts, labels = [], []
    for i in range(90):
        label = i % 3
        texts.append("xyz"[label] + "".join(rng.choice(list("abcd"), rng.integers(0, 6))))
        labels.append(label)
    return LabelledData(
        texts=texts,
        labels=np.array(labels),
        label_names=["X", "Y", "Z"],
        blank_lines=0,
        digest="toy",
        source="tsv",
    )


def make_trainer(
    tmp_path,
    name,
    *,
    model=None,
    rng=None,
    resume=None,
    events=None,
    cell="lstm",
    mode="both",
    dropout=0.2,
    **options,
):
    data = toy_data()
    split = (np.arange(0, 78), np.arange(78, 90), np.arange(0))
    vocab = build_vocab([data.texts[i] for i in split[0]])
    if model is None:
        config = ModelConfig(
            cell=cell,
            vocab_size=len(vocab),
            hidden=12,
            layers=2,
            embed=4,
            output_size=len(vocab) - 1,
            dropout=dropout,
            condition=mode,
            condition_classes=3,
        )
        rng = np.random.default_rng(0)
        model = Model(config).init_weights(rng)
    task = GenerateTask(model, vocab, data, split, batch_size=10, seed=4)
    return labelled_trainer(
        task, tmp_path / f"{name}.safetensors", events=events, resume=resume, rng=rng, **options
    )


@pytest.mark.parametrize("cell, mode", [("lstm", "both"), ("gru", "state")])
def test_resume_continues_exactly(tmp_path, cell, mode):
    """20 steps straight equal 10 steps, a checkpoint, and 10 more (across epoch ends)."""
    straight_events, split_events = [], []
    straight = make_trainer(tmp_path, "straight", events=straight_events, max_steps=20, cell=cell, mode=mode)
    straight.run()
    make_trainer(tmp_path, "split", events=split_events, max_steps=10, cell=cell, mode=mode).run()
    checkpoint = load_checkpoint(tmp_path / "split.safetensors")
    assert checkpoint.task == "generate" and checkpoint.labels == ["X", "Y", "Z"]
    assert checkpoint.meta["generate"] == {"condition": mode, "start": START, "end": END}
    resumed = make_trainer(
        tmp_path,
        "split",
        model=checkpoint.build_model(),
        rng=np.random.default_rng(99),
        resume=checkpoint,
        events=split_events,
        max_steps=20,
    )
    resumed.run()
    assert step_losses(split_events) == step_losses(straight_events)
    np.testing.assert_array_equal(resumed.model.params, straight.model.params)


def test_training_learns_the_labels_first_letter(tmp_path):
    trainer = make_trainer(tmp_path, "learn", max_steps=120, dropout=0.0)
    before = trainer.task.evaluate().loss
    trainer.run()
    score = trainer.task.evaluate()
    assert score.unit == "chars" and score.metrics["bpc"] == pytest.approx(score.loss / np.log(2))
    assert score.loss < 0.75 * before
    sampler = ConditionalSampler(trainer.model, trainer.task.vocab, START, END)
    names = [
        text
        for text, _ in sampler.texts(
            2, 20, SampleConfig(length=10, temperature=0.5), np.random.default_rng(0)
        )
    ]
    assert sum(name.startswith("z") for name in names) >= 18


def test_validation_names_with_unknown_characters_are_left_out(tmp_path):
    data = toy_data()
    data.texts[80] = "zq"  # q is in no training name
    vocab = build_vocab([data.texts[i] for i in range(78)])
    config = ModelConfig(
        cell="gru",
        vocab_size=len(vocab),
        hidden=4,
        layers=1,
        embed=0,
        output_size=len(vocab) - 1,
        condition="input",
        condition_classes=3,
    )
    task = GenerateTask(
        Model(config), vocab, data, (np.arange(78), np.arange(78, 90), np.arange(0)), batch_size=8, seed=0
    )
    assert task.val_skipped == 1 and 80 not in task.val_rows
    assert task.val_items == sum(len(data.texts[i]) + 1 for i in task.val_rows)


# --------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def trained_sampler():
    rng = np.random.default_rng(5)
    model = make_model("lstm", rng, "both", hidden=16)
    return ConditionalSampler(model, VOCAB, START, END)


def names(sampler, label=0, count=30, seed=0, prefix="", **settings):
    config = SampleConfig(**{"length": 12, **settings})
    return list(sampler.texts(label, count, config, np.random.default_rng(seed), prefix))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
def test_greedy_samples_follow_the_training_forward_and_end_at_the_end_token(cell, mode, rng):
    """Each greedy name is the argmax path of the training forward (labels and all), and the
    forward's argmax after its last character is the end token."""
    model = make_model(cell, rng, mode, hidden=8)
    model.params *= 2.0
    sampler = ConditionalSampler(model, VOCAB, START, END)
    start, end = generate.special_ids(VOCAB)
    for label in range(C):
        for prefix in ("", "c"):
            ((text, ended),) = sampler.texts(
                label, 1, SampleConfig(length=30, argmax=True), np.random.default_rng(0), prefix
            )
            ids = [start] + [VOCAB.index[ch] for ch in text]
            T = len(ids)
            model.loss(np.array(ids)[:, None], np.zeros((T, 1), int), labels=np.array([label]))
            logits = model._workspace(T, 1).logits
            predicted = logits.argmax(axis=1)
            drawn = ids[1 + len(prefix) :]
            assert predicted[len(prefix) : T - 1].tolist() == drawn
            if ended:
                assert predicted[T - 1] == end
            else:
                assert len(drawn) == 30


def test_samples_end_by_themselves_and_hold_no_special_token(trained_sampler):
    drawn = names(trained_sampler, count=200, length=50)
    assert all(ended for _, ended in drawn[:150]) or sum(ended for _, ended in drawn) > 150
    assert all(START not in text and END not in text for text, _ in drawn)
    assert all(len(text) <= 50 for text, _ in drawn)
    cut = names(trained_sampler, count=200, length=2)
    assert all(len(text) <= 2 for text, _ in cut)
    assert any(not ended for _, ended in cut)


def test_the_start_token_is_never_drawn(rng):
    model = make_model("gru", rng, "input", hidden=4)
    start, _ = generate.special_ids(VOCAB)
    assert model.config.outputs == start  # the head has no output for it
    drawn = names(ConditionalSampler(model, VOCAB, START, END), count=300, temperature=5.0)
    assert not any(START in text for text, _ in drawn)


def test_same_seed_same_names_other_seed_other_names(trained_sampler):
    assert names(trained_sampler, seed=3) == names(trained_sampler, seed=3)
    assert names(trained_sampler, seed=3) != names(trained_sampler, seed=4)
    assert names(trained_sampler, label=1, seed=3) != names(trained_sampler, label=2, seed=3)


def test_calls_of_any_size_give_the_same_names(trained_sampler, monkeypatch):
    expected = names(trained_sampler, count=10, seed=7, top_k=3, top_p=0.9)
    monkeypatch.setattr(sampling, "SEQUENCES_PER_CALL", 3)
    assert names(trained_sampler, count=10, seed=7, top_k=3, top_p=0.9) == expected


def test_start_text_begins_every_sample(trained_sampler):
    drawn = names(trained_sampler, prefix="dab", count=20)
    assert all(text.startswith("dab") for text, _ in drawn)
    assert len({text for text, _ in drawn}) > 1


def test_distinct_draws_until_enough_distinct_and_leaves_out_the_excluded(trained_sampler):
    config = SampleConfig(length=12)
    kept, drawn, _ = trained_sampler.distinct(0, 15, config, np.random.default_rng(0))
    assert len(kept) == 15 == len(set(kept)) and drawn >= 15
    excluded = set(kept[:5])
    again, _, _ = trained_sampler.distinct(0, 15, config, np.random.default_rng(0), exclude=excluded)
    assert len(again) == 15 and not excluded & set(again)
    # Greedy gives one name only: the draws stop at the limit.
    greedy = SampleConfig(length=12, argmax=True)
    kept, drawn, _ = trained_sampler.distinct(0, 4, greedy, np.random.default_rng(0))
    assert len(kept) == 1 and drawn == unique_draw_limit(4)
    kept, _, _ = trained_sampler.distinct(0, 4, greedy, np.random.default_rng(0), exclude={kept[0]})
    assert kept == []


def test_sampler_checks_its_arguments(trained_sampler):
    with pytest.raises(ValueError, match="label must be an id in 0..2"):
        names(trained_sampler, label=3)
    with pytest.raises(ValueError, match="prefix_ids must lie"):
        trained_sampler.generate(0, 1, SampleConfig(length=3), np.random.default_rng(0), [99])
    plain = Model(ModelConfig(cell="gru", vocab_size=V, hidden=4, layers=1, embed=0))
    with pytest.raises(ConfigError, match="not conditioned"):
        ConditionalSampler(plain, VOCAB, START, END)


def test_generate_until_stores_no_stop_token_and_counts_up_to_it(rng):
    model = make_model("rnn", rng, "input", hidden=4, layers=1)
    weights = sampling.kernel_weights(model)
    cfg = model.config
    L, H, G, K = cfg.layers, cfg.hidden, cfg.gate_width, cfg.outputs
    out, lengths = np.full((50, 6), -7, np.int64), np.zeros(50, np.int64)
    h0 = rng.uniform(-0.5, 0.5, (L, H))
    cpu.generate_until(
        out,
        lengths,
        np.zeros(K),
        np.zeros((L, H)),
        np.zeros((L, H)),
        h0,
        np.zeros((L, H)),
        0,
        rng.random((50, 6)),
        3.0,
        0,
        1.0,
        False,
        2,
        cpu.CELL_CODES["rnn"],
        weights,
        np.zeros((1, G)),
        np.zeros((1, G)),
        np.zeros(K),
        np.zeros(K),
    )
    assert (lengths < 6).any() and (lengths == 6).any()
    for row, n in zip(out, lengths):
        assert 2 not in row[:n].tolist() and (row[n:] == -7).all()


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_of_generators_are_checked(tmp_path, rng):
    model = make_model("gru", rng, "both", dtype=np.float32)
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, model, VOCAB, meta={"task": "generate", "labels": ["A", "B", "C"]})
    loaded = load_checkpoint(path)
    require_task(loaded, "generate")
    np.testing.assert_array_equal(loaded.build_model().params, model.params)
    with pytest.raises(
        CheckpointError,
        match="is a label-conditioned generator, not a character "
        "language model; use it with numrnn generate sample",
    ):
        require_task(loaded, "char-lm")
    save_checkpoint(path, model, VOCAB, meta={"task": "generate", "labels": ["A", "B"]})
    with pytest.raises(CheckpointError, match="2 labels, but the model is conditioned on 3"):
        load_checkpoint(path)
    save_checkpoint(path, model, VOCAB, meta={"task": "char-lm"})
    with pytest.raises(CheckpointError, match="not conditioned on a label"):
        load_checkpoint(path)
