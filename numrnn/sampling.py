"""Text generation at batch 1: a prime text, temperature, top-k, top-p, greedy, a stop string;
and whole sequences for a label from a conditioned model (``ConditionalSampler``).

The generation loop is compiled (``numrnn.kernels.cpu.generate_tokens``): one call steps the
model, draws and feeds back a whole chunk of characters. Randomness comes from the caller's
numpy Generator as one uniform per character, drawn a chunk at a time with ``rng.random(n)``;
consecutive draws of a Generator concatenate, so the text for a seed does not depend on the
chunk size.

``Sampler(..., weights="bf16" | "int8")`` generates from weights converted once, when the
Sampler is made, to bfloat16 or to int8 with one scale per row: a step then reads half or a
quarter of the bytes (``numrnn.kernels.cpu``'s packed generation kernels). ``rounded_model``
gives a model holding exactly the weights those kernels compute with, for scoring the cost.
"""

import dataclasses

import numpy as np

from numrnn.cells import CELL_TABLE
from numrnn.configs import SampleConfig  # noqa: F401 (re-exported)
from numrnn.errors import ConfigError
from numrnn.kernels import cpu, int8dot
from numrnn.threads import ThreadGovernor

# Generation splits each layer's units between threads only when some layer reads at least
# this many bytes of weights per character. Measured (float32 LSTMs, 2 threads against one
# BLAS thread): 0.96x for 2 x 512 (8 MB a layer), 1.0x at 768 (9 MB), 1.25x at 1024 (17 MB);
# smaller layers lose more to the hand-off between threads than they gain.
PARALLEL_MIN_LAYER_BYTES = 12 * 2**20
# From bf16 or int8 weights a step is bound by widening and multiplying them more than by
# reading them, so two threads pay off at smaller layers, all the more since the two threads
# share a chunk in one parallel region (cpu.generate_tokens_packed_parallel). Measured on the
# Zen 3 (embedding 64, vocabulary 65, chars/s two threads / one, medians of 5 alternating runs of
# 3,000 characters, bf16 and int8; the rule counts the largest layer's weights): LSTM 2 x 128
# (131,072 weights) 1.06 and 0.71 in one run, 1.47 and 1.41 in the next; 2 x 160 (204,800) 2.00
# and 1.10; 2 x 192 1.71 and 1.48; 2 x 256 1.71 and 1.59; GRU 2 x 160 (153,600) 1.59 and 1.39,
# 2 x 192 2.06 and 1.15; RNN 2 x 256 (131,072) 1.40 and 0.98, 2 x 384 1.27 and 1.23. With a
# region a layer the break-even was 2 x 256 (2 x 192: 1.01 and 1.32).
PACKED_PARALLEL_MIN_LAYER_WEIGHTS = 192 * 1024
# Part boundaries fall on multiples of this many units (a 64-byte line of float32).
PART_ALIGN = 16

# The weights the generation kernels can read: the model's float32 (or float64) as they are,
# or converted once to bfloat16 or int8 (float32 models only).
WEIGHT_FORMATS = ("float32", "bf16", "int8")
INT8_MAX = int8dot.INT8_MAX


# --------------------------------------------------------------------------- bf16 and int8


def to_bf16(a):
    """float32 ``a`` rounded to the nearest bfloat16 (ties to even), as the uint16 top halves
    of their bits. Infinities stay infinities; a NaN stays a NaN of the same sign (quiet); a
    finite value beyond bfloat16's largest (3.39e38) rounds to infinity, as IEEE rounding does."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit carries into the kept half exactly when the
    # dropped half is above the midpoint, or at it with the kept half odd (uint32 wraps only
    # for NaNs, which the second line replaces).
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    quiet_nan = ((bits >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return np.where(np.isnan(a), quiet_nan, rounded)


def from_bf16(u):
    """uint16 bfloat16 bits ``u`` as float32 (exact)."""
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def pair_bf16(u):
    """bfloat16 rows ``u`` (R, D) uint16 as the packed kernels' product rows: (R, ceil(D / 2))
    uint32, lane j holding u[:, j] in its low half and u[:, ceil(D / 2) + j] in its high half
    (0 past D). A kernel widens each half with one shift or one mask of a 32-bit load, where a
    uint16 took a widening load and a shift (measured on a Zen 3 core: 1.14-1.30x the rows'
    multiply-adds a second)."""
    u = np.asarray(u, dtype=np.uint16)
    rows, width = u.shape
    half = (width + 1) // 2
    high = np.zeros((rows, half), np.uint32)
    high[:, : width - half] = u[:, half:]
    return np.ascontiguousarray(u[:, :half].astype(np.uint32) | (high << np.uint32(16)))


def unpair_bf16(p, width):
    """The (R, width) uint16 rows ``pair_bf16`` made ``p`` from."""
    p = np.asarray(p, dtype=np.uint32)
    half = (width + 1) // 2
    if p.shape[1] != half:
        raise ValueError(f"paired rows of width {width} have {half} lanes, not {p.shape[1]}")
    low = (p & np.uint32(0xFFFF)).astype(np.uint16)
    high = (p >> np.uint32(16)).astype(np.uint16)
    return np.concatenate([low, high[:, : width - half]], axis=1)


def quantize_int8(a):
    """Symmetric int8 rows of the 2-D float32 ``a``: (q int8 like ``a``, scale float32 per
    row) with scale = max |row| / 127 and q = the nearest integer to row / scale (ties to even),
    so that q * scale approximates the row; an all-zero row has scale 0 and q 0. Refuses
    NaN or infinite weights (ConfigError)."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"int8 rows need a 2-D array, not shape {a.shape}")
    if not np.isfinite(a).all():
        raise ConfigError("the model's weights hold NaN or infinity; they cannot be quantised to int8")
    peak = np.abs(a).max(axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
    scale = (peak.astype(np.float64) / INT8_MAX).astype(np.float32)
    divisor = np.where(scale > 0, scale, 1.0).astype(np.float64)[:, None]
    q = np.clip(np.rint(a / divisor), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_int8(q, scale):
    """The float32 values int8 rows ``q`` with ``scale`` per row stand for: q * scale."""
    return np.asarray(q).astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]


def _pack_rows(rows, weights):
    """(packed rows, float32 scale per row) of the float32 matrix ``rows`` (R, D); bf16 rows
    as ``pair_bf16``'s pairs."""
    if weights == "bf16":
        return pair_bf16(to_bf16(rows)), np.ones(rows.shape[0], np.float32)
    return quantize_int8(rows)


def _unpack_rows(packed, scale, weights, width):
    """The float32 (R, width) values of ``_pack_rows``' output, as the packed kernels compute
    with them."""
    if weights == "bf16":  # the scales are ones
        return from_bf16(unpair_bf16(packed, width))
    return dequantize_int8(packed, scale)


def check_weights(weights, model):
    """``weights`` if the generation kernels can read ``model``'s weights in that format, else
    ConfigError saying why."""
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, not {weights!r}")
    if weights == "float32":
        return weights
    if model.dtype != np.float32:
        raise ConfigError(
            f"--weights {weights} converts a float32 model's weights, and this model is "
            f"{model.dtype.name} (trained with --dtype {model.dtype.name}): use --weights float32"
        )
    return weights


def pack_weights(model, weights):
    """The model's weights converted to ``weights`` ("bf16" or "int8") as the packed generation
    kernels take them: ``(embed, Wxs, sxs, Whs, shs, bxs, bhs, Wy, sy, by)`` (see
    ``numrnn.kernels.cpu``'s packed generation section). The matrices are the ones
    ``kernel_weights`` gives (layer 0's input table included), each as rows of its outputs
    (bf16 rows as ``pair_bf16``'s pairs); the embedding and the biases stay float32. Host
    arrays, made once: a later change to the model's weights is not seen."""
    check_weights(weights, model)
    if weights == "float32":
        raise ValueError("float32 weights are not packed; use kernel_weights")
    host = model.kernels.to_host
    embed, Wxs, Whs, bxs, bhs, Wy, by = (
        tuple(host(a) for a in item) if isinstance(item, tuple) else host(item)
        for item in kernel_weights(model)
    )
    lookup = embed.shape[0] == 0  # layer 0 reads a row of Wxs[0] per token: rows as they are
    row_sets = [Wxs[0] if lookup else Wxs[0].T, *(W.T for W in Wxs[1:]), *(W.T for W in Whs), Wy.T]
    packed = [_pack_rows(np.ascontiguousarray(rows), weights) for rows in row_sets]
    L = len(Whs)
    Wxs_p, Whs_p, (Wy_p, sy) = packed[:L], packed[L : 2 * L], packed[2 * L]
    # Copies (order="C" and copy=True): the float32 arrays too, so nothing is the model's memory.
    copy = lambda a: np.array(a, order="C", copy=True)  # noqa: E731
    copies = lambda arrays: tuple(copy(a) for a in arrays)  # noqa: E731
    return (
        copy(embed),
        copies(q for q, _ in Wxs_p),
        copies(s for _, s in Wxs_p),
        copies(q for q, _ in Whs_p),
        copies(s for _, s in Whs_p),
        copies(bxs),
        copies(bhs),
        copy(Wy_p),
        copy(sy),
        copy(by),
    )


def rounded_model(model, weights):
    """A model holding exactly the weights the generation kernels compute with when they read
    ``model``'s weights as ``weights``: ``model`` itself for "float32"; for "bf16" each matrix
    the kernels read rounded to bfloat16 and widened back; for "int8" quantised and
    dequantised per row. Where generation reads layer 0 through an input table (embedding @
    W_ih, see ``kernel_weights``), that table is what gets rounded, so the model returned has
    one-hot input and the rounded table as its layer-0 input weights (the same function of the
    tokens). Scoring text with it (``numrnn.tasks.lm.score_text``) gives the quality cost of
    generating from ``weights``."""
    check_weights(weights, model)
    if weights == "float32":
        return model
    embed, Wxs, sxs, Whs, shs, _, _, Wy, sy, _ = pack_weights(model, weights)
    cfg = model.config
    table = bool(cfg.embed) and embed.shape[0] == 0
    config = dataclasses.replace(cfg, embed=0) if table else cfg
    rounded = type(model)(config, dtype=model.dtype, kernels=model.kernels)
    flat = rounded.layout.zeros(rounded.dtype)
    values = rounded.layout.views(flat)
    source = model.host_weights()
    for name, view in values.items():
        if not (table and name == "rnn.weight_ih_l0"):  # (E, G) there, the (V, G) table here
            view[...] = source[name]
    unpack = lambda q, s, width: _unpack_rows(q, s, weights, width)  # noqa: E731
    for layer in range(cfg.layers):
        Wx_view = values[f"rnn.weight_ih_l{layer}"]
        if layer == 0 and embed.shape[0] == 0:  # the table (or one-hot rows): (V, G) as looked up
            Wx_view[...] = unpack(Wxs[layer], sxs[layer], Wx_view.shape[1])
        else:
            Wx_view[...] = unpack(Wxs[layer], sxs[layer], Wx_view.shape[0]).T
        Wh_view = values[f"rnn.weight_hh_l{layer}"]
        Wh_view[...] = unpack(Whs[layer], shs[layer], Wh_view.shape[0]).T
    values["head.weight"][...] = unpack(Wy, sy, values["head.weight"].shape[0]).T
    rounded.params[...] = rounded.kernels.to_device(flat)
    return rounded


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

    def __init__(self, model, vocab, threads=None, weights="float32"):
        """threads: how many threads generate (1: the single-threaded kernels); None picks
        numba's thread count for models with a large layer (PARALLEL_MIN_LAYER_BYTES; from
        bf16 or int8 weights PACKED_PARALLEL_MIN_LAYER_WEIGHTS), else 1, and then follows the
        cores other programs leave free, checked between chunks (``ThreadGovernor``): a
        second thread on a busy core makes every step wait for it, 2-3x slower than one. The
        parts only change which thread sums which units, so the text is the same either way.
        weights: "float32" reads the model's weights as they are; "bf16" or "int8" converts
        them here, once (``pack_weights``; float32 models on the CPU only), and generates
        from the converted copy (a later change to the model's weights is not seen)."""
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
        check_weights(weights, model)
        if weights != "float32" and model.kernels is not cpu:
            raise ConfigError(
                f"--weights {weights} is read by the CPU's generation kernels only: "
                "sample with --device cpu, or with --weights float32 on this device"
            )
        self.model = model
        self.vocab = vocab
        self.weights = weights
        self._packed = None if weights == "float32" else pack_weights(model, weights)
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
        self._quantized = cpu.packed_workspace(cfg)  # int8 products' inputs rounded to int16
        auto_threads = threads is None
        if auto_threads:
            threads = _default_threads(model, weights)
        if model.kernels is not cpu:
            threads = 1  # the two-thread generator is the CPU's; another backend has its own
        self.threads = max(1, min(int(threads), H // PART_ALIGN or 1))
        self._bounds = _part_bounds(H, self.threads)
        self._parts = self.threads  # the threads generating now (the governor may lower it)
        self._governor = None
        if auto_threads and self.threads > 1:
            self._governor = ThreadGovernor(self.threads, apply=self._use_parts)

    @property
    def kernel_names(self):
        """The generation kernels this sampler calls (for a compile-cache check)."""
        return (self._kernels()[1].__name__,)

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
        if self._governor is None:
            yield from self._generated_chunks(prime, config, rng)
            return
        import numba

        threads = numba.get_num_threads()
        try:
            yield from self._generated_chunks(prime, config, rng)
        finally:
            # The governor may have lowered numba's threads (the process's) for this
            # generation: whatever the caller runs next gets the count it had.
            numba.set_num_threads(threads)

    def _generated_chunks(self, prime, config, rng):
        self._h[...] = 0.0
        self._c[...] = 0.0
        if config.length == 0:
            return
        weights = kernel_weights(self.model) if self._packed is None else self._packed
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
            if self._governor is not None:
                self._governor.check()
            self._draw(ids[drawn_already:n], token, rng.random(n - drawn_already), config, weights)
            drawn_already = 0
            token = int(ids[n - 1])
            done += n
            text, stopped = scanner.cut(self.vocab.decode(ids[:n]))
            if text:
                yield text
            if stopped:
                return

    def _use_parts(self, count):
        """Generate on ``count`` threads (1 to self.threads), one part of each layer's units
        each. A sum's order, and so the text, stays: float32 keeps the two-thread kernels (the
        one-thread ones sum in BLAS's order), bf16 and int8 take their one-thread kernels on one
        thread, which sum each unit as the parts do (and run 1.2x faster than one part)."""
        import numba

        numba.set_num_threads(count)
        self._parts = count
        self._bounds = _part_bounds(self.model.config.hidden, count)

    def _kernels(self):
        """(feed, generate, workspaces): the generation kernels this sampler calls, and the
        workspaces they take after the weights (the two-thread ones: the units' bounds first)."""
        k = self.model.kernels
        if self._packed is None and self.threads == 1:
            return k.feed_tokens, k.generate_tokens, (self._xg, self._hw)
        if self._packed is not None and self._parts == 1:
            workspaces = (self._xg[0], self._hw[0], self._quantized)
            return cpu.feed_tokens_packed, cpu.generate_tokens_packed, workspaces
        if self._packed is None:
            workspaces = (self._bounds, self._h_new, self._xg[0], self._hw[0])
            return cpu.feed_tokens_parallel, cpu.generate_tokens_parallel, workspaces
        feed, generate = cpu.feed_tokens_packed_parallel, cpu.generate_tokens_packed_parallel
        return feed, generate, (self._bounds, self._xg[0], self._hw[0], self._quantized)

    def _feed(self, tokens, weights):
        """Advance the state over ``tokens`` (host ids)."""
        feed, _, workspaces = self._kernels()
        k = self.model.kernels
        feed(self._logits, self._h, self._c, k.to_device(tokens), self._cell, weights, *workspaces)

    def _draw(self, out, token, uniforms, config, weights):
        """Fill ``out`` (host) with ids generated from the current state, ``token`` the first
        input, from ``uniforms`` (host: one per draw)."""
        if out.shape[0] == 0:
            return
        _, generate, workspaces = self._kernels()
        draw = (float(config.temperature), int(config.top_k), float(config.top_p), bool(config.argmax))
        # A chunk's uniforms go to the device and its ids come back (on the CPU, the same memory).
        k = self.model.kernels
        drawn = k.to_device(out)
        generate(
            drawn,
            self._logits,
            self._h,
            self._c,
            token,
            k.to_device(uniforms),
            *draw,
            self._cell,
            weights,
            *workspaces,
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


def _largest_layer_weights(model):
    """Weights the largest layer reads per character (an input table: one row)."""
    cfg = model.config
    inputs = [cfg.layer_input_width(i) if i else 1 for i in range(cfg.layers)]
    return max((width + cfg.hidden) * cfg.gate_width for width in inputs)


def _largest_layer_bytes(model):
    """Bytes of weights the largest layer reads per character (an input table: one row)."""
    return _largest_layer_weights(model) * model.dtype.itemsize


def _default_threads(model, weights="float32"):
    import numba

    if weights == "float32":
        large = _largest_layer_bytes(model) >= PARALLEL_MIN_LAYER_BYTES
    else:
        large = _largest_layer_weights(model) >= PACKED_PARALLEL_MIN_LAYER_WEIGHTS
    return numba.get_num_threads() if large else 1


def _part_bounds(H, parts):
    """parts + 1 unit offsets splitting range(H) into near-equal parts on PART_ALIGN multiples."""
    cuts = [round(H * p / parts / PART_ALIGN) * PART_ALIGN for p in range(parts + 1)]
    cuts[-1] = H
    return np.asarray(cuts, dtype=np.int64)
