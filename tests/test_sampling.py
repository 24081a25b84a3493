"""sampling.py and the generation kernels: the sampler's step equals the training forward,
the draw follows the filtered distribution, and the text is deterministic, chunk-size
independent and cut at the stop string."""

import numba
import numpy as np
import pytest

from numrnn import layers as layers_module
from numrnn import reference as ref
from numrnn.data import Vocab
from numrnn.errors import ConfigError
from numrnn.kernels import cpu
from numrnn.model import Model, ModelConfig
from numrnn.sampling import SampleConfig, Sampler, kernel_weights

F64_RTOL = 1e-10
F64_ATOL = 1e-12
F32_RTOL = 1e-5
F32_ATOL = 1e-5
PROB_RTOL = 1e-12
NUMBA_THREADS = numba.config.NUMBA_NUM_THREADS
CELLS = ["rnn", "lstm", "gru"]
VOCAB = Vocab("abcdefghij \n")
V = len(VOCAB)


def make_model(cell, rng, layers=2, embed=5, hidden=8, dtype=np.float64, scale=1.0):
    config = ModelConfig(cell=cell, vocab_size=V, hidden=hidden, layers=layers, embed=embed)
    model = Model(config, dtype=dtype).init_weights(rng)
    # Larger weights make a sharper, less repetitive model than PyTorch's small initial ones.
    model.params *= scale
    return model


def random_state(model, rng):
    state = model.zero_state(1)
    state.h[...] = rng.uniform(-0.5, 0.5, state.h.shape)
    if state.c is not None:
        state.c[...] = rng.uniform(-0.5, 0.5, state.c.shape)
    return state


def feed(model, tokens, state, bounds=None):
    """Run feed_tokens from ``state`` (left as it is), or feed_tokens_parallel with the unit
    parts ``bounds``; returns (h, c, logits), each a fresh array."""
    cfg = model.config
    h = state.h[:, 0].copy()
    c = np.zeros_like(h) if state.c is None else state.c[:, 0].copy()
    logits = np.zeros(cfg.outputs, model.dtype)
    xg = np.zeros((1, cfg.gate_width), model.dtype)
    hw = np.zeros_like(xg)
    tokens, cell, weights = np.asarray(tokens, np.int64), cpu.CELL_CODES[cfg.cell], kernel_weights(model)
    if bounds is None:
        cpu.feed_tokens(logits, h, c, tokens, cell, weights, xg, hw)
    else:
        h_new = np.zeros(cfg.hidden, model.dtype)
        cpu.feed_tokens_parallel(
            logits, h, c, tokens, cell, weights, np.asarray(bounds, np.int64), h_new, xg[0], hw[0]
        )
    return h, c, logits


def text(sampler, prime, config, seed):
    prime_ids = VOCAB.encode(prime)[0]
    return "".join(sampler.generate(prime_ids, config, np.random.default_rng(seed)))


# --------------------------------------------------------------------------- level 4: step = forward


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embed", [0, 5])
@pytest.mark.parametrize(
    "dtype, rtol, atol", [(np.float64, F64_RTOL, F64_ATOL), (np.float32, F32_RTOL, F32_ATOL)]
)
def test_feed_equals_training_forward(cell, layers, embed, dtype, rtol, atol, rng):
    model = make_model(cell, rng, layers, embed, dtype=dtype)
    T = 9
    tokens = rng.integers(0, V, T)
    state = random_state(model, rng)
    result = model.loss(tokens.reshape(T, 1), rng.integers(0, V, (T, 1)), state)
    h, c, logits = feed(model, tokens, state)
    np.testing.assert_allclose(h, result.state.h[:, 0], rtol=rtol, atol=atol)
    if cell == "lstm":
        np.testing.assert_allclose(c, result.state.c[:, 0], rtol=rtol, atol=atol)
    top = result.state.h[-1, 0].astype(np.float64)
    expected = top @ model.weights["head.weight"] + model.weights["head.bias"]
    np.testing.assert_allclose(logits, expected, rtol=rtol, atol=atol)
    # The training forward's own logits of the last step agree too.
    trained = model._workspace(T, 1).logits[T - 1]
    np.testing.assert_allclose(logits, trained, rtol=rtol, atol=atol)


def test_feed_of_no_tokens_keeps_state_and_logits(rng):
    model = make_model("lstm", rng)
    state = random_state(model, rng)
    h, c, logits = feed(model, [], state)
    np.testing.assert_array_equal(h, state.h[:, 0])
    np.testing.assert_array_equal(c, state.c[:, 0])
    np.testing.assert_array_equal(logits, 0.0)


# --------------------------------------------------------------------------- greedy path vs plain numpy


def numpy_step(model, token, h, c):
    """One step of the stacked model with numrnn.reference's plain-numpy cells."""
    cfg, w = model.config, model.weights
    x = w["embed.weight"][token] if cfg.embed else np.eye(V)[token]
    h, c = h.copy(), c.copy()
    for layer in range(cfg.layers):
        args = [w[f"rnn.{name}_l{layer}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if cfg.cell == "lstm":
            hs, cs, _ = ref.lstm_forward(x[None, None], h[layer][None], c[layer][None], *args)
            c[layer] = cs[0, 0]
        else:
            hs, _ = ref.FORWARD[cfg.cell](x[None, None], h[layer][None], *args)
        h[layer] = hs[0, 0]
        x = h[layer]
    return x @ w["head.weight"] + w["head.bias"], h, c


def numpy_greedy(model, prime_ids, length):
    """(greedy ids, final h, final c, last logits) with plain numpy."""
    L, H = model.config.layers, model.config.hidden
    h, c = np.zeros((L, H)), np.zeros((L, H))
    for token in prime_ids[:-1]:
        _, h, c = numpy_step(model, token, h, c)
    token, out = prime_ids[-1], []
    for _ in range(length):
        logits, h, c = numpy_step(model, token, h, c)
        token = int(np.argmax(logits))  # numpy also takes the lowest index among ties
        out.append(token)
    return out, h, c, logits


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embed", [0, 5])
def test_generate_kernel_greedy_path_equals_numpy(cell, embed, rng):
    model = make_model(cell, rng, embed=embed, hidden=32, scale=3.0)
    cfg = model.config
    prime = VOCAB.encode("abc de")[0]
    n = 40
    expected, h_ref, c_ref, logits_ref = numpy_greedy(model, prime, n)
    h, c, _ = feed(model, prime[:-1], model.zero_state(1))
    out = np.zeros(n, np.int64)
    logits, probs, ranked = (np.zeros(V) for _ in range(3))
    xg, hw = np.zeros((1, cfg.gate_width)), np.zeros((1, cfg.gate_width))
    cpu.generate_tokens(
        out,
        logits,
        h,
        c,
        prime[-1],
        np.full(n, 0.5),
        1.0,
        0,
        1.0,
        True,
        cpu.CELL_CODES[cell],
        kernel_weights(model),
        xg,
        hw,
        probs,
        ranked,
    )
    assert out.tolist() == expected
    assert len(set(expected)) > 1  # a path that could have gone wrong in more than one place
    # The state has read the prime and every drawn token but the last.
    np.testing.assert_allclose(h, h_ref, rtol=F64_RTOL, atol=F64_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c, c_ref, rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(logits, logits_ref, rtol=F64_RTOL, atol=F64_ATOL)
    # The sampler takes the same path.
    sampled = text(Sampler(model, VOCAB), "abc de", SampleConfig(length=n, argmax=True, chunk=7), 0)
    assert sampled == VOCAB.decode(expected)


def test_argmax_ignores_temperature_and_filters_and_top_k_1_equals_argmax(rng):
    model = make_model("gru", rng, scale=3.0)
    sampler = Sampler(model, VOCAB)
    greedy = text(sampler, "ab", SampleConfig(length=30, argmax=True), 1)
    for other in (
        SampleConfig(length=30, argmax=True, temperature=5.0, top_k=4, top_p=0.3),
        SampleConfig(length=30, top_k=1),
        SampleConfig(length=30, top_k=1, temperature=3.0),
    ):
        assert text(sampler, "ab", other, 2) == greedy
    assert text(sampler, "ab", SampleConfig(length=30), 2) != greedy


# --------------------------------------------------------------------------- the draw


def reference_distribution(logits, temperature, top_k, top_p):
    """softmax(logits / T), filtered by top-k then top-p (ties towards the lowest index),
    renormalised."""
    scaled = (logits - logits.max()) / temperature
    probs = np.exp(scaled) / np.exp(scaled).sum()
    K = len(probs)
    order = np.lexsort((np.arange(K), -probs))  # most probable first, ties by index
    kept = top_k if 0 < top_k < K else K
    if top_p < 1.0:
        head = probs[order[:kept]]
        reach = np.cumsum(head) >= top_p * head.sum()
        kept = int(np.argmax(reach)) + 1
    filtered = np.zeros(K)
    filtered[order[:kept]] = probs[order[:kept]]
    return filtered / filtered.sum()


def inverse_cdf(dist, u):
    return int(np.searchsorted(np.cumsum(dist), u, side="right"))


def draw(logits, u, temperature=1.0, top_k=0, top_p=1.0, greedy=False):
    probs = np.zeros_like(logits)
    ranked = np.zeros_like(logits)
    token = cpu.draw_token(logits, probs, ranked, u, temperature, top_k, top_p, greedy)
    return token, probs


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
@pytest.mark.parametrize(
    "top_k, top_p", [(0, 1.0), (1, 1.0), (3, 1.0), (0, 0.5), (0, 0.9), (5, 0.7), (20, 1.0), (0, 1e-6)]
)
def test_draw_matches_inverse_cdf_of_filtered_distribution(temperature, top_k, top_p, rng):
    logits = rng.normal(0.0, 2.0, 12)
    dist = reference_distribution(logits, temperature, top_k, top_p)
    support = np.count_nonzero(dist)
    if top_k and top_p == 1.0:
        assert support == min(top_k, len(logits))
    for u in rng.random(300):
        token, probs = draw(logits, u, temperature, top_k, top_p)
        assert token == inverse_cdf(dist, u)
        np.testing.assert_allclose(probs / probs.sum(), dist, rtol=PROB_RTOL, atol=1e-15)


def test_draw_probabilities_are_softmax_of_scaled_logits(rng):
    logits = rng.normal(0.0, 3.0, 9)
    for temperature in (0.3, 1.0, 4.0):
        _, probs = draw(logits, 0.5, temperature)
        expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        np.testing.assert_allclose(probs, expected, rtol=PROB_RTOL)


def test_draw_is_stable_for_huge_logits_and_small_temperature():
    logits = np.array([1000.0, 999.0, -1000.0])
    token, probs = draw(logits, 0.99, temperature=0.01)
    assert np.isfinite(probs).all()
    assert token == 0


def test_draw_edges_of_the_uniform():
    logits = np.log(np.array([0.25, 0.25, 0.5]))
    assert draw(logits, 0.0)[0] == 0
    assert draw(logits, 0.2499)[0] == 0
    assert draw(logits, 0.2501)[0] == 1
    assert draw(logits, np.nextafter(1.0, 0.0))[0] == 2


def test_ties_go_to_the_lowest_index():
    logits = np.array([0.0, 2.0, 1.0, 2.0, 2.0])
    assert draw(logits, 0.9, greedy=True)[0] == 1
    # top-2 of three tied maxima keeps ids 1 and 3
    _, probs = draw(logits, 0.5, top_k=2)
    assert np.flatnonzero(probs).tolist() == [1, 3]
    # top-p just above one third of the mass of the three tied maxima keeps two of them
    tied = np.array([1.0, 1.0, 1.0])
    _, probs = draw(tied, 0.5, top_p=0.34)
    assert np.flatnonzero(probs).tolist() == [0, 1]


def test_top_p_stops_as_soon_as_the_sum_reaches_p():
    # Four probabilities of exactly 1/4: two of them reach p = 1/2, a third is not needed.
    _, probs = draw(np.zeros(4), 0.5, top_p=0.5)
    assert np.flatnonzero(probs).tolist() == [0, 1]


def test_top_p_always_keeps_the_most_probable(rng):
    logits = rng.normal(0.0, 1.0, 8)
    for u in (0.0, 0.5, 0.999):
        token, probs = draw(logits, u, top_p=1e-9)
        assert token == int(np.argmax(logits))
        assert np.count_nonzero(probs) == 1


# --------------------------------------------------------------------------- the sampler


@pytest.fixture
def sampler():
    model = make_model("lstm", np.random.default_rng(7), scale=2.0)
    return Sampler(model, VOCAB)


@pytest.mark.parametrize("settings", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8)])
@pytest.mark.parametrize("prime", ["", "a", "hide a bed"])
def test_chunk_size_does_not_change_the_text(sampler, settings, prime):
    texts = {
        chunk: text(sampler, prime, SampleConfig(length=60, chunk=chunk, **settings), 3)
        for chunk in (1, 7, 256)
    }
    assert texts[1] == texts[7] == texts[256]
    assert len(texts[1]) == 60


def test_chunks_are_yielded_one_call_at_a_time(sampler):
    chunks = list(
        sampler.generate(VOCAB.encode("ab")[0], SampleConfig(length=20, chunk=7), np.random.default_rng(0))
    )
    assert [len(c) for c in chunks] == [7, 7, 6]
    empty_prime = list(
        sampler.generate(np.array([], np.int64), SampleConfig(length=8, chunk=3), np.random.default_rng(0))
    )
    assert [len(c) for c in empty_prime] == [3, 3, 2]


def test_same_seed_same_text_other_seed_other_text(sampler):
    config = SampleConfig(length=80)
    first = text(sampler, "abc", config, 11)
    assert text(sampler, "abc", config, 11) == first  # the state restarts from zero each call
    assert text(sampler, "abc", config, 12) != first


def test_repeated_samples_from_one_rng_match_a_fresh_sampler(rng):
    model = make_model("gru", rng, scale=2.0)
    config = SampleConfig(length=30, chunk=4)
    prime = VOCAB.encode("hi")[0]
    shared = np.random.default_rng(5)
    first = "".join(Sampler(model, VOCAB).generate(prime, config, shared))
    sampler = Sampler(model, VOCAB)
    replay = np.random.default_rng(5)
    assert "".join(sampler.generate(prime, config, replay)) == first
    second = "".join(sampler.generate(prime, config, replay))
    assert second != first  # the rng moved on
    assert "".join(Sampler(model, VOCAB).generate(prime, config, shared)) == second


def test_length_counts_generated_characters_only(sampler):
    for prime in ("", "a", "abcdefghij"):
        assert len(text(sampler, prime, SampleConfig(length=13, chunk=5), 0)) == 13
    assert text(sampler, "abc", SampleConfig(length=0), 0) == ""
    assert (
        list(sampler.generate(np.array([], np.int64), SampleConfig(length=0), np.random.default_rng(0))) == []
    )


def test_empty_prime_draws_the_first_character_uniformly_by_seed(sampler):
    config = SampleConfig(length=1, argmax=True)
    firsts = [text(sampler, "", config, seed) for seed in range(300)]
    # Deterministic by seed, and neither the model's favourite nor argmax: uniform.
    expected = [VOCAB.chars[np.random.default_rng(seed).integers(V)] for seed in range(300)]
    assert firsts == expected
    counts = np.array([firsts.count(ch) for ch in VOCAB.chars])
    assert counts.min() > 5 and counts.max() < 50
    # The rest follows from the first character as if it had been a one-character prime.
    longer = text(sampler, "", SampleConfig(length=10, argmax=True), 4)
    assert longer[1:] == text(sampler, longer[0], SampleConfig(length=9, argmax=True), 0)


def greedy_sampler_and_text(length=60):
    model = make_model("rnn", np.random.default_rng(3), hidden=16, scale=4.0)
    sampler = Sampler(model, VOCAB)
    full = text(sampler, "a", SampleConfig(length=length, argmax=True), 0)
    assert len(set(full)) > 3, "a model whose greedy text varies"
    return sampler, full


@pytest.mark.parametrize("chunk", [1, 2, 3, 256])
@pytest.mark.parametrize("start, size", [(0, 1), (5, 3), (12, 2), (30, 4)])
def test_text_ends_right_after_the_first_stop_string(chunk, start, size):
    sampler, full = greedy_sampler_and_text()
    stop = full[start : start + size]
    end = full.find(stop) + len(stop)
    chunks = list(
        sampler.generate(
            VOCAB.encode("a")[0],
            SampleConfig(length=60, argmax=True, stop=stop, chunk=chunk),
            np.random.default_rng(0),
        )
    )
    assert "".join(chunks) == full[:end]
    assert all(0 < len(c) <= chunk for c in chunks)


def test_stop_string_straddling_chunks_never_leaks_past_it():
    sampler, full = greedy_sampler_and_text()
    stop = full[9:14]  # with chunk 2 this spans three chunks
    config = SampleConfig(length=60, argmax=True, stop=stop, chunk=2)
    seen = ""
    for piece in sampler.generate(VOCAB.encode("a")[0], config, np.random.default_rng(0)):
        seen += piece
        assert stop not in seen[:-1]  # nothing follows the stop string once it is complete
    assert seen.endswith(stop) and seen == full[: full.find(stop) + len(stop)]


def test_stop_string_in_the_prime_does_not_count():
    sampler, _ = greedy_sampler_and_text()
    config = SampleConfig(length=40, argmax=True)
    for prime in ("ab", "cd", "ef", "gh", "ij", "ba", "dc"):
        generated = text(sampler, prime, config, 0)
        stop = prime[-1] + generated[0]  # would straddle the prime and the generated text
        if stop not in generated and prime not in generated:
            break
    else:
        pytest.fail("no prime found whose joint with the generated text is not repeated later")
    assert text(sampler, prime, SampleConfig(length=40, argmax=True, stop=stop), 0) == generated
    assert text(sampler, prime, SampleConfig(length=40, argmax=True, stop=prime), 0) == generated


def test_float32_model_samples_the_same_greedy_text(rng):
    model = make_model("lstm", rng, scale=2.0)
    model32 = Model(model.config, dtype=np.float32)
    model32.params[...] = model.params
    config = SampleConfig(length=30, argmax=True, chunk=8)
    assert text(Sampler(model32, VOCAB), "abc", config, 0) == text(Sampler(model, VOCAB), "abc", config, 0)


def test_sampler_refuses_a_mismatched_vocab_or_a_classifier(rng):
    model = make_model("rnn", rng)
    with pytest.raises(ConfigError, match="vocab"):
        Sampler(model, Vocab("abc"))
    classifier = Model(ModelConfig(cell="rnn", vocab_size=V, hidden=4, layers=1, output_size=3))
    with pytest.raises(ConfigError, match="output_size"):
        Sampler(classifier, VOCAB)


def test_bad_prime_ids_are_refused_before_generating(sampler):
    with pytest.raises(ValueError, match="prime_ids"):
        sampler.generate(np.array([0, V]), SampleConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="prime_ids"):
        sampler.generate(np.zeros((2, 2), np.int64), SampleConfig(), np.random.default_rng(0))


# --------------------------------------------------------------------------- SampleConfig


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_p", -0.5),
        ("top_k", -1),
        ("length", -1),
        ("chunk", 0),
    ],
)
def test_config_rejects_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SampleConfig(**{field: value}).validate()


def test_config_accepts_the_edges():
    config = SampleConfig(length=0, temperature=1e-3, top_k=0, top_p=1.0, chunk=1)
    assert config.validate() is config
    SampleConfig(top_p=1e-9, top_k=1000).validate()


def test_generate_validates_the_config_when_called(sampler):
    with pytest.raises(ConfigError, match="chunk"):
        sampler.generate(np.array([0]), SampleConfig(chunk=0), np.random.default_rng(0))


@pytest.mark.parametrize("cell", CELLS)
def test_input_table_and_embedding_product_give_the_same_steps(cell, rng, monkeypatch):
    # kernel_weights folds embed @ Wx0 into a lookup table unless it is too large; both
    # paths of the generation kernel must step the model identically.

    model = make_model(cell, rng, layers=2, embed=5)
    tokens = rng.integers(0, V, 7)
    state = random_state(model, rng)
    assert kernel_weights(model)[0].shape == (0, 0)  # the table: embed is folded in
    with_table = feed(model, tokens, state)
    monkeypatch.setattr(layers_module, "INPUT_TABLE_MAX_BYTES", 0)
    assert kernel_weights(model)[0].shape == (V, 5)  # the embedding itself
    without = feed(model, tokens, state)
    for mine, theirs in zip(with_table, without):
        np.testing.assert_allclose(mine, theirs, rtol=F64_RTOL, atol=F64_ATOL)


# --------------------------------------------------------------------------- generation on threads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embed, table", [(0, False), (5, True), (5, False)])
@pytest.mark.parametrize("bounds", [[0, 13], [0, 5, 13], [0, 3, 4, 9, 13]])
def test_parallel_feed_equals_feed(cell, layers, embed, table, bounds, rng, monkeypatch):
    # Any split of the units into parts (uneven, one unit, one part) steps the model as the
    # single-threaded kernel does, for one-hot input, the input table and the embedding product.

    if not table:
        monkeypatch.setattr(layers_module, "INPUT_TABLE_MAX_BYTES", 0)
    model = make_model(cell, rng, layers, embed, hidden=13, scale=2.0)
    tokens = rng.integers(0, V, 11)
    state = random_state(model, rng)
    expected = feed(model, tokens, state)
    for mine, theirs in zip(feed(model, tokens, state, bounds), expected):
        np.testing.assert_allclose(mine, theirs, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("cell", CELLS)
def test_sampler_on_two_threads_writes_the_same_text(cell, rng):
    model = make_model(cell, rng, hidden=48, scale=2.0)
    one, two = Sampler(model, VOCAB, threads=1), Sampler(model, VOCAB, threads=2)
    assert (one.threads, two.threads) == (1, 2)
    assert two.kernel_names == ("generate_tokens_parallel",)
    for settings in (
        dict(length=300, chunk=64),
        dict(length=120, argmax=True),
        dict(length=200, top_k=4, temperature=0.8),
    ):
        config = SampleConfig(**settings)
        assert text(two, "abc", config, seed=5) == text(one, "abc", config, seed=5)
        assert text(two, "", config, seed=6) == text(one, "", config, seed=6)


class AlternatingGovernor:
    """Stands in for the sampler's ThreadGovernor: before each chunk, the other part count, as
    if a program kept a core busy and left it again, chunk after chunk."""

    def __init__(self, sampler):
        self.sampler, self.counts = sampler, []

    def check(self):
        count = 1 if len(self.counts) % 2 == 0 else 2
        self.sampler._use_parts(count)
        self.counts.append(count)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "dtype, weights",
    [(np.float64, "float32"), (np.float32, "float32"), (np.float32, "bf16"), (np.float32, "int8")],
)
def test_sampler_following_the_free_cores_writes_the_same_text(cell, dtype, weights, rng, monkeypatch):
    import numba

    from numrnn import sampling

    monkeypatch.setattr(sampling, "_default_threads", lambda model, weights="float32": 2)
    model = make_model(cell, rng, hidden=48, dtype=dtype, scale=2.0)
    fixed = Sampler(model, VOCAB, threads=2, weights=weights)
    following = Sampler(model, VOCAB, weights=weights)  # threads chosen here: they follow the cores
    assert fixed._governor is None and following._governor.limit == 2
    following._governor = AlternatingGovernor(following)
    config = SampleConfig(length=300, chunk=32, top_k=6)
    try:
        assert text(following, "abc", config, seed=5) == text(fixed, "abc", config, seed=5)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert following._governor.counts[:3] == [1, 2, 1] and len(following._governor.counts) == 10
    assert Sampler(model, VOCAB, threads=1, weights=weights)._governor is None


class LoweringGovernor:
    """A ThreadGovernor that finds one core free at every check."""

    def __init__(self, sampler):
        self.sampler = sampler

    def check(self):
        self.sampler._use_parts(1)


@pytest.mark.skipif(NUMBA_THREADS < 2, reason="numba has one thread here: nothing to lower")
@pytest.mark.parametrize("length", [300, 1000])  # to the end, and stopped after the first chunk
def test_a_governed_generation_gives_back_the_thread_count_it_found(length, rng, monkeypatch):
    from numrnn import sampling

    monkeypatch.setattr(sampling, "_default_threads", lambda model, weights="float32": 2)
    sampler = Sampler(make_model("lstm", rng, hidden=48), VOCAB)
    sampler._governor = LoweringGovernor(sampler)
    numba.set_num_threads(2)
    try:
        chunks = sampler.generate(
            np.array([1, 2]), SampleConfig(length=length, chunk=100), np.random.default_rng(0)
        )
        next(chunks)
        assert numba.get_num_threads() == 1  # the governor's count while generating
        if length == 300:
            assert len("".join(chunks)) == 200
        else:
            chunks.close()
        assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_part_bounds_cover_the_units_on_aligned_cuts():
    from numrnn.sampling import PART_ALIGN, _part_bounds

    assert _part_bounds(1024, 2).tolist() == [0, 512, 1024]
    assert _part_bounds(100, 3).tolist() == [0, 32, 64, 100]
    for H, parts in [(48, 2), (1000, 4), (777, 3)]:
        cuts = _part_bounds(H, parts)
        assert cuts[0] == 0 and cuts[-1] == H and np.all(np.diff(cuts) > 0)
        assert np.all(cuts[:-1] % PART_ALIGN == 0)


def test_threads_default_to_one_unless_a_layer_is_large(rng, monkeypatch):
    import numba

    import numrnn.sampling as sampling

    small = make_model("lstm", rng, hidden=48)
    assert Sampler(small, VOCAB).threads == 1
    assert Sampler(small, VOCAB).kernel_names == ("generate_tokens",)
    # (E or 1 + H) * 4H floats: here (1 + 48) * 192 * 8 bytes for layer 0, (48 + 48) * 192 * 8 above.
    monkeypatch.setattr(sampling, "PARALLEL_MIN_LAYER_BYTES", 96 * 192 * 8)
    assert Sampler(small, VOCAB).threads == min(numba.get_num_threads(), 3)
    monkeypatch.setattr(sampling, "PARALLEL_MIN_LAYER_BYTES", 96 * 192 * 8 + 1)
    assert Sampler(small, VOCAB).threads == 1
    # Never more parts than aligned groups of units.
    assert Sampler(make_model("gru", rng, hidden=20), VOCAB, threads=8).threads == 1
