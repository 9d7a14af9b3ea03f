"""models_app.ml.training: the active-learning head (logistic regression blended with the prior head)."""
import json
import pickle

import numpy as np
import pytest

from models_app.ml.artifacts import dump_head
from models_app.ml.training import ActiveLearningHead, train_active_learning_head

LABELS = ["billing", "delivery", "refund", "login", "other"]


class CentroidPrior:
    """A stand-in for the zero-shot head: softmax over cosine to fixed (noisy) label vectors."""

    def __init__(self, labels, label_vectors, temperature=0.1):
        self.labels = list(labels)
        self.label_vectors = label_vectors
        self.temperature = temperature

    def predict_proba(self, vectors, texts=None):
        logits = vectors @ self.label_vectors.T / self.temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def separable_data(seed=0, per_class=60, dim=24, noise=0.35):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(LABELS)), per_class)
    x = centres[y] + rng.normal(scale=noise / np.sqrt(dim), size=(len(y), dim)) * np.sqrt(dim) / 3
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # The prior knows the classes only roughly: its label vectors are the centres plus a lot of noise.
    rough = centres + rng.normal(scale=0.9 / np.sqrt(dim), size=centres.shape) * np.sqrt(dim) / 3
    rough /= np.linalg.norm(rough, axis=1, keepdims=True)
    return x.astype(np.float32), y, CentroidPrior(LABELS, rough)


def accuracy(head, x, y):
    return float((head.predict_proba(x).argmax(axis=1) == y).mean())


def test_predicts_every_label_even_when_some_classes_have_no_examples():
    x, y, prior = separable_data()
    seen = y < 3  # billing, delivery, refund labelled; login and other never
    head = train_active_learning_head(labels=LABELS, vectors=x[seen][::6], y=y[seen][::6], prior_head=prior)
    proba = head.predict_proba(x)
    assert proba.shape == (len(x), len(LABELS))
    predicted = proba.argmax(axis=1)
    assert set(predicted) == set(range(len(LABELS)))
    # The unseen classes come from the prior, so they are mostly right where the prior is.
    unseen = ~seen
    assert (predicted[unseen] == y[unseen]).mean() >= 0.8 * (prior.predict_proba(x[unseen]).argmax(axis=1) == y[unseen]).mean()
    assert head.details["classes_with_examples"] == ["billing", "delivery", "refund"]
    assert head.details["blend_weights"]["login"] == 0.0
    assert 0 < head.details["blend_weights"]["billing"] < 1


@pytest.mark.parametrize("n_labels", [1, 7, 300])
def test_probabilities_are_a_distribution_over_all_labels(n_labels):
    x, y, prior = separable_data()
    rows = np.random.default_rng(1).choice(len(y), size=n_labels, replace=False)
    head = train_active_learning_head(labels=LABELS, vectors=x[rows], y=y[rows], prior_head=prior)
    proba = head.predict_proba(x)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    json.dumps(head.details)


def test_single_label_and_single_class():
    x, y, prior = separable_data()
    one = train_active_learning_head(labels=LABELS, vectors=x[:1], y=y[:1], prior_head=prior)
    assert one.details["n"] == 1 and one.details["classes_with_examples"] == ["billing"]
    # Class 0's probability rises above the prior's, the others keep their prior ranking.
    assert np.all(one.predict_proba(x)[:, 0] > prior.predict_proba(x)[:, 0] - 1e-12)
    only_billing = train_active_learning_head(labels=LABELS, vectors=x[y == 0], y=y[y == 0], prior_head=None)
    proba = only_billing.predict_proba(x)
    assert (proba.argmax(axis=1) == 0).all()  # without a prior, the only class seen wins
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_without_labels_the_head_is_the_prior():
    x, y, prior = separable_data()
    head = train_active_learning_head(labels=LABELS, vectors=x[:0], y=y[:0], prior_head=prior)
    np.testing.assert_allclose(head.predict_proba(x), prior.predict_proba(x))


def test_learns_beyond_the_prior_on_separable_data():
    x, y, prior = separable_data()
    rng = np.random.default_rng(2)
    train = rng.permutation(len(y))[:100]
    test = np.setdiff1d(np.arange(len(y)), train)
    head = train_active_learning_head(labels=LABELS, vectors=x[train], y=y[train], prior_head=prior)
    assert accuracy(prior, x[test], y[test]) < 0.9
    assert accuracy(head, x[test], y[test]) >= 0.97
    assert accuracy(head, x[test], y[test]) > accuracy(prior, x[test], y[test]) + 0.05


def test_picklable_and_same_predictions_after_reload():
    x, y, prior = separable_data()
    head = train_active_learning_head(labels=LABELS, vectors=x[::3], y=y[::3], prior_head=prior, seed=3)
    loaded = pickle.loads(dump_head(head))
    assert isinstance(loaded, ActiveLearningHead) and loaded.labels == LABELS
    np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))


def test_rejects_inconsistent_input():
    x, y, prior = separable_data()
    with pytest.raises(ValueError):
        train_active_learning_head(labels=LABELS, vectors=x[:10], y=y[:9])
    with pytest.raises(ValueError):
        train_active_learning_head(labels=LABELS[:2], vectors=x[-10:], y=y[-10:])  # y holds index 4
    with pytest.raises(ValueError):
        train_active_learning_head(labels=LABELS, vectors=x[:10], y=y[:10], prior_head=CentroidPrior(LABELS[::-1], prior.label_vectors))


def test_confidences_are_temperature_calibrated_on_out_of_fold_predictions():
    """Blending with a flat prior leaves the head timid; the fitted temperature makes its confidence
    match its accuracy on unseen data, without changing a single prediction."""
    from models_app.ml.calibration import expected_calibration_error

    rng = np.random.default_rng(3)
    k, dim = 6, 32
    centres = rng.normal(size=(k, dim))

    def sample(n):
        y = rng.integers(0, k, size=n)
        x = centres[y] + rng.normal(scale=1.6, size=(n, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y

    x_train, y_train = sample(300)
    x_test, y_test = sample(2000)
    labels = [f"c{i}" for i in range(k)]
    raw = train_active_learning_head(labels=labels, vectors=x_train, y=y_train, calibrate=False)
    calibrated = train_active_learning_head(labels=labels, vectors=x_train, y=y_train)
    p_raw, p_cal = raw.predict_proba(x_test), calibrated.predict_proba(x_test)
    assert np.array_equal(p_raw.argmax(1), p_cal.argmax(1))
    assert np.allclose(p_cal.sum(1), 1.0)
    assert calibrated.details["calibration"]["ece_after"] < calibrated.details["calibration"]["ece_before"]
    assert expected_calibration_error(y_test, p_cal) < expected_calibration_error(y_test, p_raw)
    assert expected_calibration_error(y_test, p_cal) < 0.05


def test_few_labels_are_not_calibrated():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 8)).astype(np.float32)
    head = train_active_learning_head(labels=["a", "b"], vectors=vectors, y=np.array([0, 1] * 5))
    assert head.temperature == 1.0 and "calibration" not in head.details
