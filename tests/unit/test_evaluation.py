"""models_app.ml.evaluation: the metrics object against hand-computed values and scikit-learn."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from models_app.ml.evaluation import cross_validated_proba, evaluate

LABELS = ["Billing", "Technical", "Cancellation"]


def one_hot(predicted, k=3):
    proba = np.full((len(predicted), k), 0.1)
    proba[np.arange(len(predicted)), predicted] = 0.8
    return proba / proba.sum(axis=1, keepdims=True)


def test_hand_computed_example():
    # gold:      B B B T T C ; predicted: B B T T C C
    y = np.array([0, 0, 0, 1, 1, 2])
    metrics = evaluate(labels=LABELS, y_true=y, proba=one_hot([0, 0, 1, 1, 2, 2]), evaluation="holdout")
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert metrics["per_class"]["Billing"] == {"precision": 1.0, "recall": pytest.approx(2 / 3, abs=1e-6), "f1": 0.8, "support": 3}
    assert metrics["per_class"]["Technical"]["precision"] == 0.5
    assert metrics["per_class"]["Technical"]["recall"] == 0.5
    assert metrics["per_class"]["Cancellation"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3, abs=1e-6), "support": 1}
    assert metrics["confusion_matrix"] == {"labels": LABELS, "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert metrics["evaluated_on"] == 6 and metrics["evaluation"] == "holdout"
    assert metrics["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-6)


def test_matches_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(3)
    labels = [f"L{i}" for i in range(12)]
    y = rng.integers(0, 12, 2000)
    proba = rng.dirichlet(np.ones(12), 2000)
    proba[np.arange(2000), y] += rng.random(2000) * 0.3  # better than chance, not perfect
    metrics = evaluate(labels=labels, y_true=y, proba=proba, evaluation="cross-validation")
    predicted = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=range(12), zero_division=0)
    for i, label in enumerate(labels):
        assert metrics["per_class"][label]["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert metrics["per_class"][label]["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert metrics["per_class"][label]["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert metrics["per_class"][label]["support"] == support[i]
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-6)
    assert metrics["confusion_matrix"]["matrix"] == confusion_matrix(y, predicted, labels=range(12)).tolist()


def test_class_without_support_is_flagged_and_left_out_of_macro_f1():
    y = np.array([0, 0, 1, 1])
    # Technical predicted once wrongly; Cancellation never occurs in gold but is predicted once.
    metrics = evaluate(labels=LABELS, y_true=y, proba=one_hot([0, 2, 1, 1]), evaluation="holdout")
    assert metrics["per_class"]["Cancellation"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "no_support": True}
    billing_f1 = 2 * 1.0 * 0.5 / 1.5
    assert metrics["f1_macro"] == pytest.approx((billing_f1 + 1.0) / 2, abs=1e-6)
    json.dumps(metrics, allow_nan=False)


def test_empty_evaluation_set_gives_zeros_not_nan():
    metrics = evaluate(labels=LABELS, y_true=np.array([], dtype=int), proba=np.zeros((0, 3)), evaluation="holdout")
    assert metrics["evaluated_on"] == 0
    assert metrics["accuracy"] == 0.0 and metrics["f1_macro"] == 0.0
    assert all(entry["no_support"] for entry in metrics["per_class"].values())
    assert metrics["confusion_matrix"]["matrix"] == [[0, 0, 0]] * 3
    json.dumps(metrics, allow_nan=False)


def test_accepts_label_names_and_rejects_unknown_ones():
    metrics = evaluate(labels=LABELS, y_true=np.array(["Billing", "Technical"]), proba=one_hot([0, 0]), evaluation="holdout")
    assert metrics["accuracy"] == 0.5
    with pytest.raises(ValueError, match="Refunds"):
        evaluate(labels=LABELS, y_true=np.array(["Refunds"]), proba=one_hot([0]), evaluation="holdout")


def test_rejects_mismatched_shapes_and_unknown_evaluation_kind():
    with pytest.raises(ValueError, match="shape"):
        evaluate(labels=LABELS, y_true=np.array([0, 1]), proba=np.ones((3, 3)) / 3, evaluation="holdout")
    with pytest.raises(ValueError, match="evaluation"):
        evaluate(labels=LABELS, y_true=np.array([0]), proba=one_hot([0]), evaluation="training")


class RecordingHead:
    """Remembers which rows (identified by their first feature) it was trained on."""

    def __init__(self, vectors, y, texts):
        self.trained_rows = set(vectors[:, 0].astype(int).tolist())
        self.classes_ = np.unique(y)
        self.texts = texts

    def predict_proba(self, vectors, texts=None):
        assert not self.trained_rows & set(vectors[:, 0].astype(int).tolist()), "a row was scored by a head trained on it"
        assert (texts is None) == (self.texts is None)
        return np.full((len(vectors), len(self.classes_)), 1.0 / len(self.classes_))


def test_cross_validated_proba_scores_each_row_out_of_fold():
    y = np.repeat([0, 1, 2], 10)
    vectors = np.column_stack([np.arange(30), np.zeros(30)]).astype(float)
    proba = cross_validated_proba(make_head=RecordingHead, vectors=vectors, y=y, n_classes=3,
                                  texts=[f"t{i}" for i in range(30)], folds=5)
    assert proba.shape == (30, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_cross_validated_proba_with_a_class_rarer_than_the_folds():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 4
    y = np.array([0] * 20 + [1] * 20 + [2])  # class 2 has one example: never in its own training part
    vectors = centers[y] + rng.normal(size=(41, 8))
    proba = cross_validated_proba(make_head=lambda v, t, _texts: LogisticRegression().fit(v, t), vectors=vectors, y=y, folds=5)
    assert proba.shape == (41, 3)
    assert proba[40, 2] == 0.0  # the honest out-of-sample answer for a class the fold never saw
    assert (proba[:40].argmax(axis=1) == y[:40]).mean() > 0.9


def test_cross_validated_proba_when_every_class_has_one_example():
    y = np.array([0, 1, 2])
    vectors = np.eye(3)
    proba = cross_validated_proba(make_head=lambda v, t, _texts: LogisticRegression().fit(v, t), vectors=vectors, y=y)
    assert proba.shape == (3, 3)
    assert not np.any(proba[np.arange(3), y])  # no row ever saw its own class in training
