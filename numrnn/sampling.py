"""Text generation at batch 1: a prime text, temperature, top-k, top-p, greedy, a stop string;
and whole sequences for a label from a conditioned model (``ConditionalSampler``).

The generation loop is compiled (``numrnn.kernels.cpu.generate_tokens``): one call steps the
model, draws and feeds back a whole chunk of characters. Randomness comes from the caller's
numpy Generator as one uniform per character, drawn a chunk at a time with ``rng.random(n)``;
consecutive draws of a Generator concatenate, so the text for a seed does not depend on the
chunk size.
"""

import numpy as np

from numrnn.cells import CELL_TABLE
from numrnn.configs import SampleConfig  # noqa: F401 (re-exported)
from numrnn.errors import ConfigError
from numrnn.kernels import cpu

# Generation splits each layer's units between threads only when some layer reads at least
# this many bytes of weights per character. Measured (float32 LSTMs, 2 threads against one
# BLAS thread): 0.96x for 2 x 512 (8 MB a layer), 1.0x at 768 (9 MB), 1.25x at 1024 (17 MB);
# smaller layers lose more to the hand-off between threads than they gain.
PARALLEL_MIN_LAYER_BYTES = 12 * 2**20
# Part boundaries fall on multiples of this many units (a 64-byte line of float32).
PART_ALIGN = 16


def kernel_weights(model):
    """The model's weights as the generation kernels take them:
    ``(embed, Wxs, Whs, bxs, bhs, Wy, by)``, with an empty (0, 0) embed for one-hot input.

    With an embedding, layer 0's input projection ``embed[token] @ Wx`` takes one of V values,
    so it is computed once here as a (V, G) table and passed as the one-hot layer's Wx: a step
    then copies a row instead of multiplying by Wx (the same products, fewer bytes read per
    character). Everything else is a view of the model's weights, in the model's memory.
    """
    cfg, w, xp = model.config, model.weights, model.xp
    # Views of the flat buffer are contiguous already; this only guarantees the uniform
    # array types numba needs to index the per-layer tuples with a loop variable.
    c = xp.ascontiguousarray
    per_layer = lambda name: tuple(c(w[f"rnn.{name}_l{i}"]) for i in range(cfg.layers))  # noqa: E731
    embed = c(w["embed.weight"]) if cfg.embed else xp.zeros((0, 0), model.dtype)
    Wxs = per_layer("weight_ih")
    if model.embedding.uses_table(cfg.gate_width, model.dtype.itemsize):
        Wxs = (xp.dot(embed, Wxs[0]),) + Wxs[1:]
        embed = xp.zeros((0, 0), model.dtype)
    return (
        embed,
        Wxs,
        per_layer("weight_hh"),
        per_layer("bias_ih"),
        per_layer("bias_hh"),
        c(w["head.weight"]),
        c(w["head.bias"]),
    )


class _StopScanner:
    """Finds the first occurrence of a stop string in text that arrives in pieces."""

    def __init__(self, stop):
        self.stop = stop
        self.tail = ""  # the last len(stop) - 1 characters seen: an occurrence may start there

    def cut(self, piece):
        """(the part of ``piece`` up to and including the stop string, whether it was found)."""
        if not self.stop:
            return piece, False
        window = self.tail + piece
        at = window.find(self.stop)
        if at >= 0:
            return piece[: at + len(self.stop) - len(self.tail)], True
        self.tail = window[max(len(window) - (len(self.stop) - 1), 0) :]
        return piece, False


class Sampler:
    """Generates text from a model, one sample per ``generate`` call.

    The workspaces are allocated once here and reused by every call, so a Sampler runs one
    generation at a time (finish or drop one generator before starting the next).
    """

    def __init__(self, model, vocab, threads=None):
        """threads: how many threads generate (1: the single-threaded kernels); None picks
        numba's thread count for models with a large layer (PARALLEL_MIN_LAYER_BYTES),
        else 1."""
        cfg = model.config
        if len(vocab) != cfg.vocab_size:
            raise ConfigError(
                f"vocab has {len(vocab)} characters but the model's vocab_size "
                f"is {cfg.vocab_size}; use the vocabulary the model was trained with"
            )
        if cfg.outputs != cfg.vocab_size:
            raise ConfigError(
                f"output_size is {cfg.output_size}, not the vocabulary size: "
                "this model classifies, it cannot generate text"
            )
        self.model = model
        self.vocab = vocab
        self._cell = CELL_TABLE[cfg.cell].code
        zeros = lambda *shape: model.xp.zeros(shape, model.dtype)  # noqa: E731  (the state stays there)
        L, H, G, K = cfg.layers, cfg.hidden, cfg.gate_width, cfg.outputs
        self._h = zeros(L, H)
        self._c = zeros(L, H)  # read and written only by the LSTM
        self._logits = zeros(K)
        self._probs = zeros(K)
        self._ranked = zeros(K)
        self._xg = zeros(1, G)
        self._hw = zeros(1, G)
        self._h_new = zeros(H)
        if threads is None:
            threads = _default_threads(model)
        if model.kernels is not cpu:
            threads = 1  # the two-thread generator is the CPU's; another backend has its own
        self.threads = max(1, min(int(threads), H // PART_ALIGN or 1))
        self._bounds = _part_bounds(H, self.threads)

    @property
    def kernel_names(self):
        """The generation kernels this sampler calls (for a compile-cache check)."""
        return ("generate_tokens_parallel",) if self.threads > 1 else ("generate_tokens",)

    def generate(self, prime_ids, config, rng):
        """Yield the generated text (str) chunk by chunk, prime NOT included.

        prime_ids: 1-D int array (may be empty). rng: numpy Generator.
        The state starts at zero for each call. With a non-empty prime, the model reads it
        (all but the last id; the last id is the input to the first generated step). With an
        empty prime, the first character is drawn uniformly from the vocabulary with rng (it
        counts toward length and is yielded). Total generated characters == config.length
        unless the stop string appears: then the text ends right after its first occurrence
        in the generated text (the prime does not count).

        The arguments are checked here, before the first chunk is asked for.
        """
        config = config.validate()
        prime = np.asarray(prime_ids, dtype=np.int64)
        if prime.ndim != 1:
            raise ValueError(f"prime_ids must be 1-D, not of shape {prime.shape}")
        if prime.size and not (0 <= prime.min() and prime.max() < len(self.vocab)):
            raise ValueError(f"prime_ids must lie in [0, {len(self.vocab)})")
        return self._chunks(np.ascontiguousarray(prime), config, rng)

    def _chunks(self, prime, config, rng):
        self._h[...] = 0.0
        self._c[...] = 0.0
        if config.length == 0:
            return
        weights = kernel_weights(self.model)
        ids = np.empty(config.chunk, np.int64)
        scanner = _StopScanner(config.stop)
        # ids[:drawn_already] of the first chunk are drawn outside the kernel.
        if prime.size:
            self._feed(prime[:-1], weights)
            token, drawn_already = int(prime[-1]), 0
        else:
            token, drawn_already = int(rng.integers(len(self.vocab))), 1
            ids[0] = token
        done = 0
        while done < config.length:
            n = min(config.chunk, config.length - done)
            self._draw(ids[drawn_already:n], token, rng.random(n - drawn_already), config, weights)
            drawn_already = 0
            token = int(ids[n - 1])
            done += n
            text, stopped = scanner.cut(self.vocab.decode(ids[:n]))
            if text:
                yield text
            if stopped:
                return

    def _feed(self, tokens, weights):
        """Advance the state over ``tokens`` (host ids)."""
        if self.threads > 1:
            cpu.feed_tokens_parallel(
                self._logits,
                self._h,
                self._c,
                tokens,
                self._cell,
                weights,
                self._bounds,
                self._h_new,
                self._xg[0],
                self._hw[0],
            )
        else:
            k = self.model.kernels
            k.feed_tokens(
                self._logits, self._h, self._c, k.to_device(tokens), self._cell, weights, self._xg, self._hw
            )

    def _draw(self, out, token, uniforms, config, weights):
        """Fill ``out`` (host) with ids generated from the current state, ``token`` the first
        input, from ``uniforms`` (host: one per draw)."""
        if out.shape[0] == 0:
            return
        if self.threads > 1:
            cpu.generate_tokens_parallel(
                out,
                self._logits,
                self._h,
                self._c,
                token,
                uniforms,
                float(config.temperature),
                int(config.top_k),
                float(config.top_p),
                bool(config.argmax),
                self._cell,
                weights,
                self._bounds,
                self._h_new,
                self._xg[0],
                self._hw[0],
                self._probs,
                self._ranked,
            )
            return
        # A chunk's uniforms go to the device and its ids come back (on the CPU, the same memory).
        k = self.model.kernels
        drawn = k.to_device(out)
        k.generate_tokens(
            drawn,
            self._logits,
            self._h,
            self._c,
            token,
            k.to_device(uniforms),
            float(config.temperature),
            int(config.top_k),
            float(config.top_p),
            bool(config.argmax),
            self._cell,
            weights,
            self._xg,
            self._hw,
            self._probs,
            self._ranked,
        )
        out[...] = k.to_host(drawn)


# Sequences per compiled call of ConditionalSampler (bounds the (S, max_length) buffers).
SEQUENCES_PER_CALL = 1024


class ConditionalSampler:
    """Whole sequences for a label from a conditioned model (``numrnn.tasks.generate``).

    Each sequence starts at the ``start`` token (then an optional prefix) and ends when the
    model draws the ``end`` token, or after ``config.length`` drawn characters. The label
    enters as it did in training, folded into the weights the batch-1 kernels take: its
    input row (``cond.input``) is added to layer 0's input bias, and its learnt initial state
    (``cond.h0``/``cond.c0``) is the state the sequence starts from. Many sequences are drawn
    by one compiled call (``cpu.generate_until``), with no Python between characters or
    between sequences; one uniform per possible draw (``config.length`` per sequence) comes
    from the caller's Generator, so a seed gives the same sequences however they are split
    into calls.
    """

    def __init__(self, model, vocab, start, end):
        cfg = model.config
        if model.conditioning is None:
            raise ConfigError("this model is not conditioned on a label; use Sampler")
        if len(vocab) != cfg.vocab_size:
            raise ConfigError(
                f"vocab has {len(vocab)} characters but the model's vocab_size "
                f"is {cfg.vocab_size}; use the vocabulary the model was trained with"
            )
        self.model = model
        self.vocab = vocab
        self.start = vocab.index[start]
        self.end = vocab.index[end]
        if self.end >= cfg.outputs:
            raise ConfigError("the model cannot output the end token")
        self._cell = CELL_TABLE[cfg.cell].code
        zeros = lambda *shape: model.xp.zeros(shape, model.dtype)  # noqa: E731  (the state stays there)
        L, H, G, K = cfg.layers, cfg.hidden, cfg.gate_width, cfg.outputs
        self._h, self._c = zeros(L, H), zeros(L, H)
        self._h0, self._c0 = zeros(L, H), zeros(L, H)
        self._logits, self._probs, self._ranked = zeros(K), zeros(K), zeros(K)
        self._xg, self._hw = zeros(1, G), zeros(1, G)

    @property
    def kernel_names(self):
        """The generation kernels this sampler calls (for a compile-cache check)."""
        return ("generate_until", "feed_tokens")

    def _weights(self, label):
        """kernel_weights with ``label``'s input row folded into layer 0's input bias."""
        weights = kernel_weights(self.model)
        cond, w = self.model.conditioning, self.model.weights
        if not cond.uses_input:
            return weights
        embed, Wxs, Whs, bxs, bhs, Wy, by = weights
        bxs = (self.model.xp.ascontiguousarray(bxs[0] + w[cond.input][label]),) + bxs[1:]
        return embed, Wxs, Whs, bxs, bhs, Wy, by

    def _start_state(self, label, prefix, weights):
        """The state after the start token and all of ``prefix`` but its last id (in _h0,
        _c0), and the first step's input id."""
        self._h0[...] = 0.0
        self._c0[...] = 0.0
        cond, w = self.model.conditioning, self.model.weights
        if cond.uses_state:
            for state, name in cond.state_names.items():
                (self._h0 if state == "h" else self._c0)[...] = w[name][label]
        if not prefix.size:
            return self.start
        fed = np.concatenate([[self.start], prefix[:-1]]).astype(np.int64)
        k = self.model.kernels
        k.feed_tokens(
            self._logits, self._h0, self._c0, k.to_device(fed), self._cell, weights, self._xg, self._hw
        )
        return int(prefix[-1])

    def generate(self, label, count, config, rng, prefix_ids=()):
        """Yield ``count`` sequences for ``label`` as (ids after the prefix, ended) pairs,
        ``SEQUENCES_PER_CALL`` at a time. ``config``: a SampleConfig whose ``length`` is the
        most characters drawn per sequence after the prefix (``stop`` and ``chunk`` are not
        used); ended is False for a sequence cut at that length. The arguments are checked
        here, before the first sequence is asked for."""
        config = config.validate()
        classes = self.model.config.condition_classes
        if not 0 <= int(label) < classes:
            raise ValueError(f"label must be an id in 0..{classes - 1}, not {label}")
        prefix = np.asarray(prefix_ids, dtype=np.int64)
        if prefix.ndim != 1:
            raise ValueError(f"prefix_ids must be 1-D, not of shape {prefix.shape}")
        if prefix.size and not (0 <= prefix.min() and prefix.max() < len(self.vocab)):
            raise ValueError(f"prefix_ids must lie in [0, {len(self.vocab)})")
        if config.length < 1:
            raise ValueError("sequences need a length of at least 1")
        return self._batches(int(label), int(count), config, rng, np.ascontiguousarray(prefix))

    def _batches(self, label, count, config, rng, prefix):
        weights = self._weights(label)
        token = self._start_state(label, prefix, weights)
        M = config.length
        done = 0
        k = self.model.kernels
        while done < count:
            S = min(SEQUENCES_PER_CALL, count - done)
            # The sequences are drawn where the model is; they (and their uniforms) cross.
            out = k.xp.zeros((S, M), np.int64)
            lengths = k.xp.zeros(S, np.int64)
            k.generate_until(
                out,
                lengths,
                self._logits,
                self._h,
                self._c,
                self._h0,
                self._c0,
                token,
                k.to_device(rng.random((S, M))),
                float(config.temperature),
                int(config.top_k),
                float(config.top_p),
                bool(config.argmax),
                self.end,
                self._cell,
                weights,
                self._xg,
                self._hw,
                self._probs,
                self._ranked,
            )
            out, lengths = k.to_host(out), k.to_host(lengths)
            for s in range(S):
                yield out[s, : lengths[s]], bool(lengths[s] < M)
            done += S

    def texts(self, label, count, config, rng, prefix=""):
        """Yield ``count`` (text, ended) pairs for ``label``; each text starts with ``prefix``
        (a string of the vocabulary's characters)."""
        prefix_ids = self.vocab.encode(prefix)[0] if prefix else ()
        for ids, ended in self.generate(label, count, config, rng, prefix_ids):
            yield prefix + self.vocab.decode(ids), ended

    def distinct(self, label, count, config, rng, prefix="", exclude=(), max_draws=None):
        """Up to ``count`` distinct texts for ``label``, none in ``exclude``, drawing until
        there are ``count`` or ``max_draws`` sequences were drawn (default
        ``unique_draw_limit(count)``). Returns (texts, sequences drawn, unended among those
        kept); fewer texts than ``count`` when the draws ran out. Texts come in the order
        first drawn."""
        max_draws = unique_draw_limit(count) if max_draws is None else max_draws
        exclude = set(exclude)
        kept, seen, drawn, unended = [], set(), 0, 0
        while len(kept) < count and drawn < max_draws:
            batch = min(count - len(kept), max_draws - drawn)
            for text, ended in self.texts(label, batch, config, rng, prefix):
                drawn += 1
                if text in seen or text in exclude:
                    continue
                seen.add(text)
                kept.append(text)
                unended += not ended
                if len(kept) == count:
                    break
        return kept, drawn, unended


UNIQUE_DRAWS_PER_SAMPLE = 20
UNIQUE_DRAWS_EXTRA = 100


def unique_draw_limit(count):
    """How many sequences ``ConditionalSampler.distinct`` draws at most for ``count``."""
    return UNIQUE_DRAWS_PER_SAMPLE * count + UNIQUE_DRAWS_EXTRA


def _largest_layer_bytes(model):
    """Bytes of weights the largest layer reads per character (an input table: one row)."""
    cfg = model.config
    inputs = [cfg.layer_input_width(i) if i else 1 for i in range(cfg.layers)]
    return max((width + cfg.hidden) * cfg.gate_width for width in inputs) * model.dtype.itemsize


def _default_threads(model):
    import numba

    if _largest_layer_bytes(model) < PARALLEL_MIN_LAYER_BYTES:
        return 1
    return numba.get_num_threads()


def _part_bounds(H, parts):
    """parts + 1 unit offsets splitting range(H) into near-equal parts on PART_ALIGN multiples."""
    cuts = [round(H * p / parts / PART_ALIGN) * PART_ALIGN for p in range(parts + 1)]
    cuts[-1] = H
    return np.asarray(cuts, dtype=np.int64)
