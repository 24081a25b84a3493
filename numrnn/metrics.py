"""Classification metrics: accuracy, per-class precision/recall/F1, macro-F1, confusion; top-k;
and translation's chrF (``chrf``), sacrebleu's definition.

Dimension letters as everywhere: ``N`` examples, ``C`` classes. Label ids are ``0 .. C-1``,
indices into ``label_names``. Everything returned by ``classification_report`` is a plain
Python int, float, str, list or dict, so it can be ``json.dumps``'ed as it is.
"""

from collections import Counter

import numpy as np


def _label_ids(values, C, what):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of label ids, not shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} must hold integer label ids, not {values.dtype}")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= C):
        raise ValueError(f"{what} holds a label id outside 0..{C - 1}")
    return values


def _ratio(num, den):
    """num / den element-wise, 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_matrix(y_true, y_pred, C):
    """(C, C) int64 counts: row = true label, column = predicted label."""
    y_true = _label_ids(y_true, C, "y_true")
    y_pred = _label_ids(y_pred, C, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    return np.bincount(y_true * C + y_pred, minlength=C * C).reshape(C, C).astype(np.int64)


def classification_report(y_true, y_pred, label_names):
    """Accuracy, macro-F1, per-class precision/recall/F1/count and the confusion matrix.

    Returns ``{"accuracy", "macro_f1", "per_class": {name: {"precision", "recall", "f1",
    "count"}}, "confusion": {"labels": [...], "matrix": [[...]]}}`` in plain JSON types.
    ``count`` is the number of examples whose true label is the class (its support); confusion
    rows are true labels, columns predicted ones, in ``label_names`` order.

    Zero division gives 0, as scikit-learn's ``zero_division=0``: a class never predicted has
    precision 0, a class with no true examples has recall 0, and F1 is 0 when both are 0
    (F1 is computed as 2 TP / (2 TP + FP + FN), equal to the harmonic mean where defined).
    ``macro_f1`` is the unweighted mean of F1 over every label in ``label_names``, including
    labels absent from ``y_true`` (their F1 is 0): the same number as scikit-learn's
    ``f1_score(y_true, y_pred, labels=range(C), average="macro", zero_division=0)``.

    y_true, y_pred: (N,) integer label ids in ``0 .. C-1``, N >= 1 (ValueError otherwise).
    """
    label_names = [str(name) for name in label_names]
    C = len(label_names)
    if C == 0:
        raise ValueError("label_names is empty")
    if len(set(label_names)) != C:
        raise ValueError("label_names lists a label twice")
    confusion = confusion_matrix(y_true, y_pred, C)  # (C, C)
    N = int(confusion.sum())
    if N == 0:
        raise ValueError("no examples to score: y_true is empty")
    tp = np.diag(confusion)  # (C,)
    true_count = confusion.sum(axis=1)  # (C,) support
    pred_count = confusion.sum(axis=0)  # (C,)
    precision = _ratio(tp, pred_count)
    recall = _ratio(tp, true_count)
    f1 = _ratio(2 * tp, true_count + pred_count)
    per_class = {
        name: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "count": int(true_count[c]),
        }
        for c, name in enumerate(label_names)
    }
    return {
        "accuracy": float(tp.sum() / N),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion": {"labels": list(label_names), "matrix": confusion.tolist()},
    }


def top_k(probs, k):
    """(indices, values): the k largest entries of each row, descending.

    probs: (N, C) or (C,) scores (probabilities, logits: any order-comparable floats). Ties
    are broken by the lower label id (a stable sort). indices are int64; both results have
    shape (N, k), or (k,) for a 1-D input. 1 <= k <= C (ValueError otherwise); NaN is refused.
    """
    probs = np.asarray(probs)
    one_row = probs.ndim == 1
    if one_row:
        probs = probs[None, :]
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C) or (C,), not shape {np.shape(probs)}")
    C = probs.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= C:
        raise ValueError(f"k must be a whole number from 1 to {C} (the number of classes), not {k!r}")
    if np.isnan(probs).any():
        raise ValueError("probs holds NaN")
    # Stable sort of the negated scores: equal scores keep ascending label order.
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
    values = np.take_along_axis(probs, indices, axis=1)
    if one_row:
        return indices[0], values[0]
    return indices, values


# --------------------------------------------------------------------------- chrF

CHRF_ORDER = 6  # character n-grams of 1..6
CHRF_BETA = 2  # recall weighs beta^2 = 4 times precision


def char_ngram_statistics(hypothesis, reference, order=CHRF_ORDER):
    """[hypothesis n-grams, reference n-grams, matches] for n = 1..order, flattened, of one
    sentence pair, whitespace removed first; a hypothesis' n-grams count only where the
    reference has n-grams of that order (sacrebleu's rule)."""
    hypothesis = "".join(hypothesis.split())
    reference = "".join(reference.split())
    stats = []
    for n in range(1, order + 1):
        hyp = Counter(hypothesis[i : i + n] for i in range(len(hypothesis) - n + 1))
        ref = Counter(reference[i : i + n] for i in range(len(reference) - n + 1))
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items() if gram in ref)
        stats += [sum(hyp.values()) if ref else 0, sum(ref.values()), matches]
    return stats


def chrf(hypotheses, references, order=CHRF_ORDER, beta=CHRF_BETA):
    """Corpus-level chrF (Popovic 2015), 0-100, as sacrebleu's CHRF() computes it by default
    (chrF2: character n-grams up to 6, beta 2, whitespace ignored, no word n-grams): the
    sentences' n-gram statistics are summed, precision and recall averaged over the orders
    both sides have, then F_beta = (1 + beta^2) P R / (beta^2 P + R)."""
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    totals = [0] * (3 * order)
    for hypothesis, reference in zip(hypotheses, references):
        for i, value in enumerate(char_ngram_statistics(hypothesis, reference, order)):
            totals[i] += value
    precision = recall = 0.0
    orders = 0
    for n in range(order):
        hyp, ref, matches = totals[3 * n : 3 * n + 3]
        if hyp > 0 and ref > 0:
            precision += matches / hyp
            recall += matches / ref
            orders += 1
    if orders == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    if precision + recall == 0:
        return 0.0
    factor = beta**2
    return 100 * (1 + factor) * precision * recall / (factor * precision + recall)
