"""Many-to-many with unaligned lengths: an encoder-decoder with attention (``numrnn translate``).

``Translator`` reads a source sequence, then writes a target one:

    source ids -> Embedding -> encoder RecurrentStack (optionally bidirectional)
        its outputs (S, B, D), D = directions * hidden: what the attention reads
        its final states -> bridge: h0 = tanh(final W_h + b_h) per layer (LSTM: c0 = final_c W_c + b_c)
    target ids (START, then the target; output_size + 1 ids, START the last) -> Embedding
        -> decoder RecurrentStack from h0 (c0)
        -> with attention: context = Attention(h_t, encoder outputs); state = tanh([context; h_t] W_c + b_c)
        -> head: Linear to the target characters (the target, then END)

Training is teacher-forced: every step's input is the previous reference character, so the
decoder runs as one stack pass over the whole target and the attention of all its steps is a
GEMM per row (no input feeding). Source rows are right-padded and carry their lengths; they
must come longest first, so that each row's encoder state holds from its end on (packed steps,
``numrnn.layers.active_rows``) and the final state is the row's own; padded source positions
get no attention. Target padding is ignored through targets below 0.

``TranslateTask`` is the trainer's task over sentence pairs (``numrnn.data.read_pairs``):
the source vocabulary is the training sources' characters, the target one the training
targets' with END and START (as ``numrnn.tasks.generate``'s); batches group pairs of similar
source length (``numrnn.tasks.examples.batch_order``), longest source first; the loss is per
target character, END counted.
"""

import numpy as np

from numrnn.data import Vocab
from numrnn.errors import ConfigError, DataError
from numrnn.layers import Arena, Attention, Embedding, Linear, RecurrentStack, _take_rows
from numrnn.model import LossResult, Network, State, mean_cross_entropy
from numrnn.tasks import generate
from numrnn.tasks.examples import EncodedTexts, ExamplesTask
from numrnn.trainer import characters_score


def translator_layers(config):
    """The layers of the translator a ``ModelConfig`` describes, in parameter order."""
    H, L, D = config.hidden, config.layers, config.directions * config.hidden
    Hd = config.decoder_width
    source = Embedding("encoder.embed", config.vocab_size, config.embed)
    encoder = RecurrentStack(
        "encoder.rnn",
        config.cell,
        source,
        H,
        L,
        dropout=config.dropout,
        bidirectional=config.bidirectional,
    )
    layers = {"source": source, "encoder": encoder, "bridge": Linear("bridge.h", D, Hd)}
    if encoder.cell.has_cell_state:
        layers["bridge_c"] = Linear("bridge.c", D, Hd)
    # The decoder reads every output id and START, the last id (an input only, as in
    # numrnn.tasks.generate): outputs + 1 ids.
    target = Embedding("decoder.embed", config.outputs + 1, config.embed)
    layers["target"] = target
    layers["decoder"] = RecurrentStack("decoder.rnn", config.cell, target, Hd, L, dropout=config.dropout)
    if config.attention != "none":
        layers["attention"] = Attention("attention", config.attention, Hd, D)
        layers["combine"] = Linear("combine", D + Hd, Hd)
    layers["head"] = Linear("head", Hd, config.outputs)
    return layers


class Translator(Network):
    """The encoder-decoder (see the module docstring); ``config.outputs`` target characters."""

    def __init__(self, config, dtype=np.float32, device="cpu", kernels=None):
        self.config = config.validate()
        if config.attention == "dot" and config.decoder_width != config.directions * config.hidden:
            raise ConfigError(
                f"dot attention needs decoder_hidden ({config.decoder_hidden}) to equal the encoder's "
                f"output width ({config.directions * config.hidden}); use general or additive"
            )
        self.parts = translator_layers(config)
        for name, layer in self.parts.items():
            setattr(self, name, layer)
        self.attention = self.parts.get("attention")
        super().__init__(list(self.parts.values()), dtype, device, kernels)
        self._arena, self._current, self._current_key = None, None, None

    # ------------------------------------------------------------------ workspace

    def _workspace(self, S, T, B):
        # Batches come in many (S, T) shapes: one arena the size of the largest workspace,
        # re-carved (and zeroed) whenever the shape changes, instead of one per shape.
        if self._arena is None:
            self._arena = Arena(self.dtype)
        if self._current is None or self._current_key != (S, T, B):
            self._current = self._arena.carve(lambda zeros: _Workspace(self, S, T, B, self.dtype, zeros))
            self._current_key = (S, T, B)
        return self._current

    # ------------------------------------------------------------------ passes

    def loss(self, source, source_lengths, tokens, targets):
        """Mean cross-entropy per target character without gradients; dropout is off."""
        return self._run(source, source_lengths, tokens, targets, grad=False)

    def loss_and_grad(
        self, source, source_lengths, tokens, targets, *, train=False, rng=None, zero_grad=True
    ):
        """Mean cross-entropy per target character and its gradient, left in ``grads``
        (``+=`` unless zero_grad).

        source (S, B) ids, right-padded; source_lengths (B) in 1..S, longest first. tokens
        (T, B) the decoder's inputs (START, then the target); targets (T, B) what each step
        predicts (the target, then END), below 0 where padded. train: dropout between stacked
        layers, masks drawn from ``rng``. Returns the loss and the decoder's final state.
        """
        return self._run(
            source, source_lengths, tokens, targets, grad=True, train=train, rng=rng, zero_grad=zero_grad
        )

    def _run(self, source, source_lengths, tokens, targets, *, grad, train=False, rng=None, zero_grad=True):
        k, w = self.kernels, self.weights
        source = np.ascontiguousarray(source, dtype=np.intp)
        tokens = np.ascontiguousarray(tokens, dtype=np.intp)
        S, B = source.shape
        T = tokens.shape[0]
        if tokens.shape[1] != B:
            raise ValueError(f"tokens have {tokens.shape[1]} rows, the source {B}")
        targets = np.ascontiguousarray(targets, dtype=np.intp).reshape(-1)
        if targets.shape[0] != T * B:
            raise ValueError(f"targets have {targets.shape[0]} entries, expected {T * B}")
        lengths = _checked_source_lengths(source_lengths, S, B)
        use_dropout = grad and train and self.config.dropout > 0 and self.config.layers > 1
        if use_dropout and rng is None:
            raise ValueError("training with dropout needs an rng")
        ws = self._workspace(S, T, B)
        self._encode(ws, source, lengths, use_dropout, rng)
        self._bridge_forward(ws)
        self.decoder.forward(k, w, ws.dec, tokens, ws.dec_state, use_dropout=use_dropout, rng=rng)
        feats = self._attend(ws, lengths)
        self.head.forward(k, w, ws.logits, feats)
        loss = mean_cross_entropy(k, ws, targets, grad)
        final = State.from_dict(self.decoder.final_state(ws.dec))
        if not grad:
            return LossResult(loss, final)
        if zero_grad:
            self.grads[...] = 0.0
        self._backward(ws, feats)
        return LossResult(loss, final)

    # ------------------------------------------------------------------ forward parts

    def _encode(self, ws, source, lengths, use_dropout, rng):
        k, w, enc = self.kernels, self.weights, self.encoder
        B = source.shape[1]
        enc.forward(
            k,
            w,
            ws.enc,
            source,
            enc.zero_state(B, self.dtype),
            lengths=lengths,
            use_dropout=use_dropout,
            rng=rng,
        )
        top, H = enc.layers - 1, enc.hidden
        outputs = ws.enc_out  # (S, B, D), time order
        outputs[:, :, :H] = ws.enc.hs[(top, 0)][1:]
        if enc.directions > 1:
            outputs[:, :, H:] = _take_rows(ws.enc.hs[(top, 1)][1:], ws.enc.reverse)
        # Rows are sorted longest first, so each row's states hold past its end: the final
        # states are every row's own.
        final = enc.final_state(ws.enc)
        ws.enc_final = {
            name: _join_directions(state, enc.layers, enc.directions) for name, state in final.items()
        }

    def _bridge_forward(self, ws):
        k, w = self.kernels, self.weights
        L, B = self.encoder.layers, ws.B
        Hd = self.decoder.hidden
        self.bridge.forward(k, w, ws.bridge_h, ws.enc_final["h"].reshape(L * B, -1))
        np.tanh(ws.bridge_h, out=ws.bridge_h)
        ws.dec_state = {"h": ws.bridge_h.reshape(L, B, Hd)}
        if "bridge_c" in self.parts:
            self.bridge_c.forward(k, w, ws.bridge_c, ws.enc_final["c"].reshape(L * B, -1))
            ws.dec_state["c"] = ws.bridge_c.reshape(L, B, Hd)

    def _attend(self, ws, lengths, keys_ready=False):
        """(T*B, Hd) features for the head: the attentional states, or the decoder's outputs.
        keys_ready: the values and keys of this source are in ws already (step decoding)."""
        dec_out = self.decoder.top_outputs(ws.dec)  # (T, B, Hd)
        T, B, Hd = dec_out.shape
        if self.attention is None:
            return dec_out.reshape(T * B, Hd)
        k, w = self.kernels, self.weights
        ws.queries[...] = dec_out.transpose(1, 0, 2)
        if not keys_ready:
            ws.values[...] = ws.enc_out.transpose(1, 0, 2)
            self.attention.keys(k, w, ws.att, ws.values)
        self.attention.attend(k, w, ws.att, ws.queries, ws.values, lengths)
        D = ws.values.shape[2]
        ws.combined[:, :, :D] = ws.att.context.transpose(1, 0, 2)
        ws.combined[:, :, D:] = dec_out
        self.combine.forward(k, w, ws.attentional, ws.combined.reshape(T * B, -1))
        np.tanh(ws.attentional, out=ws.attentional)
        return ws.attentional

    # ------------------------------------------------------------------ decoding

    def _start_decoding(self, source, lengths):
        """(workspace, decoder state) after encoding source (S, B), for steps of one character."""
        S, B = source.shape
        ws = self._workspace(S, 1, B)
        self._encode(ws, source, lengths, False, None)
        self._bridge_forward(ws)
        return ws, {name: value.copy() for name, value in ws.dec_state.items()}

    def _decode_step(self, ws, tokens, state, lengths, step):
        """(B, V) logits of one decoder step from ``state`` reading tokens (1, B); the keys of
        the source are computed at step 0 and kept."""
        k, w = self.kernels, self.weights
        self.decoder.forward(k, w, ws.dec, tokens, state)
        self.head.forward(k, w, ws.logits, self._attend(ws, lengths, keys_ready=step > 0))
        return ws.logits

    def greedy(self, source, source_lengths, start, end, max_length):
        """Each row's most likely character at every step, fed back as the next input, until
        END or ``max_length`` characters. source (S, B) and source_lengths as for ``loss``.
        Returns (ids (B,) lists without END, ended (B,) bool, attention (B, steps, S):
        each step's weights over the source, 0 past a row's end)."""
        source = np.ascontiguousarray(source, dtype=np.intp)
        S, B = source.shape
        lengths = _checked_source_lengths(source_lengths, S, B)
        ws, state = self._start_decoding(source, lengths)
        tokens = np.full((1, B), start, np.intp)
        outputs = np.full((max_length, B), end, np.intp)
        attention = np.zeros((B, max_length, S))
        running = np.ones(B, bool)
        steps = 0
        for step in range(max_length):
            chosen = self._decode_step(ws, tokens, state, lengths, step).argmax(axis=1)
            outputs[step] = np.where(running, chosen, end)
            if self.attention is not None:
                attention[:, step] = ws.att.weights[:, 0] * running[:, None]
            running &= chosen != end
            steps = step + 1
            if not running.any():
                break
            state = self.decoder.final_state(ws.dec)
            tokens[0] = chosen
        ids = [[int(t) for t in outputs[:steps, b] if t != end] for b in range(B)]
        return ids, ~running, attention[:, :steps]

    def beam_search(self, source, source_lengths, start, end, *, beam=5, max_length=100, alpha=1.0, n_best=1):
        """The ``n_best`` translations of each source row found by a beam of ``beam``
        hypotheses, ranked by log-probability / length**alpha (length counts END). All rows'
        hypotheses step together: the decoder runs at B * beam rows per step, and each step
        keeps, per source row, the ``beam`` best extensions (numpy over the whole batch).
        Runs until every hypothesis has ended or ``max_length`` characters. Returns per row a
        list of (ids without END, normalised score, log-probability, ended, attention
        (steps, S)), best first."""
        source = np.ascontiguousarray(source, dtype=np.intp)
        S, B = source.shape
        lengths = _checked_source_lengths(source_lengths, S, B)
        K = int(beam)
        if K < 1 or n_best < 1 or n_best > K:
            raise ValueError(f"beam must be at least 1 and n_best in 1..beam, not {beam} and {n_best}")
        rows = np.repeat(np.arange(B), K)  # hypothesis h of row b is row b * K + h
        lengths_k = lengths[rows]
        ws, state = self._start_decoding(np.ascontiguousarray(source[:, rows]), lengths_k)
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0  # one live hypothesis per row to start with, not K copies
        tokens = np.full(B * K, start, np.intp)
        history = np.zeros((B * K, 0), np.intp)
        attention = np.zeros((B * K, 0, S))
        finished = [[] for _ in range(B)]
        for step in range(max_length):
            logits = self._decode_step(ws, tokens[None, :], state, lengths_k, step).astype(np.float64)
            peak = logits.max(axis=1, keepdims=True)
            logp = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
            V = logp.shape[1]
            totals = (scores.reshape(-1, 1) + logp).reshape(B, K * V)
            best = np.argsort(-totals, axis=1, kind="stable")[:, :K]  # (B, K) flat (hyp, char)
            parent = best // V + np.arange(B)[:, None] * K  # rows of the hypotheses extended
            chosen = best % V
            new_scores = np.take_along_axis(totals, best, axis=1)
            history = np.concatenate([history[parent.reshape(-1)], chosen.reshape(-1, 1)], axis=1)
            weights = ws.att.weights[:, 0] if self.attention is not None else np.zeros((B * K, S))
            attention = np.concatenate(
                [attention[parent.reshape(-1)], weights[parent.reshape(-1)][:, None]], axis=1
            )
            ended = (chosen == end) & np.isfinite(new_scores)
            for b, h in zip(*np.nonzero(ended)):
                row = b * K + h
                n = step + 1
                finished[b].append(
                    (
                        history[row, :-1].tolist(),
                        new_scores[b, h] / n**alpha,
                        new_scores[b, h],
                        True,
                        attention[row],
                    )
                )
            new_scores[ended] = -np.inf  # an ended hypothesis leaves the beam
            scores = new_scores
            if not np.isfinite(scores).any():
                break
            state = {
                name: value[:, parent.reshape(-1)] for name, value in self.decoder.final_state(ws.dec).items()
            }
            tokens = chosen.reshape(-1)
        results = []
        n = history.shape[1]
        for b in range(B):
            candidates = list(finished[b])
            if len(candidates) < n_best:  # unfinished ones at the limit, best first
                for h in np.argsort(-scores[b], kind="stable"):
                    if np.isfinite(scores[b, h]):
                        row = b * K + h
                        candidates.append(
                            (
                                history[row].tolist(),
                                scores[b, h] / n**alpha,
                                scores[b, h],
                                False,
                                attention[row],
                            )
                        )
            candidates.sort(key=lambda c: -c[1])
            results.append(candidates[:n_best])
        return results

    # ------------------------------------------------------------------ backward

    def _backward(self, ws, feats):
        k, w, dw = self.kernels, self.weights, self.dweights
        T, B = ws.T, ws.B
        dfeats = ws.dfeats
        self.head.backward(k, w, dw, dfeats, ws.logits, feats, ws.scratch)
        ddec = ws.dec.dhs[0]  # (T, B, Hd): the gradient of the decoder's top outputs
        denc = ws.enc_dout  # (S, B, D)
        if self.attention is None:
            ddec[...] = dfeats.reshape(ddec.shape)
            denc[...] = 0.0
        else:
            dfeats *= 1.0 - ws.attentional * ws.attentional  # through the tanh
            dcombined = ws.dcombined.reshape(T * B, -1)
            self.combine.backward(k, w, dw, dcombined, dfeats, ws.combined.reshape(T * B, -1), ws.scratch)
            D = ws.values.shape[2]
            ws.dcontext[...] = ws.dcombined[:, :, :D].transpose(1, 0, 2)
            self.attention.backward(k, w, dw, ws.att, ws.dcontext, ws.queries, ws.values, ws.scratch)
            ddec[...] = ws.dcombined[:, :, D:]
            ddec += ws.att.dqueries.transpose(1, 0, 2)
            denc[...] = ws.att.dvalues.transpose(1, 0, 2)
        dstate = self.decoder.backward(k, w, dw, ws.dec, state_grad=True)
        dfinal = self._bridge_backward(ws, dstate)
        enc, H = self.encoder, self.encoder.hidden
        ws.enc.dhs[0][...] = denc[:, :, :H]
        if enc.directions > 1:
            ws.enc.dhs[1][...] = _take_rows(denc[:, :, H:], ws.enc.reverse)
        enc.backward(k, w, dw, ws.enc, dfinal, state_grad=False)

    def _bridge_backward(self, ws, dstate):
        """The gradient reaching the encoder's final states, as the stack's dstate dict."""
        k, w, dw = self.kernels, self.weights, self.dweights
        enc = self.encoder
        L, B = enc.layers, ws.B
        dpre = dstate["h"].reshape(L * B, -1) * (1.0 - ws.bridge_h * ws.bridge_h)
        dfinal_h = np.empty_like(ws.enc_final["h"]).reshape(L * B, -1)
        self.bridge.backward(k, w, dw, dfinal_h, dpre, ws.enc_final["h"].reshape(L * B, -1), ws.scratch)
        dfinal = {"h": _split_directions(dfinal_h.reshape(L, B, -1), enc.directions)}
        if "bridge_c" in self.parts:
            dfinal_c = np.empty_like(ws.enc_final["c"]).reshape(L * B, -1)
            self.bridge_c.backward(
                k,
                w,
                dw,
                dfinal_c,
                np.ascontiguousarray(dstate["c"].reshape(L * B, -1)),
                ws.enc_final["c"].reshape(L * B, -1),
                ws.scratch,
            )
            dfinal["c"] = _split_directions(dfinal_c.reshape(L, B, -1), enc.directions)
        return dfinal


def _checked_source_lengths(lengths, S, B):
    lengths = np.asarray(lengths, np.intp)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > S:
        raise ValueError(f"source_lengths must be {B} values in 1..{S}")
    if (lengths[1:] > lengths[:-1]).any():
        raise ValueError("source rows must come longest first (source_lengths non-increasing)")
    return lengths


def _join_directions(state, layers, directions):
    # (L * dirs, B, H) layer-major -> (L, B, dirs * H): each layer's directions side by side
    _, B, H = state.shape
    return np.ascontiguousarray(state.reshape(layers, directions, B, H).transpose(0, 2, 1, 3)).reshape(
        layers, B, directions * H
    )


def _split_directions(joined, directions):
    # (L, B, dirs * H) -> (L * dirs, B, H), the inverse of _join_directions
    L, B, width = joined.shape
    H = width // directions
    return np.ascontiguousarray(joined.reshape(L, B, directions, H).transpose(0, 2, 1, 3)).reshape(
        L * directions, B, H
    )


class _Workspace:
    """Every buffer one (S, T, B) needs, allocated once and reused."""

    def __init__(self, net, S, T, B, dtype, zeros):
        enc, dec, cfg = net.encoder, net.decoder, net.config
        D, Hd, L, V = enc.output_width, dec.hidden, enc.layers, cfg.outputs
        self.S, self.T, self.B = S, T, B
        # The head's, the combine layer's and the bridge's products use the decoder's scratch.
        self.enc = enc.workspace(S, B, dtype, zeros=zeros)
        self.dec = dec.workspace(T, B, dtype, scratch=max(Hd * V, (D + Hd) * Hd, D * Hd), zeros=zeros)
        self.scratch = self.dec.scratch
        self.enc_out = zeros(S, B, D)
        self.enc_dout = zeros(S, B, D)
        self.bridge_h = zeros(L * B, Hd)
        self.bridge_c = zeros(L * B, Hd) if "bridge_c" in net.parts else None
        self.logits = zeros(T * B, V)
        self.losses = zeros(T * B)
        self.dfeats = zeros(T * B, Hd)
        if net.attention is not None:
            self.att = net.attention.workspace(B, T, S, dtype, zeros)
            self.queries = zeros(B, T, Hd)
            self.values = zeros(B, S, D)
            self.dcontext = zeros(B, T, D)
            self.combined = zeros(T, B, D + Hd)
            self.dcombined = zeros(T, B, D + Hd)
            self.attentional = zeros(T * B, Hd)


# --------------------------------------------------------------------------- the task

NAME = "translate"
UNIT = "chars"
EVAL_BATCH = 256  # pairs per forward call when scoring


def build_vocabs(data, rows):
    """(source vocabulary, target vocabulary) of the pairs ``rows`` of ``data`` (a PairsData):
    each side's characters sorted by code point; the target's then END and START (the last id),
    as a generator's (``numrnn.tasks.generate.build_vocab``)."""
    sources = [data.sources[i] for i in rows]
    targets = [data.targets[i] for i in rows]
    return Vocab(sorted(set("".join(sources)))), generate.build_vocab(targets)


def pair_batch(sources, targets, rows, start, end):
    """(source (S, B), source_lengths (B), tokens (T+1, B), targets (T+1, B), rows) of the pairs
    ``rows``, reordered longest source first (the order a Translator needs); ``sources`` and
    ``targets`` are EncodedTexts over the same pairs."""
    rows = np.asarray(rows)
    rows = rows[np.argsort(-sources.lengths[rows], kind="stable")]
    source, _, source_lengths = sources.batch(rows)
    tokens, target_ids, _ = generate.sequences(targets, rows, start, end)
    return source, source_lengths, tokens, target_ids, rows


def score(model, sources, targets, rows, start, end, *, should_stop=None, batch=EVAL_BATCH):
    """Mean loss per target character (nats; END counted) over the pairs ``rows``, and the
    characters scored; None when should_stop() turned true mid-way."""
    rows = np.asarray(rows)
    rows = rows[np.argsort(-sources.lengths[rows], kind="stable")]  # similar lengths together
    total, count = 0.0, 0
    for begin in range(0, len(rows), batch):
        if should_stop is not None and should_stop():
            return None
        source, lengths, tokens, target_ids, _ = pair_batch(
            sources, targets, rows[begin : begin + batch], start, end
        )
        chars = int(np.count_nonzero(target_ids >= 0))
        total += model.loss(source, lengths, tokens, target_ids).loss * chars
        count += chars
    return (total / count if count else float("nan")), count


class TranslateTask(ExamplesTask):
    """The trainer's task for a translator (see ``numrnn.trainer``): batches of pairs of
    similar source length, shuffled per (seed, epoch), longest source first; the loss per
    target character (END counted)."""

    name = NAME
    unit = UNIT

    def __init__(self, model, source_vocab, target_vocab, data, split, *, batch_size, seed, split_meta=None):
        """data: a PairsData; split: (train, val, test) index arrays into it; split_meta: what
        recreates the split (the data's path), saved in checkpoints. Validation pairs whose
        source has no known character, or whose target has a character the target
        vocabulary lacks, are left out (``val_skipped``): a loss over a changed target would
        be a loss over another sentence."""
        sources = EncodedTexts(source_vocab, data.sources)
        super().__init__(
            model,
            source_vocab,
            data,
            split,
            batch_size=batch_size,
            seed=seed,
            split_meta=split_meta,
            encoded=sources,
        )
        self.target_vocab = target_vocab
        self.targets = EncodedTexts(target_vocab, data.targets)
        self.start, self.end = generate.special_ids(target_vocab)
        whole_target = self.targets.lengths == np.asarray([len(text) for text in data.targets])
        usable = whole_target & (sources.lengths > 0)
        whole_source = sources.lengths == np.asarray([len(text) for text in data.sources])
        if not (usable[self.train_rows] & whole_source[self.train_rows]).all():
            bad = self.train_rows[~(usable & whole_source)[self.train_rows]][0]
            raise DataError(
                f"the training pair {data.sources[bad]!r} -> {data.targets[bad]!r} has characters "
                f"the model's vocabularies lack; train on the data the model was trained on"
            )
        self.val_skipped = int(np.count_nonzero(~usable[self.val_rows]))
        self.val_rows = self.val_rows[usable[self.val_rows]]

    # ------------------------------------------------------------------ sizes

    def _chars(self, rows):
        return int(np.sum(self.targets.lengths[rows] + 1))

    @property
    def items_per_step(self):
        """Target characters per step on average (each END counted)."""
        mean = float(np.mean(self.targets.lengths[self.train_rows] + 1))
        return round(mean * min(self.batch_size, len(self.train_rows)))

    @property
    def train_items(self):
        return self._chars(self.train_rows)

    @property
    def val_items(self):
        return self._chars(self.val_rows)

    def items_at(self, epoch, position):
        return self._chars(self.epoch_batches(epoch)[position])

    # ------------------------------------------------------------------ steps

    def batch_at(self, epoch, position):
        """pair_batch of the batch at ``position`` of ``epoch``."""
        rows = self.epoch_batches(epoch)[position]
        return pair_batch(self.encoded, self.targets, rows, self.start, self.end)

    def loss_and_grad(self, epoch, position, rng):
        source, lengths, tokens, targets, _ = self.batch_at(epoch, position)
        return self.model.loss_and_grad(source, lengths, tokens, targets, train=True, rng=rng).loss

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, should_stop=None):
        scored = score(
            self.model,
            self.encoded,
            self.targets,
            self.val_rows,
            self.start,
            self.end,
            should_stop=should_stop,
        )
        return characters_score(scored, UNIT)

    # ------------------------------------------------------------------ checkpoints

    def meta(self):
        data = self.data
        return {
            "data": {
                "digest": data.digest,
                "source": "tsv",
                "pairs": len(data),
                "blank_lines": data.blank_lines,
                "reverse": data.reverse,
                **self.split_meta,
            },
            "split": {
                "train": len(self.train_rows),
                "val": len(self.val_rows),
                "test": len(self.test_rows),
                "val_skipped": self.val_skipped,
            },
            "translate": {
                "target_vocab": list(self.target_vocab.chars),
                "start": generate.START,
                "end": generate.END,
            },
        }
