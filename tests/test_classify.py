"""Many-to-one classification: padding changes nothing, class weights, batches, exact resume,
learning, and the one-to-one case (T = 1)."""

import numpy as np
import pytest

from numrnn.checkpoint import load_checkpoint
from numrnn.data import LabelledData, Vocab
from numrnn.model import ModelConfig
from numrnn.tasks.classify import Classifier, ClassifyTask, balanced_weights
from numrnn.tasks.examples import EncodedTexts, batch_order
from tests.helpers import labelled_trainer, step_losses

F64_RTOL = 1e-10
F64_ATOL = 1e-12
CELLS = ["rnn", "lstm", "gru"]
V, C = 7, 3


def make_classifier(cell, rng, *, bidirectional=False, layers=2, embed=4, dropout=0.0):
    config = ModelConfig(
        cell=cell,
        vocab_size=V,
        hidden=4,
        layers=layers,
        embed=embed,
        output_size=C,
        bidirectional=bidirectional,
        dropout=dropout,
    )
    model = Classifier(config, np.float64).init_weights(rng)
    model.params *= 1.5
    return model


def padded_batch(rng, lengths, pad):
    T = max(lengths)
    tokens = np.full((T, len(lengths)), pad)
    for b, length in enumerate(lengths):
        tokens[:length, b] = rng.integers(0, V, length)
    return tokens


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("embed", [0, 4])
def test_padding_changes_no_loss_prediction_or_gradient(cell, bidirectional, embed, rng):
    """A padded batch of rows of different lengths equals each row computed alone."""
    model = make_classifier(cell, rng, bidirectional=bidirectional, embed=embed)
    lengths = np.array([5, 1, 3, 5, 2])
    tokens = padded_batch(rng, lengths, pad=0)
    targets = rng.integers(0, C, len(lengths))
    batch = model.loss_and_grad(tokens, targets, lengths)
    batch_grads = model.grads.copy()
    batch_logits = model.logits(tokens, lengths)
    # Other padding values give the same numbers exactly.
    other = tokens.copy()
    for b, length in enumerate(lengths):
        other[length:, b] = rng.integers(0, V, other.shape[0] - length)
    assert model.loss_and_grad(other, targets, lengths).loss == batch.loss
    np.testing.assert_array_equal(model.grads, batch_grads)

    alone_loss, alone_grads = 0.0, np.zeros_like(batch_grads)
    for b, length in enumerate(lengths):
        one = tokens[:length, b : b + 1]
        result = model.loss_and_grad(one, targets[b : b + 1])
        alone_loss += result.loss / len(lengths)
        alone_grads += model.grads / len(lengths)
        np.testing.assert_allclose(model.logits(one)[0], batch_logits[b], rtol=F64_RTOL, atol=F64_ATOL)
        np.testing.assert_allclose(result.state.h, batch.state.h[:, b : b + 1], rtol=F64_RTOL, atol=F64_ATOL)
    assert batch.loss == pytest.approx(alone_loss, rel=F64_RTOL)
    np.testing.assert_allclose(batch_grads, alone_grads, rtol=1e-9, atol=F64_ATOL)


def test_shuffling_the_rows_permutes_the_predictions(rng):
    model = make_classifier("lstm", rng, bidirectional=True)
    lengths = np.array([4, 2, 6, 1])
    tokens = padded_batch(rng, lengths, pad=3)
    order = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(
        model.logits(tokens[:, order], lengths[order]),
        model.logits(tokens, lengths)[order],
        rtol=F64_RTOL,
        atol=F64_ATOL,
    )


def test_class_weights_weigh_each_row_as_torch_does(rng):
    model = make_classifier("gru", rng)
    lengths = np.array([3, 2, 3, 1])
    tokens = padded_batch(rng, lengths, pad=0)
    targets = np.array([0, 2, 2, 1])
    weights = np.array([0.5, 3.0, 1.25])
    weighted = model.loss_and_grad(tokens, targets, lengths, class_weights=weights)
    grads = model.grads.copy()
    expected_loss, expected_grads = 0.0, np.zeros_like(grads)
    total = weights[targets].sum()
    for b in range(len(lengths)):
        result = model.loss_and_grad(tokens[: lengths[b], b : b + 1], targets[b : b + 1])
        expected_loss += weights[targets[b]] * result.loss / total
        expected_grads += weights[targets[b]] * model.grads / total
    assert weighted.loss == pytest.approx(expected_loss, rel=F64_RTOL)
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-9, atol=F64_ATOL)


def test_balanced_weights_are_inverse_frequencies():
    np.testing.assert_allclose(balanced_weights(np.array([0, 0, 0, 1]), 3), [4 / 9, 4 / 3, 0.0])


def test_batch_order_covers_every_example_once_and_groups_similar_lengths():
    rng_lengths = np.random.default_rng(0).integers(1, 30, 1000)
    batches = batch_order(rng_lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32
    spread = np.mean([np.ptp(rng_lengths[b]) for b in batches])
    plain = batch_order(rng_lengths, 32, np.random.default_rng(1), bucket=1)
    assert spread < 0.5 * np.mean([np.ptp(rng_lengths[b]) for b in plain])
    again = batch_order(rng_lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_encoded_texts_pad_and_drop_unknown_characters():
    vocab = Vocab(list("abc"))
    encoded = EncodedTexts(vocab, ["ab", "cxa", "x"], [1, 0, 2])
    assert encoded.dropped == {"x": 2}
    np.testing.assert_array_equal(encoded.lengths, [2, 2, 0])
    tokens, targets, lengths = encoded.batch(np.array([1, 0]))
    np.testing.assert_array_equal(tokens, [[2, 0], [0, 1]])
    np.testing.assert_array_equal(targets, [0, 1])
    np.testing.assert_array_equal(lengths, [2, 2])


# --------------------------------------------------------------------------- training


def toy_data(n=120):
    """Names whose label is their first letter's group: learnable, of varied length."""
    rng = np.random.default_rng(3)
    starts = {0: "ab", 1: "cd", 2: "ef"}
    texts, labels = [], []
    for i in range(n):
        label = i % 3
        body = "".join(rng.choice(list("abcdefgh"), rng.integers(0, 6)))
        texts.append(rng.choice(list(starts[label])) + body)
        labels.append(label)
    return LabelledData(
        texts=texts,
        labels=np.array(labels),
        label_names=["x", "y", "z"],
        blank_lines=0,
        digest="toy",
        source="tsv",
    )


def make_trainer(tmp_path, name, *, model=None, rng=None, resume=None, events=None, **options):
    data = toy_data()
    vocab = Vocab.from_text("".join(data.texts))
    if model is None:
        config = ModelConfig(
            cell="gru",
            vocab_size=len(vocab),
            hidden=8,
            layers=2,
            embed=4,
            output_size=3,
            bidirectional=True,
            dropout=0.2,
        )
        rng = np.random.default_rng(0)
        model = Classifier(config).init_weights(rng)
    split = (np.arange(0, 96), np.arange(96, 108), np.arange(108, 120))
    task = ClassifyTask(model, vocab, data, split, batch_size=10, seed=4, balance=True)
    return labelled_trainer(
        task, tmp_path / f"{name}.safetensors", events=events, resume=resume, rng=rng, **options
    )


def test_resume_continues_exactly(tmp_path):
    """24 steps straight equal 13 steps, a checkpoint, and 11 more (across epoch ends)."""
    straight_events, split_events = [], []
    straight = make_trainer(tmp_path, "straight", events=straight_events, max_steps=24)
    straight.run()
    make_trainer(tmp_path, "split", events=split_events, max_steps=13).run()
    checkpoint = load_checkpoint(tmp_path / "split.safetensors")
    assert checkpoint.task == "classify" and checkpoint.labels == ["x", "y", "z"]
    resumed = make_trainer(
        tmp_path,
        "split",
        model=checkpoint.build_model(),
        rng=np.random.default_rng(99),
        resume=checkpoint,
        events=split_events,
        max_steps=24,
    )
    resumed.run()
    assert step_losses(split_events) == step_losses(straight_events)
    np.testing.assert_array_equal(resumed.model.params, straight.model.params)


def test_training_learns_a_separable_set(tmp_path):
    trainer = make_trainer(tmp_path, "learn", max_steps=150)
    trainer.run()
    score = trainer.task.evaluate()
    assert score.metrics["accuracy"] == 1.0 and score.loss < 0.1


def test_one_to_one_is_a_classifier_of_single_steps(rng):
    """T = 1: a plain network from one token to a class (here the token's parity)."""
    config = ModelConfig(cell="rnn", vocab_size=8, hidden=16, layers=1, embed=0, output_size=2)
    model = Classifier(config, np.float64).init_weights(rng)
    tokens = np.arange(8)[None, :]
    targets = np.arange(8) % 2
    params = model.params
    for _ in range(300):
        model.loss_and_grad(tokens, targets)
        params -= 0.5 * model.grads
    np.testing.assert_array_equal(model.probabilities(tokens).argmax(axis=1), targets)
