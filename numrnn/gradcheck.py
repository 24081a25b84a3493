"""Analytic BPTT gradients against central finite differences, in float64.

For each cell, layer count and loss, a tiny model is built from the seed; the gradient of
the loss with respect to every element of every parameter tensor and of the initial states
is computed by the kernels' backward and by central differences (f(x + e) - f(x - e)) / 2e
extrapolated to e -> 0 by Ridders' method, so the numeric side is accurate to about 1e-14
absolute and the comparison is limited by float64 alone. The error of one element is
``|a - b| / max(|a| + |b|, 1e-7)``; a tensor's row reports the largest over its elements. The
floor: below 1e-7 an element is compared absolutely, to 1e-13 at the default tolerance, which
is the finite differences' own float64 noise (a loss near 1 rounds at 1e-16). Without it, an
element that happens to be 1e-8 (an attention projection's, in some seeds) fails on noise
alone; a real error in such an element is of its own size and still fails by far.

Losses, one per topology:
- ``lm``: many-to-many, next-token cross-entropy at every step, embedding input;
- ``classify``: many-to-one, one-hot input, rows of different lengths right-padded (the class
  is read at each row's last real step);
- ``classify-bi``: the same with a bidirectional stack and embedding input;
- ``one-to-one``: a single step (T = 1), a plain classifier;
- ``generate``: one-to-many, a label-conditioned generator (condition "both": a learnt initial
  state per label and a per-label row added to layer 0's gates at every step), rows of
  different lengths right-padded (targets -1), labels repeated in the batch; the gradients of
  the conditioning tables (``cond.h0``, ``cond.c0``, ``cond.input``) are checked, and they are
  the initial state's.
- ``translate``, ``translate-dot``, ``translate-general``, ``translate-additive``: an
  encoder-decoder (``numrnn.tasks.translate``) without attention and with each kind; source
  rows of different lengths (longest first, so padded steps are skipped and padded positions
  masked out of the attention), right-padded targets (-1); the encoder is bidirectional for
  dot and additive, the decoder narrower than the encoder's outputs for general.
Both input paths (embedding, one-hot) are checked for every cell.
"""

from dataclasses import dataclass, field

import numpy as np

from numrnn.configs import GRADCHECK_LOSSES
from numrnn.model import CELLS, Model, ModelConfig
from numrnn.tasks.classify import Classifier
from numrnn.tasks.translate import Translator

DEFAULT_TOLERANCE = 1e-6
ERROR_FLOOR = 1e-7  # see the module docstring
LOSSES = GRADCHECK_LOSSES
LAYER_COUNTS = (1, 2)
FD_STEP = 0.1  # Ridders' first step; it shrinks by 1.4 per row
# Tiny shapes: every element is checked, 4 forward passes each.
VOCAB, EMBED, HIDDEN, CLASSES, STEPS, BATCH = 6, 4, 3, 3, 4, 2
# The generator's rows: a repeated label (its rows' gradients add up) and lengths 4, 2, 3.
GENERATE_LABELS = (2, 0, 2)
GENERATE_LENGTHS = (4, 2, 3)
# The translator's rows: source lengths (longest first) and target lengths (any order).
SOURCE_LENGTHS = (4, 3, 2)
TARGET_LENGTHS = (2, 4, 3)
# Per translate loss: (attention, bidirectional encoder, embedding width, decoder units).
TRANSLATE_CASES = {
    "translate": ("none", False, 0, 0),
    "translate-dot": ("dot", True, EMBED, 0),
    "translate-general": ("general", False, EMBED, 2),
    "translate-additive": ("additive", True, 0, 0),
}
INIT_SCALE = 1.5
ADDITIVE_V_SCALE = 4.0


def relative_error(analytic, numeric, floor=ERROR_FLOOR):
    """Largest elementwise |a - b| / max(|a| + |b|, floor)."""
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor)))


@dataclass(frozen=True)
class GradcheckRow:
    cell: str
    layers: int
    loss: str
    tensor: str
    max_rel_error: float
    max_abs_error: float
    ok: bool

    def to_dict(self):
        return {
            "cell": self.cell,
            "layers": self.layers,
            "loss": self.loss,
            "tensor": self.tensor,
            "max_rel_error": self.max_rel_error,
            "max_abs_error": self.max_abs_error,
            "ok": self.ok,
        }


@dataclass
class GradcheckReport:
    tolerance: float
    rows: list = field(default_factory=list)

    @property
    def ok(self):
        return bool(self.rows) and all(row.ok for row in self.rows)

    def worst(self, cell=None):
        """The largest error, over every row or over one cell's rows."""
        errors = [row.max_rel_error for row in self.rows if cell in (None, row.cell)]
        return max(errors) if errors else 0.0

    def to_dict(self):
        return {"ok": self.ok, "tolerance": self.tolerance, "rows": [row.to_dict() for row in self.rows]}


def _central_difference(f, x, index, step):
    """(f(x + h) - f(x - h)) / 2h with respect to x[index], restoring x after."""
    original = x[index]
    x[index] = original + step
    plus = f()
    x[index] = original - step
    minus = f()
    x[index] = original
    # Difference first: an element the loss does not use gives exactly 0.
    return (plus - minus) / (2.0 * step)


def ridders_derivative(f, x, index, step=FD_STEP, shrink=1.4, rows=12):
    """Derivative of f() with respect to x[index] by Ridders' method.

    Central differences at geometrically shrinking steps, extrapolated to step 0 in a Neville
    tableau (each column cancels one more even power of the step); the estimate with the
    smallest error estimate wins. Every row is computed (no early exit: stopping at the
    first rise of the error estimate picked poor estimates on tanh-saturated cases).
    Truncation error vanishes while the steps stay large, so rounding error stays near
    float64's floor (about 1e-14 here).
    """
    table = np.zeros((rows, rows))
    table[0, 0] = _central_difference(f, x, index, step)
    best, best_error = table[0, 0], np.inf
    factor = shrink * shrink
    for i in range(1, rows):
        step /= shrink
        table[0, i] = _central_difference(f, x, index, step)
        scale = factor
        for j in range(1, i + 1):
            table[j, i] = (table[j - 1, i] * scale - table[j - 1, i - 1]) / (scale - 1.0)
            scale *= factor
            error = max(abs(table[j, i] - table[j - 1, i]), abs(table[j, i] - table[j - 1, i - 1]))
            if error <= best_error:
                best, best_error = table[j, i], error
    return best


def numeric_gradient(f, x, step=FD_STEP):
    """The gradient of the scalar f() with respect to the array x (perturbed in place)."""
    grad = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        grad[index] = ridders_derivative(f, x, index, step)
    return grad


def check_model(model, run, state, *, step=FD_STEP):
    """Errors of the analytic gradient of ``model``'s loss, per parameter tensor and state.

    run(grad) -> LossResult: the loss with the model's current weights and ``state`` (its
    gradient left in ``model.grads`` when grad); state None: the initial state is not an
    input of its own (a conditioned model's comes from its parameters). Returns a list of
    (tensor name, max relative error, max absolute error); the model must be float64.
    """
    if model.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model")
    result = run(True)
    analytic = {name: grad.copy() for name, grad in model.dweights.items()}
    tensors = dict(model.weights)
    if state is not None:
        analytic["h0"] = result.dstate.h
        tensors["h0"] = state.h
        if state.c is not None:
            analytic["c0"] = result.dstate.c
            tensors["c0"] = state.c

    def loss():
        return run(False).loss

    rows = []
    for name, tensor in tensors.items():
        numeric = numeric_gradient(loss, tensor, step)
        abs_error = float(np.max(np.abs(analytic[name] - numeric)))
        rows.append((name, relative_error(analytic[name], numeric), abs_error))
    return rows


def build_case(cell, layers, loss, seed, kernels=None):
    """The tiny float64 model of one gradcheck row set, its initial state and its loss:
    (model, run(grad) -> LossResult, state)."""
    rng = np.random.default_rng(seed)
    if loss == "generate":
        return _generate_case(cell, layers, rng, kernels)
    if loss in TRANSLATE_CASES:
        return _translate_case(cell, layers, loss, rng, kernels)
    classify = loss != "lm"
    T = 1 if loss == "one-to-one" else STEPS
    config = ModelConfig(
        cell=cell,
        vocab_size=VOCAB,
        hidden=HIDDEN,
        layers=layers,
        embed=EMBED if loss in ("lm", "classify-bi") else 0,
        output_size=CLASSES if classify else 0,
        bidirectional=loss == "classify-bi",
    )
    model = (Classifier if classify else Model)(config, np.float64, kernels=kernels).init_weights(rng)
    # 1.5x PyTorch's scale keeps the lower layers' gradients well above float64's resolution.
    model.params *= INIT_SCALE
    tokens = rng.integers(0, VOCAB, (T, BATCH))
    state = model.zero_state(BATCH)
    # A non-zero initial state, so its gradient and every path through it are exercised.
    state.h[...] = rng.uniform(-0.5, 0.5, state.h.shape)
    if state.c is not None:
        state.c[...] = rng.uniform(-0.5, 0.5, state.c.shape)
    if not classify:
        targets = rng.integers(0, VOCAB, (T, BATCH))
        return model, lambda grad: _run(model, grad, tokens, targets, state=state), state
    targets = rng.integers(0, CLASSES, BATCH)
    # Rows of different lengths, right-padded: the padding must get no gradient and give none.
    lengths = np.minimum(np.arange(BATCH) % T + T - 1, T) if T > 1 else None
    return model, lambda grad: _run(model, grad, tokens, targets, lengths, state=state), state


def _generate_case(cell, layers, rng, kernels):
    # The generator's shape (numrnn.tasks.generate): the head outputs every id but the last
    # (the start token, an input only), the model reads each row's label.
    config = ModelConfig(
        cell=cell,
        vocab_size=VOCAB,
        hidden=HIDDEN,
        layers=layers,
        embed=EMBED,
        output_size=VOCAB - 1,
        condition="both",
        condition_classes=CLASSES,
    )
    model = Model(config, np.float64, kernels=kernels).init_weights(rng)
    model.params *= INIT_SCALE
    B = len(GENERATE_LABELS)
    tokens = rng.integers(0, VOCAB, (STEPS, B))
    targets = rng.integers(0, VOCAB - 1, (STEPS, B))
    targets[np.arange(STEPS)[:, None] >= np.asarray(GENERATE_LENGTHS)[None, :]] = -1
    labels = np.asarray(GENERATE_LABELS)
    return model, lambda grad: _run(model, grad, tokens, targets, labels=labels), None


def _translate_case(cell, layers, loss, rng, kernels):
    attention, bidirectional, embed, decoder_hidden = TRANSLATE_CASES[loss]
    config = ModelConfig(
        cell=cell,
        vocab_size=VOCAB,
        hidden=HIDDEN,
        layers=layers,
        embed=embed,
        output_size=VOCAB - 1,
        bidirectional=bidirectional,
        attention=attention,
        decoder_hidden=decoder_hidden,
    )
    model = Translator(config, np.float64, kernels=kernels).init_weights(rng)
    model.params *= INIT_SCALE
    if attention == "additive":
        # Scores far enough apart that the softmax is not flat: at the default scale the
        # projections' gradients are ~1e-8, where float64's 1e-14 noise is a 1e-6 error.
        model.weights["attention.v"][...] *= ADDITIVE_V_SCALE
    B = len(SOURCE_LENGTHS)
    source = rng.integers(0, VOCAB, (STEPS, B))
    tokens = rng.integers(0, VOCAB, (STEPS, B))  # the last id is START, an input only
    targets = rng.integers(0, VOCAB - 1, (STEPS, B))
    targets[np.arange(STEPS)[:, None] >= np.asarray(TARGET_LENGTHS)[None, :]] = -1
    lengths = np.asarray(SOURCE_LENGTHS)
    return model, lambda grad: _run(model, grad, source, lengths, tokens, targets), None


def _run(model, grad, *args, **kwargs):
    return model.loss_and_grad(*args, **kwargs) if grad else model.loss(*args, **kwargs)


def run_gradcheck(
    cells=CELLS,
    layer_counts=LAYER_COUNTS,
    losses=LOSSES,
    seed=0,
    tolerance=DEFAULT_TOLERANCE,
    kernels=None,
    on_row=None,
):
    """Check every (cell, layers, loss) combination; returns a ``GradcheckReport``.

    kernels: a kernel module to check instead of the CPU backend (tests pass deliberately
    broken ones). on_row: called with each row as soon as it is known.
    """
    report = GradcheckReport(tolerance)
    for cell in cells:
        for layers in layer_counts:
            for loss in losses:
                model, run, state = build_case(cell, layers, loss, seed, kernels)
                for name, rel_error, abs_error in check_model(model, run, state):
                    row = GradcheckRow(cell, layers, loss, name, rel_error, abs_error, rel_error < tolerance)
                    report.rows.append(row)
                    if on_row is not None:
                        on_row(row)
    return report
