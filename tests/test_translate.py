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
