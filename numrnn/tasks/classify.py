"""Many-to-one: classify a sequence (a name's language, a sentence's sentiment).

    tokens (T, B), lengths (B) -> embedding or one-hot -> recurrent stack (optionally
    bidirectional) -> each row's state after its last real character (both directions side
    by side) -> head (dirs*H, C) -> softmax cross-entropy, optionally weighted per class

Rows are left-aligned and right-padded (see ``numrnn.layers`` for the masking contract): the
head reads row b's state at step ``lengths[b]``, so padding changes no loss, prediction or
gradient.
"""

import numpy as np

from numrnn.errors import ConfigError
from numrnn.metrics import classification_report
from numrnn.model import LossResult, Network, State, standard_layers
from numrnn.tasks.examples import EncodedTexts, ExamplesTask, batch_order  # noqa: F401 (callers)
from numrnn.trainer import Score


class Classifier(Network):
    """A recurrent classifier over ``config.output_size`` classes (a ``ModelConfig``)."""

    def __init__(self, config, dtype=np.float32, device="cpu", kernels=None):
        self.config = config.validate()
        if config.output_size < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, not {config.output_size}")
        self.embedding, self.stack, self.head = standard_layers(config)
        super().__init__([self.embedding, self.stack, self.head], dtype, device, kernels)

    @property
    def classes(self):
        return self.config.output_size

    def zero_state(self, batch):
        return State.from_dict(self.stack.zero_state(batch, self.dtype, self.xp))

    def _new_workspace(self, T, B):
        ws = _Workspace()
        D, C, xp = self.stack.output_width, self.classes, self.xp
        ws.stack = self.stack.workspace(T, B, self.dtype, scratch=D * C, xp=xp)
        ws.feats = xp.zeros((B, D), self.dtype)
        ws.dfeats = xp.zeros((B, D), self.dtype)
        ws.logits = xp.zeros((B, C), self.dtype)
        ws.losses = xp.zeros(B, self.dtype)
        return ws

    # ------------------------------------------------------------------ passes

    def logits(self, tokens, lengths=None, state=None):
        """(B, C) class scores (dropout off); a host copy."""
        ws, _, _ = self._forward(tokens, lengths, state, use_dropout=False, rng=None)
        return np.array(self.kernels.to_host(ws.logits))

    def probabilities(self, tokens, lengths=None, state=None):
        """(B, C) class probabilities, in float64."""
        logits = self.logits(tokens, lengths, state).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        return logits / logits.sum(axis=1, keepdims=True)

    def loss(self, tokens, targets, lengths=None, state=None, *, class_weights=None):
        """Mean cross-entropy without gradients (evaluation); dropout is off."""
        return self._run(tokens, targets, lengths, state, class_weights, grad=False)

    def loss_and_grad(
        self,
        tokens,
        targets,
        lengths=None,
        state=None,
        *,
        class_weights=None,
        train=False,
        rng=None,
        zero_grad=True,
        state_grad=True,
    ):
        """Mean cross-entropy and its gradient, left in ``grads`` (``+=`` unless zero_grad).

        tokens (T, B) ids, right-padded with any id; targets (B) class ids, below 0 ignored;
        lengths (B) real lengths, 1..T (None: all T). class_weights (C): the loss is
        sum_b w[y_b] * loss_b / sum_b w[y_b], as torch's CrossEntropyLoss(weight=w).
        Returns the loss, the final state (at each row's length) and the initial state's
        gradient (None with ``state_grad`` False, which saves the first step's recurrent
        product in backward).
        """
        return self._run(
            tokens,
            targets,
            lengths,
            state,
            class_weights,
            grad=True,
            train=train,
            rng=rng,
            zero_grad=zero_grad,
            state_grad=state_grad,
        )

    def _forward(self, tokens, lengths, state, *, use_dropout, rng):
        k, w = self.kernels, self.weights
        tokens = k.to_device(tokens, np.intp)
        T, B = tokens.shape
        lengths = np.full(B, T, np.intp) if lengths is None else np.asarray(lengths, np.intp)
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be {B} values in 1..{T}")
        state = self.zero_state(B) if state is None else self.on_device(state)
        ws = self._workspace(T, B)
        self.stack.forward(
            k, w, ws.stack, tokens, state.to_dict(), lengths=lengths, use_dropout=use_dropout, rng=rng
        )
        # Where each row's last real step is, as device indices.
        last = (k.to_device(lengths), self.xp.arange(B))
        H = self.stack.hidden
        for d in range(self.stack.directions):
            # The reverse direction's last real step is also at lengths[b]: it reads the row
            # backwards from its end.
            ws.feats[:, d * H : (d + 1) * H] = ws.stack.hs[(self.stack.layers - 1, d)][last]
        self.head.forward(k, w, ws.logits, ws.feats)
        return ws, lengths, last

    def _run(
        self,
        tokens,
        targets,
        lengths,
        state,
        class_weights,
        *,
        grad,
        train=False,
        rng=None,
        zero_grad=True,
        state_grad=True,
    ):
        k, w = self.kernels, self.weights
        use_dropout = grad and train and self.config.dropout > 0 and self.config.layers > 1
        if use_dropout and rng is None:
            raise ValueError("training with dropout needs an rng")
        ws, lengths, last = self._forward(tokens, lengths, state, use_dropout=use_dropout, rng=rng)
        targets = np.ascontiguousarray(targets, dtype=np.intp).reshape(-1)
        if targets.shape[0] != ws.logits.shape[0]:
            raise ValueError(f"targets have {targets.shape[0]} entries, expected {ws.logits.shape[0]}")
        real = targets >= 0
        if class_weights is None:
            row_weights = real.astype(np.float64)
        else:
            row_weights = np.where(real, np.asarray(class_weights, np.float64)[np.maximum(targets, 0)], 0.0)
        total = max(float(row_weights.sum()), np.finfo(np.float64).tiny)
        if grad:
            # dlogits overwrite the logits in place; per-row weights scale each row after.
            k.softmax_xent_fused(ws.losses, ws.logits, ws.logits, k.to_device(targets), 1.0)
        else:
            k.softmax_xent_forward(ws.losses, ws.logits, k.to_device(targets))
        loss = float(self.xp.dot(ws.losses.astype(np.float64), k.to_device(row_weights))) / total
        final = State.from_dict(self.stack.final_state(ws.stack, lengths))
        if not grad:
            return LossResult(loss, final)
        ws.logits *= k.to_device((row_weights / total).astype(self.dtype)[:, None])
        if zero_grad:
            self.grads[...] = 0.0
        self.head.backward(k, w, self.dweights, ws.dfeats, ws.logits, ws.feats, ws.stack.scratch)
        H = self.stack.hidden
        for d, dhs in enumerate(ws.stack.dhs):
            dhs[...] = 0.0
            dhs[last[0] - 1, last[1]] = ws.dfeats[:, d * H : (d + 1) * H]
        dstate0 = self.stack.backward(k, w, self.dweights, ws.stack, state_grad=state_grad)
        return LossResult(loss, final, State.from_dict(dstate0) if state_grad else None)


class _Workspace:
    pass


# --------------------------------------------------------------------------- the task

NAME = "classify"
UNIT = "examples"
EVAL_BATCH = 512  # examples per forward call when scoring (no gradients: wider is faster)


def balanced_weights(labels, classes):
    """(C,) class weights n / (C * n_c), as scikit-learn's "balanced" (0 for an absent class)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.zeros(classes)
    present = counts > 0
    weights[present] = len(labels) / (classes * counts[present])
    return weights


def score(model, encoded, rows=None, *, class_weights=None, should_stop=None, batch=EVAL_BATCH):
    """Mean loss, predictions and probabilities over ``encoded`` (rows: a subset), scored in
    batches of similar length. Rows without a known character are left out. Returns
    (loss, probabilities (N, C), rows scored) or None when should_stop() turned true."""
    rows = np.arange(len(encoded)) if rows is None else np.asarray(rows)
    rows = rows[encoded.lengths[rows] > 0]
    rows = rows[np.argsort(-encoded.lengths[rows], kind="stable")]  # longest first: packed steps
    probs = np.zeros((len(rows), model.classes))
    total, weight = 0.0, 0.0
    for start in range(0, len(rows), batch):
        if should_stop is not None and should_stop():
            return None
        part = rows[start : start + batch]
        tokens, targets, lengths = encoded.batch(part)
        if (targets >= 0).any():
            result = model.loss(tokens, targets, lengths, class_weights=class_weights)
            w = (
                np.ones(len(part))
                if class_weights is None
                else np.asarray(class_weights)[np.maximum(targets, 0)]
            ) * (targets >= 0)
            total += result.loss * w.sum()
            weight += w.sum()
        probs[start : start + len(part)] = model.probabilities(tokens, lengths)
    return (total / weight if weight else float("nan")), probs, rows


class ClassifyTask(ExamplesTask):
    """The trainer's task for a sequence classifier (see ``numrnn.trainer``)."""

    name = NAME
    unit = UNIT

    def __init__(self, model, vocab, data, split, *, batch_size, seed, balance=False, split_meta=None):
        """data: a LabelledData; split: (train, val, test) index arrays into it; split_meta:
        what recreates the split (the data's path), saved in checkpoints."""
        super().__init__(model, vocab, data, split, batch_size=batch_size, seed=seed, split_meta=split_meta)
        # Training examples are never empty (the vocabulary is theirs); val/test ones may be.
        self.val_rows = self.val_rows[self.encoded.lengths[self.val_rows] > 0]
        self.balance = balance
        self.class_weights = (
            balanced_weights(data.labels[self.train_rows], model.classes) if balance else None
        )

    # ------------------------------------------------------------------ sizes

    @property
    def items_per_step(self):
        return self.batch_size

    @property
    def train_items(self):
        return len(self.train_rows)

    @property
    def val_items(self):
        return len(self.val_rows)

    def items_at(self, epoch, position):
        return len(self.epoch_batches(epoch)[position])

    # ------------------------------------------------------------------ steps

    def loss_and_grad(self, epoch, position, rng):
        rows = self.epoch_batches(epoch)[position]
        tokens, targets, lengths = self.encoded.batch(rows)
        return self.model.loss_and_grad(
            tokens, targets, lengths, class_weights=self.class_weights, train=True, rng=rng, state_grad=False
        ).loss

    def evaluate(self, should_stop=None):
        scored = score(
            self.model, self.encoded, self.val_rows, class_weights=self.class_weights, should_stop=should_stop
        )
        if scored is None:
            return None
        loss, probs, rows = scored
        report = classification_report(self.data.labels[rows], probs.argmax(axis=1), self.data.label_names)
        return Score(
            loss=loss,
            count=len(rows),
            unit=UNIT,
            metrics={"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]},
        )

    def meta(self):
        return {**self.data_meta(), "classify": {"balance": self.balance}}
