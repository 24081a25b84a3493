"""Level 5: PyTorch parity of the encoder-decoder. numrnn's ``Translator`` and its PyTorch twin
(``benchmarks.twins.Translator``, the model benchmarks/translate.py trains and decodes next to
numrnn) hold the same weights and give the same teacher-forced loss and gradients, the same
greedy translations, and the same n-best beam hypotheses and scores (float64). Skipped when
torch is not installed."""

import numpy as np
import pytest

from numrnn.model import ModelConfig
from numrnn.params import to_torch, torch_shapes
from numrnn.tasks.translate import Translator

torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")

from benchmarks.twins import Translator as TwinTranslator  # noqa: E402  (imports torch)

RTOL = 1e-10  # losses, scores
GRAD_RTOL = 1e-9
GRAD_ATOL = 1e-12
V_SOURCE, V_TARGET = 7, 6  # target ids: 0..5 the head's outputs, END among them; 6 START
START, END = V_TARGET, V_TARGET - 1

# (cell, attention, bidirectional, layers): what the benchmark uses (gru, general,
# bidirectional), its neighbours, and one case each of the other kinds, cells and depths.
CASES = [
    (cell, attention, bidirectional, 1)
    for cell in ("gru", "lstm")
    for attention in ("general", "none")
    for bidirectional in (True, False)
] + [
    ("gru", "additive", True, 1),
    ("lstm", "dot", False, 1),
    ("rnn", "general", True, 2),
    ("lstm", "general", True, 2),
]
IDS = [f"{c}-{a}-{'bi' if b else 'uni'}-L{n}" for c, a, b, n in CASES]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny shapes: torch on one thread. With two, torch's OpenMP workers and numba's (after
    a prange kernel ran) spin against each other, and each torch call took ~8 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pair(cell, attention, bidirectional, layers, rng, end_bias=0.0):
    """A random float64 translator and its twin. end_bias raises END's head bias, so that
    decoding ends early on some rows and runs to the limit on others."""
    config = ModelConfig(
        cell=cell,
        vocab_size=V_SOURCE,
        hidden=3,
        layers=layers,
        embed=4,
        output_size=V_TARGET,
        bidirectional=bidirectional,
        attention=attention,
        decoder_hidden=0 if attention == "dot" else 5,
    )
    model = Translator(config, np.float64).init_weights(rng)
    model.weights["head.bias"][END] += end_bias
    return model, TwinTranslator.from_numrnn(model)


def long(a):
    return torch.from_numpy(np.asarray(a, np.int64))


def batch(rng):
    """A padded batch, sources longest first, targets of mixed lengths (-1 past their end)."""
    lengths = np.array([6, 5, 5, 3, 1])
    source = np.zeros((6, 5), np.intp)
    tokens = np.zeros((5, 5), np.intp)
    targets = np.full((5, 5), -1, np.intp)
    for b, (n, m) in enumerate(zip(lengths, (5, 2, 4, 1, 3))):
        source[:n, b] = rng.integers(0, V_SOURCE, n)
        targets[:m, b] = rng.integers(0, V_TARGET, m)
        tokens[0, b] = START
        tokens[1:m, b] = targets[: m - 1, b]
    return source, lengths, tokens, targets


@pytest.mark.parametrize("cell,attention,bidirectional,layers", CASES, ids=IDS)
def test_same_weights_same_loss_and_gradients(cell, attention, bidirectional, layers, rng):
    model, twin = make_pair(cell, attention, bidirectional, layers, rng)
    source, lengths, tokens, targets = batch(rng)
    result = model.loss_and_grad(source, lengths, tokens, targets)
    evaluated = model.loss(source, lengths, tokens, targets)
    loss = twin.loss(long(source), long(lengths), long(tokens), long(targets))
    loss.backward()

    assert result.loss == pytest.approx(loss.item(), rel=RTOL)
    assert evaluated.loss == pytest.approx(loss.item(), rel=RTOL)
    grads = twin.numrnn_tensors(grads=True)
    assert set(grads) == set(model.dweights)
    for name, grad in grads.items():
        np.testing.assert_allclose(model.dweights[name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


@pytest.mark.parametrize("cell,attention,bidirectional,layers", CASES[:2], ids=IDS[:2])
def test_twin_names_and_shapes_are_numrnns(cell, attention, bidirectional, layers, rng):
    model, twin = make_pair(cell, attention, bidirectional, layers, rng)
    assert list(twin.state_dict()) == list(to_torch(model.weights))
    weights = twin.numrnn_tensors()
    for name, value in model.weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


@pytest.mark.parametrize("cell,attention,bidirectional,layers", CASES, ids=IDS)
def test_checkpoints_hold_the_twins_pytorch_tensors(cell, attention, bidirectional, layers, rng):
    """to_torch (what a checkpoint stores) gives the twin's state_dict, tensor for tensor."""
    model, twin = make_pair(cell, attention, bidirectional, layers, rng)
    state = {name: p.detach().numpy() for name, p in twin.state_dict().items()}
    assert torch_shapes(model.layout) == {name: value.shape for name, value in state.items()}
    for name, value in to_torch(model.weights).items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)


@pytest.mark.parametrize("cell,attention,bidirectional,layers", CASES, ids=IDS)
def test_same_greedy_translations(cell, attention, bidirectional, layers, rng):
    model, twin = make_pair(cell, attention, bidirectional, layers, rng, end_bias=1.0)
    source, lengths, _, _ = batch(rng)
    ids, ended, _ = model.greedy(source, lengths, START, END, 8)
    twin_ids, twin_ended = twin.greedy(source, lengths, START, END, 8)
    assert twin_ids == ids
    np.testing.assert_array_equal(twin_ended, ended)


@pytest.mark.parametrize("end_bias", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("cell,attention,bidirectional,layers", CASES, ids=IDS)
def test_same_beam_hypotheses_and_scores(cell, attention, bidirectional, layers, end_bias, rng):
    """numrnn's beam over the whole batch equals the twin's one sentence at a time: every one
    of the n-best, its ids, normalised score, log-probability and whether it ended."""
    model, twin = make_pair(cell, attention, bidirectional, layers, rng, end_bias=end_bias)
    source, lengths, _, _ = batch(rng)
    K, alpha = 4, 0.7
    found = model.beam_search(source, lengths, START, END, beam=K, max_length=7, alpha=alpha, n_best=K)
    for b, n in enumerate(lengths):
        for stop_early in (False, True):
            twin_found = twin.beam_search(
                source[:n, b], START, END, beam=K, max_length=7, alpha=alpha, n_best=K, stop_early=stop_early
            )
            assert len(twin_found) == len(found[b]) == K
            for mine, theirs in zip(found[b], twin_found):
                assert mine[0] == theirs[0]
                assert mine[1] == pytest.approx(theirs[1], rel=RTOL)
                assert mine[2] == pytest.approx(theirs[2], rel=RTOL)
                assert mine[3] == theirs[3]


@pytest.mark.parametrize("n_best", [1, 2])
def test_stopping_early_finds_the_same_translations(n_best, rng):
    """The twin's early stop (what numrnn's search does) on a longer limit, where it matters:
    the same n-best as running to the limit, and numrnn's, in fewer decoder steps."""
    model, twin = make_pair("gru", "general", True, 1, rng, end_bias=1.5)
    source, lengths, _, _ = batch(rng)
    found = model.beam_search(source, lengths, START, END, beam=3, max_length=30, n_best=n_best)
    steps = {False: 0, True: 0}
    step = twin._step
    for b, n in enumerate(lengths):
        results = {}
        for stop_early in (False, True):

            def counted(*args, stop_early=stop_early):
                steps[stop_early] += 1
                return step(*args)

            twin._step = counted
            results[stop_early] = twin.beam_search(
                source[:n, b], START, END, beam=3, max_length=30, n_best=n_best, stop_early=stop_early
            )
        full, early = results[False], results[True]
        assert [c[0] for c in early] == [c[0] for c in full] == [c[0] for c in found[b]]
        np.testing.assert_allclose([c[1] for c in early], [c[1] for c in found[b]], rtol=RTOL)
    assert steps[True] < steps[False]
