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
target, then source, length (``numrnn.tasks.examples.batch_order``), longest source first;
the loss is per target character, END counted.
"""

import heapq
from dataclasses import dataclass

import numpy as np

from numrnn.data import Vocab
from numrnn.errors import ConfigError, DataError
from numrnn.layers import Arena, Attention, Embedding, Linear, RecurrentStack, take_rows
from numrnn.metrics import chrf
from numrnn.model import LossResult, Network, State, mean_cross_entropy
from numrnn.tasks import generate
from numrnn.tasks.examples import EncodedTexts, ExamplesTask
from numrnn.trainer import Score, characters_score


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


# What the workspace buffers that are written before they are read start as: left as the
# last batch left them (None), or NaN in the tests that prove they are written first.
UNZEROED_FILL = None


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
            self._arena = Arena(self.dtype, unzeroed_fill=UNZEROED_FILL, xp=self.xp)
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
        source = k.to_device(source, np.intp)
        tokens = k.to_device(tokens, np.intp)
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
        feats = self._attend(ws, k.to_device(lengths))
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
            enc.zero_state(B, self.dtype, self.xp),
            lengths=lengths,
            use_dropout=use_dropout,
            rng=rng,
        )
        top, H = enc.layers - 1, enc.hidden
        outputs = ws.enc_out  # (S, B, D), time order
        outputs[:, :, :H] = ws.enc.hs[(top, 0)][1:]
        if enc.directions > 1:
            outputs[:, :, H:] = take_rows(ws.enc.hs[(top, 1)][1:], ws.enc.reverse)
        # Rows are sorted longest first, so each row's states hold past its end: the final
        # states are every row's own.
        final = enc.final_state(ws.enc)
        ws.enc_final = {
            name: _join_directions(self.xp, state, enc.layers, enc.directions)
            for name, state in final.items()
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
        lengths: the source lengths per row, in the kernels' memory; keys_ready: the values
        and keys of this source are in ws already (step decoding)."""
        dec_out = self.decoder.top_outputs(ws.dec)  # (T, B, Hd)
        T, B, Hd = dec_out.shape
        if self.attention is None:
            return dec_out.reshape(T * B, Hd)
        k, w = self.kernels, self.weights
        ws.queries[...] = dec_out.transpose(1, 0, 2)
        if not keys_ready:
            ws.values[...] = ws.enc_out.transpose(1, 0, 2)
            self.attention.keys(k, w, ws.att, ws.values)
        self.attention.attend(k, w, ws.att, ws.queries, ws.values, lengths, ws.group)
        D = ws.values.shape[2]
        ws.combined[:, :, :D] = ws.att.context.transpose(1, 0, 2)
        ws.combined[:, :, D:] = dec_out
        self.combine.forward(k, w, ws.attentional, ws.combined.reshape(T * B, -1))
        np.tanh(ws.attentional, out=ws.attentional)
        return ws.attentional

    # ------------------------------------------------------------------ decoding

    def _start_decoding(self, source, lengths, repeat=1):
        """(decoding workspace, decoder state) after encoding source (S, B), for steps of one
        character, each row repeated ``repeat`` times (row b's copies are rows b * repeat ...):
        the encoder runs once per source row, and its values and keys are copied."""
        S, B = source.shape
        k, w = self.kernels, self.weights
        source = k.to_device(source, np.intp)
        ws = self._workspace(S, 1, B)
        self._encode(ws, source, lengths, False, None)
        self._bridge_forward(ws)
        state = {name: np.repeat(value, repeat, axis=1) for name, value in ws.dec_state.items()}
        if self.attention is not None:
            ws.values[...] = ws.enc_out.transpose(1, 0, 2)
            self.attention.keys(k, w, ws.att, ws.values)
        return self._decoding_rows(ws, np.arange(B), repeat), state

    def _decoding_workspace(self, S, B, group):
        if self._arena is None:
            self._arena = Arena(self.dtype, unzeroed_fill=UNZEROED_FILL, xp=self.xp)
        self._current = self._arena.carve(
            lambda zeros: _DecodingWorkspace(self, S, B, group, self.dtype, zeros)
        )
        self._current_key = ("decoding", S, B, group)
        return self._current

    def _decoding_rows(self, ws, sources, group):
        """A decoding workspace of ``group`` rows for each of the sources ``sources``
        (host indices or a bool mask over the sources of ``ws``), holding their values and
        keys once each (the arena's buffers are shared: they are copied out first)."""
        count = len(np.arange(ws.B // ws.group)[sources])
        if self.attention is None:
            return self._decoding_workspace(ws.S, count * group, group)
        sources = self.kernels.to_device(sources)
        values = ws.values[sources]
        keys = ws.att.keys[sources] if ws.att.keys is not None else None
        ws = self._decoding_workspace(ws.S, count * group, group)
        ws.values[...] = values
        if keys is not None:
            ws.att.keys[...] = keys
        return ws

    def _decode_step(self, ws, tokens, state, lengths):
        """(B, V) logits of one decoder step from ``state`` reading tokens (1, B) (host ids),
        in a decoding workspace (its values and keys in place); in the kernels' memory."""
        k, w = self.kernels, self.weights
        self.decoder.forward(k, w, ws.dec, k.to_device(tokens, np.intp), state)
        self.head.forward(k, w, ws.logits, self._attend(ws, k.to_device(lengths), keys_ready=True))
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
        host = self.kernels.to_host
        for step in range(max_length):
            # Each step's choices cross to the host (they decide when to stop).
            chosen = host(self._decode_step(ws, tokens, state, lengths).argmax(axis=1))
            outputs[step] = np.where(running, chosen, end)
            if self.attention is not None:
                attention[:, step] = host(ws.att.weights[:, 0]) * running[:, None]
            running &= chosen != end
            steps = step + 1
            if not running.any():
                break
            state = self.decoder.final_state(ws.dec)
            tokens[0] = chosen
        ids = [[int(t) for t in outputs[:steps, b] if t != end] for b in range(B)]
        return ids, ~running, attention[:, :steps]

    def beam_search(
        self,
        source,
        source_lengths,
        start,
        end,
        *,
        beam=5,
        max_length=100,
        alpha=1.0,
        n_best=1,
        keep_attention=False,
    ):
        """The ``n_best`` translations of each source row found by a beam of ``beam``
        hypotheses, ranked by log-probability / length**alpha (length counts END; alpha >= 0).
        An ended hypothesis leaves the beam and the best extensions of the others refill it.
        All rows' hypotheses step together: the decoder runs at rows x beam per step, and
        ``beam_extend`` keeps each row's ``beam`` best extensions. A row stops once none of its
        hypotheses can beat its n-best ended ones (a log-probability only falls, so a
        hypothesis at score s ends at best at s / max_length**alpha), which returns what
        running to ``max_length`` would; done rows leave the batch once they are a sixteenth
        of it. Returns per row a list
        of (ids without END, normalised score, log-probability, ended, attention (steps, S) or
        None unless keep_attention), best first."""
        source = np.ascontiguousarray(source, dtype=np.intp)
        S, B = source.shape
        lengths = _checked_source_lengths(source_lengths, S, B)
        K = int(beam)
        if K < 1 or not 1 <= n_best <= K or max_length < 1 or alpha < 0:
            raise ValueError(
                f"beam must be at least 1, n_best in 1..beam, max_length at least 1 and alpha at "
                f"least 0, not {beam}, {n_best}, {max_length} and {alpha}"
            )
        search = _BeamSearch(B, K, S, max_length, keep_attention and self.attention is not None)
        alive = np.arange(B)  # the source rows still searched, in their (longest-first) order
        lengths_k = np.repeat(lengths, K)  # hypothesis h of row b is row b * K + h of every batch
        ws, state = self._start_decoding(source, lengths, repeat=K)
        k, xp = self.kernels, self.xp
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0  # one live hypothesis per row to start with, not K copies
        tokens = np.full(B * K, start, np.intp)
        best_d, new_scores_d = xp.empty((B, K), np.intp), xp.empty((B, K))
        bound_scale = float(max_length) ** -alpha
        for step in range(max_length):
            R = len(alive)
            logits = self._decode_step(ws, tokens[None, :], state, lengths_k)
            # The extensions are chosen where the logits are; the (R, K) choices and scores
            # cross to the host, which keeps the search's bookkeeping.
            k.beam_extend(best_d[:R], new_scores_d[:R], logits, k.to_device(scores))
            best, new_scores = k.to_host(best_d[:R]), k.to_host(new_scores_d[:R])
            V = logits.shape[1]
            local_parent = best // V + np.arange(R)[:, None] * K  # (R, K) rows extended
            chosen = best % V
            weights = k.to_host(ws.att.weights[:, 0]) if search.attention is not None else None
            search.record(step, alive, local_parent, chosen, weights)
            scores = new_scores.copy()
            ended = (chosen == end) & np.isfinite(scores)
            ended_r, ended_h = np.nonzero(ended)
            search.finish(step, alive[ended_r], ended_h, scores[ended_r, ended_h], n_best, alpha)
            scores[ended] = -np.inf  # an ended hypothesis leaves the beam
            # A row is done when its best live hypothesis cannot beat its n-best-th ended one.
            bound = scores.max(axis=1) * bound_scale
            done = (bound <= search.threshold[alive]) | ~np.isfinite(bound)
            parents = k.to_device(local_parent.reshape(-1))
            state = {name: value[:, parents] for name, value in self.decoder.final_state(ws.dec).items()}
            tokens = chosen.reshape(-1)
            if done.all() or step + 1 == max_length:
                break
            if 16 * np.count_nonzero(done) >= R:  # a done row may run on: its results cannot change
                keep = ~done
                alive, scores = alive[keep], scores[keep]
                keep_k = np.repeat(keep, K)
                tokens, lengths_k = tokens[keep_k], lengths_k[keep_k]
                kept = k.to_device(keep_k)
                state = {name: xp.ascontiguousarray(value[:, kept]) for name, value in state.items()}
                ws = self._decoding_rows(ws, keep, K)
        return search.results(alive, scores, n_best, alpha)

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
            ws.enc.dhs[1][...] = take_rows(denc[:, :, H:], ws.enc.reverse)
        enc.backward(k, w, dw, ws.enc, dfinal, state_grad=False)

    def _bridge_backward(self, ws, dstate):
        """The gradient reaching the encoder's final states, as the stack's dstate dict."""
        k, w, dw = self.kernels, self.weights, self.dweights
        enc = self.encoder
        L, B = enc.layers, ws.B
        dpre = dstate["h"].reshape(L * B, -1) * (1.0 - ws.bridge_h * ws.bridge_h)
        xp = self.xp
        dfinal_h = xp.empty_like(ws.enc_final["h"]).reshape(L * B, -1)
        self.bridge.backward(k, w, dw, dfinal_h, dpre, ws.enc_final["h"].reshape(L * B, -1), ws.scratch)
        dfinal = {"h": _split_directions(xp, dfinal_h.reshape(L, B, -1), enc.directions)}
        if "bridge_c" in self.parts:
            dfinal_c = xp.empty_like(ws.enc_final["c"]).reshape(L * B, -1)
            self.bridge_c.backward(
                k,
                w,
                dw,
                dfinal_c,
                xp.ascontiguousarray(dstate["c"].reshape(L * B, -1)),
                ws.enc_final["c"].reshape(L * B, -1),
                ws.scratch,
            )
            dfinal["c"] = _split_directions(xp, dfinal_c.reshape(L, B, -1), enc.directions)
        return dfinal


class _BeamSearch:
    """What a beam search over B rows x K hypotheses remembers: per step, each hypothesis'
    character, its parent (the hypothesis it extended, numbered b * K + h) and optionally its
    attention; and each row's ended hypotheses, with the n-best-th one's score
    (``threshold``). Paths are read back only for the hypotheses returned."""

    def __init__(self, B, K, S, max_length, keep_attention):
        self.K = K
        self.chars = np.zeros((max_length, B * K), np.intp)
        self.parents = np.zeros((max_length, B * K), np.intp)
        self.attention = np.zeros((max_length, B * K, S), np.float32) if keep_attention else None
        self.finished = [[] for _ in range(B)]  # (normalised score, log-probability, step, hyp)
        self.threshold = np.full(B, -np.inf)
        self._best = [[] for _ in range(B)]
        self.steps = 0

    def record(self, step, alive, local_parent, chosen, weights):
        """alive (R,) the rows in this step's batch; local_parent (R, K) the batch rows each new
        hypothesis extends; chosen (R, K) their characters; weights (R*K, S) the batch rows'
        attention (None unless kept)."""
        K = self.K
        hyps = (alive[:, None] * K + np.arange(K)).reshape(-1)
        parents = local_parent.reshape(-1)
        self.chars[step, hyps] = chosen.reshape(-1)
        self.parents[step, hyps] = hyps[parents]
        if self.attention is not None:
            self.attention[step, hyps] = weights[parents]
        self.steps = step + 1

    def finish(self, step, rows, hs, logps, n_best, alpha):
        """Hypotheses hs of rows (arrays) ended at ``step`` with log-probabilities logps."""
        norms = logps / (step + 1) ** alpha
        for b, h, norm, logp in zip(rows.tolist(), hs.tolist(), norms.tolist(), logps.tolist()):
            self.finished[b].append((norm, logp, step, b * self.K + h))
            best = self._best[b]  # a heap of the row's n_best best scores
            if len(best) < n_best:
                heapq.heappush(best, norm)
            else:
                heapq.heappushpop(best, norm)
            if len(best) == n_best:
                self.threshold[b] = best[0]

    def _path(self, step, hyp):
        chars = np.empty(step + 1, np.intp)
        hyps = np.empty(step + 1, np.intp)
        for s in range(step, -1, -1):
            chars[s], hyps[s] = self.chars[s, hyp], hyp
            hyp = self.parents[s, hyp]
        attention = None if self.attention is None else self.attention[np.arange(step + 1), hyps]
        return chars, attention

    def results(self, alive, scores, n_best, alpha):
        """Per row its n_best hypotheses, best first (see Translator.beam_search); alive and
        scores (R, K): the rows still searched when the search stopped and their live
        hypotheses' log-probabilities, which count when a row has too few ended ones."""
        n = self.steps
        live = dict(zip(alive.tolist(), scores))
        out = []
        for b, ended in enumerate(self.finished):
            candidates = [(norm, logp, True, step, hyp) for norm, logp, step, hyp in ended]
            if len(candidates) < n_best and b in live:
                for h in np.argsort(-live[b], kind="stable"):
                    if np.isfinite(live[b][h]):
                        logp = float(live[b][h])
                        candidates.append((logp / n**alpha, logp, False, n - 1, b * self.K + h))
            candidates.sort(key=lambda c: -c[0])  # stable: among ties the earlier ended first
            row = []
            for norm, logp, has_ended, step, hyp in candidates[:n_best]:
                chars, attention = self._path(step, hyp)
                ids = chars[:-1] if has_ended else chars  # without END
                row.append((ids.tolist(), float(norm), float(logp), has_ended, attention))
            out.append(row)
        return out


def _checked_source_lengths(lengths, S, B):
    lengths = np.asarray(lengths, np.intp)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > S:
        raise ValueError(f"source_lengths must be {B} values in 1..{S}")
    if (lengths[1:] > lengths[:-1]).any():
        raise ValueError("source rows must come longest first (source_lengths non-increasing)")
    return lengths


def _join_directions(xp, state, layers, directions):
    # (L * dirs, B, H) layer-major -> (L, B, dirs * H): each layer's directions side by side
    _, B, H = state.shape
    return xp.ascontiguousarray(state.reshape(layers, directions, B, H).transpose(0, 2, 1, 3)).reshape(
        layers, B, directions * H
    )


def _split_directions(xp, joined, directions):
    # (L, B, dirs * H) -> (L * dirs, B, H), the inverse of _join_directions
    L, B, width = joined.shape
    H = width // directions
    return xp.ascontiguousarray(joined.reshape(L, B, directions, H).transpose(0, 2, 1, 3)).reshape(
        L * directions, B, H
    )


class _Workspace:
    """Every buffer one (S, T, B) needs, allocated once and reused. Only the encoder's (its
    rows stop at their lengths) and a few small ones start zeroed: every pass writes the
    others whole before reading them (``written``; a test fills them with NaN first)."""

    def __init__(self, net, S, T, B, dtype, zeros):
        enc, dec, cfg = net.encoder, net.decoder, net.config
        D, Hd, L, V = enc.output_width, dec.hidden, enc.layers, cfg.outputs
        written = lambda *shape: zeros(*shape, zeroed=False)  # noqa: E731
        self.S, self.T, self.B, self.group = S, T, B, 1
        # The head's, the combine layer's and the bridge's products use the decoder's scratch.
        self.enc = enc.workspace(S, B, dtype, zeros=zeros, xp=net.xp)
        self.dec = dec.workspace(
            T, B, dtype, scratch=max(Hd * V, (D + Hd) * Hd, D * Hd), zeros=zeros, every_row=True, xp=net.xp
        )
        self.scratch = self.dec.scratch
        self.enc_out = written(S, B, D)
        self.enc_dout = written(S, B, D)
        self.bridge_h = zeros(L * B, Hd)
        self.bridge_c = zeros(L * B, Hd) if "bridge_c" in net.parts else None
        self.logits = written(T * B, V)
        self.losses = written(T * B)
        self.dfeats = written(T * B, Hd)
        if net.attention is not None:
            self.att = net.attention.workspace(B, T, S, dtype, written)
            self.queries = written(B, T, Hd)
            self.values = written(B, S, D)
            self.dcontext = written(B, T, D)
            self.combined = written(T, B, D + Hd)
            self.dcombined = written(T, B, D + Hd)
            self.attentional = written(T * B, Hd)


class _DecodingWorkspace:
    """What steps of one character over B rows need (no encoder, no backward buffers); each
    ``group`` consecutive rows (a beam's hypotheses) share one source's values and keys."""

    def __init__(self, net, S, B, group, dtype, zeros):
        dec, D, Hd = net.decoder, net.encoder.output_width, net.decoder.hidden
        self.S, self.T, self.B, self.group = S, 1, B, group
        self.dec = dec.workspace(1, B, dtype, zeros=zeros, backward=False, xp=net.xp)
        self.logits = zeros(B, net.config.outputs)
        if net.attention is not None:
            self.att = net.attention.workspace(B, 1, S, dtype, zeros, backward=False, group=group)
            self.queries = zeros(B, 1, Hd)
            self.values = zeros(B // group, S, D)
            self.combined = zeros(1, B, D + Hd)
            self.attentional = zeros(B, Hd)


# --------------------------------------------------------------------------- the task

NAME = "translate"
UNIT = "chars"
EVAL_BATCH = 256  # pairs per forward call when scoring, and per greedy decoding call
BEAM_ROWS = 1280  # hypotheses per beam-search call: 256 sentences at beam 5
CHRF_SAMPLE = 500  # validation pairs translated (greedy) at each evaluation for chrF


@dataclass
class Translation:
    """One decoded output: its text, its normalised score and log-probability (None from
    greedy decoding), whether it ended (False: cut at the length limit), and its attention
    (one row per output character, END's included when it ended, over the source's
    characters) when asked for."""

    text: str
    score: float | None
    logprob: float | None
    ended: bool
    attention: np.ndarray | None = None


def decode(
    model,
    sources,
    rows,
    target_vocab,
    *,
    beam=5,
    alpha=1.0,
    n_best=1,
    max_length=100,
    keep_attention=False,
    should_stop=None,
):
    """Translate the sources ``rows`` of ``sources`` (EncodedTexts; each row with at least one
    known character): per row, in the given order, a list of its ``n_best`` Translations, best
    first. beam 0: greedy decoding (one Translation each, unscored); otherwise
    ``Translator.beam_search`` with length penalty ``alpha``. Rows are decoded in batches of
    similar length; None when should_stop() turned true mid-way."""
    start, end = generate.special_ids(target_vocab)
    chars = target_vocab.chars
    rows = np.asarray(rows, np.intp)
    order = np.argsort(-sources.lengths[rows], kind="stable")  # longest first, as the model needs
    batch = EVAL_BATCH if beam == 0 else max(1, BEAM_ROWS // beam)
    keep_attention = keep_attention and model.attention is not None
    out = [None] * len(rows)
    for begin in range(0, len(rows), batch):
        if should_stop is not None and should_stop():
            return None
        chunk = order[begin : begin + batch]
        source, _, lengths = sources.batch(rows[chunk])
        if beam == 0:
            ids, ended, attention = model.greedy(source, lengths, start, end, max_length)
            for i, at in enumerate(chunk):
                steps = len(ids[i]) + int(ended[i])
                weights = attention[i, :steps, : lengths[i]].copy() if keep_attention else None
                out[at] = [
                    Translation("".join(chars[c] for c in ids[i]), None, None, bool(ended[i]), weights)
                ]
            continue
        results = model.beam_search(
            source,
            lengths,
            start,
            end,
            beam=beam,
            max_length=max_length,
            alpha=alpha,
            n_best=n_best,
            keep_attention=keep_attention,
        )
        for i, at in enumerate(chunk):
            out[at] = [
                Translation(
                    "".join(chars[c] for c in ids),
                    score,
                    logprob,
                    ended,
                    None if weights is None else weights[:, : lengths[i]],
                )
                for ids, score, logprob, ended, weights in results[i]
            ]
    return out


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
    similar target and source lengths, shuffled per (seed, epoch), longest source first; the
    loss per target character (END counted)."""

    name = NAME
    unit = UNIT
    # The best checkpoint is the one that translates best: on eng-fra the validation loss
    # turns up after ~13 epochs while greedy chrF keeps rising (test chrF 33.9 at the best
    # loss, 43.0 at 30 epochs).
    select_by = "chrf"

    def __init__(
        self,
        model,
        source_vocab,
        target_vocab,
        data,
        split,
        *,
        batch_size,
        seed,
        split_meta=None,
        limits=None,
        chrf_sample=CHRF_SAMPLE,
    ):
        """data: a PairsData; split: (train, val, test) index arrays into it; split_meta: what
        recreates the split (the data's path), saved in checkpoints; limits: how the pairs
        were filtered ({"max_source_len", "max_target_len": 0 for none, "filtered_source",
        "filtered_target": pairs left out}), saved too. Validation pairs whose source has no
        known character, or whose target has a character the target vocabulary lacks, are
        left out (``val_skipped``): a loss over a changed target would be a loss over another
        sentence. Each evaluation also translates the first ``chrf_sample`` validation pairs
        (a random sample: the split is shuffled) greedily, for their chrF."""
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
        self.limits = dict(limits or {})
        self.chrf_sample = chrf_sample
        train_sources = sources.lengths[self.train_rows]
        train_targets = self.targets.lengths[self.train_rows]
        # What decoding allows by default: sources up to the longest trained on (or the
        # filter's limit), outputs up to twice the longest training target.
        self.max_source_len = int(self.limits.get("max_source_len") or train_sources.max(initial=1))
        self.max_length = 2 * int(train_targets.max(initial=1))

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

    def batch_lengths(self):
        """Batches group pairs of similar target length, then source length: the decoder (run
        over the longest target of its batch, every row) is where the work is, and the
        encoder computes only each row's own steps anyway (rows longest source first)."""
        return self.targets.lengths * (int(self.encoded.lengths.max(initial=0)) + 1) + self.encoded.lengths

    def batch_at(self, epoch, position):
        """pair_batch of the batch at ``position`` of ``epoch``."""
        rows = self.epoch_batches(epoch)[position]
        return pair_batch(self.encoded, self.targets, rows, self.start, self.end)

    def loss_and_grad(self, epoch, position, rng):
        source, lengths, tokens, targets, _ = self.batch_at(epoch, position)
        return self.model.loss_and_grad(source, lengths, tokens, targets, train=True, rng=rng).loss

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, should_stop=None):
        """The loss per target character over the validation pairs, and the greedy chrF of
        the first ``chrf_sample`` of them."""
        scored = characters_score(
            score(
                self.model,
                self.encoded,
                self.targets,
                self.val_rows,
                self.start,
                self.end,
                should_stop=should_stop,
            ),
            UNIT,
        )
        sample = self.val_rows[: self.chrf_sample]
        if scored is None or not len(sample):
            return scored
        outputs = decode(
            self.model,
            self.encoded,
            sample,
            self.target_vocab,
            beam=0,
            max_length=self.max_length,
            should_stop=should_stop,
        )
        if outputs is None:
            return None
        hypotheses = [row[0].text for row in outputs]
        references = [self.data.targets[i] for i in sample]
        return Score(
            scored.loss, scored.count, scored.unit, {**scored.metrics, "chrf": chrf(hypotheses, references)}
        )

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
                "max_source_len": self.max_source_len,
                "max_length": self.max_length,
                "limits": self.limits,
                "chrf_sample": min(self.chrf_sample, len(self.val_rows)),
            },
        }
