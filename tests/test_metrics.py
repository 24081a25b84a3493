"""metrics.py: classification_report against hand-computed numbers and a loop reference; top_k.

The report also equalled scikit-learn 1.9.1's accuracy_score, f1_score(average="macro",
zero_division=0) and precision_recall_fscore_support on 400 random examples with an absent and
a never-predicted label (checked once by hand: scikit-learn is no dependency of numrnn)."""

import json

import numpy as np
import pytest

from numrnn.metrics import classification_report, confusion_matrix, top_k

# Ratios of small integer counts: only the last bits may differ from the reference's order.
METRIC_RTOL = 1e-12
METRIC_ATOL = 1e-15


def reference_report(y_true, y_pred, C):
    """Plain-Python loops: the textbook definitions with zero_division=0."""
    confusion = [[0] * C for _ in range(C)]
    for t, p in zip(y_true, y_pred):
        confusion[t][p] += 1
    precision, recall, f1, count = [], [], [], []
    for c in range(C):
        tp = confusion[c][c]
        predicted = sum(confusion[r][c] for r in range(C))
        actual = sum(confusion[c])
        prec = tp / predicted if predicted else 0.0
        rec = tp / actual if actual else 0.0
        precision.append(prec)
        recall.append(rec)
        f1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        count.append(actual)
    correct = sum(1 for t, p in zip(y_true, y_pred) if t == p)
    return {
        "confusion": confusion,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "count": count,
        "accuracy": correct / len(y_true),
        "macro_f1": sum(f1) / C,
    }


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=METRIC_RTOL, atol=METRIC_ATOL, err_msg=what)


def test_hand_computed_small_example():
    # a, b, c, d: b is never predicted, d never occurs in y_true.
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 2, 0, 3, 2, 2, 0]
    report = classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    assert report["confusion"] == {
        "labels": ["a", "b", "c", "d"],
        "matrix": [[2, 0, 1, 0], [1, 0, 0, 1], [1, 0, 2, 0], [0, 0, 0, 0]],
    }
    assert report["accuracy"] == 0.5
    per = report["per_class"]
    assert list(per) == ["a", "b", "c", "d"]
    expected = {  # precision, recall, f1, count
        "a": (2 / 4, 2 / 3, 4 / 7, 3),
        "b": (0.0, 0.0, 0.0, 2),
        "c": (2 / 3, 2 / 3, 2 / 3, 3),
        "d": (0.0, 0.0, 0.0, 0),
    }
    for name, (precision, recall, f1, count) in expected.items():
        assert_close(per[name]["precision"], precision, f"{name} precision")
        assert_close(per[name]["recall"], recall, f"{name} recall")
        assert_close(per[name]["f1"], f1, f"{name} f1")
        assert per[name]["count"] == count
    # Mean over all four labels, d (absent from y_true) included as 0.
    assert_close(report["macro_f1"], 13 / 42, "macro_f1")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    C, N = 7, 600
    # Label 5 never occurs in y_true; label 2 is never predicted.
    y_true = rng.choice([0, 1, 2, 3, 4, 6], size=N, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    y_pred = np.where(rng.random(N) < 0.6, y_true, rng.integers(0, C, N))
    y_pred[y_pred == 2] = 3
    assert 5 not in y_true and 2 not in y_pred and 5 in y_pred
    names = [f"label{c}" for c in range(C)]
    report = classification_report(y_true, y_pred, names)
    ref = reference_report(y_true.tolist(), y_pred.tolist(), C)
    assert report["confusion"]["matrix"] == ref["confusion"]
    assert_close(report["accuracy"], ref["accuracy"], "accuracy")
    assert_close(report["macro_f1"], ref["macro_f1"], "macro_f1")
    for c, name in enumerate(names):
        for key in ("precision", "recall", "f1"):
            assert_close(report["per_class"][name][key], ref[key][c], f"{name} {key}")
        assert report["per_class"][name]["count"] == ref["count"][c]
    assert report["per_class"]["label2"]["precision"] == 0.0
    assert report["per_class"]["label5"]["recall"] == 0.0
    assert report["per_class"]["label5"]["count"] == 0


def test_plain_json_types():
    report = classification_report(
        np.array([0, 1, 1], dtype=np.int32), np.array([0, 1, 0], dtype=np.int64), ["x", "y"]
    )
    assert type(report["accuracy"]) is float and type(report["macro_f1"]) is float
    for stats in report["per_class"].values():
        assert all(type(stats[k]) is float for k in ("precision", "recall", "f1"))
        assert type(stats["count"]) is int
    assert all(type(v) is int for row in report["confusion"]["matrix"] for v in row)
    assert json.loads(json.dumps(report)) == report


def test_perfect_predictions():
    y = [0, 1, 2, 2, 1, 0]
    report = classification_report(y, y, ["a", "b", "c"])
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    assert report["confusion"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_confusion_rows_are_true_columns_predicted():
    matrix = confusion_matrix([0, 0, 0], [1, 1, 2], 3)
    assert matrix.tolist() == [[0, 2, 1], [0, 0, 0], [0, 0, 0]]
    assert matrix.dtype == np.int64


@pytest.mark.parametrize(
    "y_true,y_pred,names,match",
    [
        ([0, 1], [0], ["a", "b"], "differ in length"),
        ([0, 2], [0, 1], ["a", "b"], "outside 0..1"),
        ([0, 1], [0, -1], ["a", "b"], "outside 0..1"),
        ([0.0, 1.0], [0, 1], ["a", "b"], "integer label ids"),
        ([[0, 1]], [[0, 1]], ["a", "b"], "1-D"),
        ([], [], ["a", "b"], "no examples"),
        ([0], [0], [], "label_names is empty"),
        ([0], [0], ["a", "a"], "twice"),
    ],
)
def test_bad_inputs(y_true, y_pred, names, match):
    with pytest.raises(ValueError, match=match):
        classification_report(y_true, y_pred, names)


def test_top_k_sorted_descending_ties_to_the_lower_id():
    probs = np.array([[0.1, 0.3, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25, 0.0]])
    indices, values = top_k(probs, 3)
    assert indices.dtype == np.int64
    assert indices.tolist() == [[1, 2, 3], [0, 1, 2]]
    np.testing.assert_array_equal(values, [[0.3, 0.3, 0.2], [0.25, 0.25, 0.25]])


def test_top_k_matches_a_full_sort(rng):
    probs = rng.random((20, 9))
    indices, values = top_k(probs, 9)
    for row in range(20):
        expected = sorted(range(9), key=lambda c: (-probs[row, c], c))
        assert indices[row].tolist() == expected
        np.testing.assert_array_equal(values[row], probs[row, expected])
    first, _ = top_k(probs, 1)
    assert first[:, 0].tolist() == probs.argmax(axis=1).tolist()


def test_top_k_one_row_and_logits():
    indices, values = top_k(np.array([-2.0, 5.0, -1.0, 5.0]), 2)
    assert indices.shape == (2,) and indices.tolist() == [1, 3]
    assert values.tolist() == [5.0, 5.0]


@pytest.mark.parametrize("k", [0, 4, -1, 1.5, True])
def test_top_k_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        top_k(np.ones((2, 3)) / 3, k)


def test_top_k_refuses_nan_and_3d():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.5, np.nan]]), 1)
    with pytest.raises(ValueError, match="shape"):
        top_k(np.ones((2, 2, 2)), 1)


# --------------------------------------------------------------------------- chrF


def test_chrf_by_hand():
    from numrnn.metrics import chrf

    assert chrf(["abc"], ["abc"]) == 100.0
    assert chrf(["xyz"], ["abc"]) == 0.0
    # "ab" against "abc": unigrams P 2/2 R 2/3, bigrams P 1/1 R 1/2, no trigram in the
    # hypothesis, so two orders count: P 1, R 7/12, F2 = 5 * 7/12 / (4 + 7/12) = 35/55.
    assert chrf(["ab"], ["abc"]) == pytest.approx(100 * 35 / 55, rel=1e-12)
    assert chrf(["a b c"], ["abc"]) == 100.0  # whitespace is ignored
    assert chrf([""], ["abc"]) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        chrf(["a", "b"], ["a"])


def test_chrf_equals_sacrebleu(rng):
    """The same corpus score as sacrebleu's CHRF() (chrF2) on 300 noisy sentence pairs."""
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu (the test extra) is not installed")
    from numrnn.metrics import chrf

    words = [
        "le",
        "chat",
        "noir",
        "dort",
        "sur",
        "la",
        "table",
        "il",
        "fait",
        "très",
        "beau",
        "ça",
        "va",
        "!",
    ]
    references, hypotheses = [], []
    for i in range(300):
        reference = " ".join(rng.choice(words, rng.integers(1, 9)))
        chars = list(reference)
        for _ in range(rng.integers(0, 6)):  # drop, repeat or replace a few characters
            if chars:
                j = int(rng.integers(len(chars)))
                kind = rng.integers(3)
                chars[j] = "" if kind == 0 else chars[j] * 2 if kind == 1 else "xq"[int(rng.integers(2))]
        hypothesis = "".join(chars) if i % 50 else ""  # a few empty outputs too
        references.append(reference)
        hypotheses.append(hypothesis)
    expected = sacrebleu.CHRF().corpus_score(hypotheses, [references]).score
    assert chrf(hypotheses, references) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    for hypothesis, reference in list(zip(hypotheses, references))[:40]:
        sentence = sacrebleu.CHRF().sentence_score(hypothesis, [reference]).score
        assert chrf([hypothesis], [reference]) == pytest.approx(sentence, rel=1e-12, abs=1e-12)
