"""models_app.ml.calibration: ECE and reliability on known data, temperature recovery."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from models_app.ml.calibration import apply_temperature, expected_calibration_error, fit_temperature, reliability_diagram


def calibrated_sample(n=40_000, k=6, scale=2.0, seed=0):
    """Logits with gold labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    proba = softmax(logits, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(proba, axis=1)).sum(axis=1)
    return logits, proba, y


def test_ece_of_perfectly_calibrated_predictions_is_near_zero():
    _, proba, y = calibrated_sample()
    assert expected_calibration_error(y, proba) < 0.01


def test_ece_hand_computed():
    # Two predictions at confidence 0.9, one right one wrong: |0.5 - 0.9| = 0.4 in one bin.
    proba = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(np.array([0, 1]), proba) == pytest.approx(0.4)
    # Add two at 0.6, both right: (2 * 0.4 + 2 * 0.4) / 4.
    proba = np.vstack([proba, [[0.6, 0.4], [0.4, 0.6]]])
    assert expected_calibration_error(np.array([0, 1, 0, 1]), proba) == pytest.approx(0.4)


def test_temperature_fit_recovers_a_known_temperature():
    logits, _, y = calibrated_sample()
    overconfident = logits * 2.5  # as if the model had been trained to temperature 1/2.5
    assert fit_temperature(overconfident, y, logits=True) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(softmax(overconfident, axis=1), y) == pytest.approx(2.5, rel=0.05)
    timid = logits / 2
    assert fit_temperature(timid, y, logits=True) == pytest.approx(0.5, rel=0.05)


def test_temperature_scaling_lowers_ece_and_keeps_the_predicted_labels():
    logits, _, y = calibrated_sample(seed=1)
    overconfident = softmax(logits * 3, axis=1)
    temperature = fit_temperature(overconfident, y)
    calibrated = apply_temperature(overconfident, temperature)
    assert expected_calibration_error(y, overconfident) > 0.1
    assert expected_calibration_error(y, calibrated) < 0.01
    np.testing.assert_array_equal(calibrated.argmax(axis=1), overconfident.argmax(axis=1))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)


def test_apply_temperature_rejects_non_positive_temperature():
    with pytest.raises(ValueError):
        apply_temperature(np.array([[0.5, 0.5]]), 0.0)


def test_reliability_diagram_bins():
    proba = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    diagram = reliability_diagram(y, proba, bins=10)
    assert len(diagram) == 10 and diagram[0]["bin_lower"] == 0.0 and diagram[-1]["bin_upper"] == 1.0
    top = diagram[9]
    assert top["count"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == pytest.approx(0.935)
    assert diagram[5]["count"] == 1 and diagram[5]["accuracy"] == 1.0  # 0.55 in (0.5, 0.6]
    assert diagram[6]["count"] == 1 and diagram[6]["confidence"] == pytest.approx(0.7)  # 0.7 in (0.6, 0.7]
    assert diagram[0] == {"bin_lower": 0.0, "bin_upper": 0.1, "confidence": None, "accuracy": None, "count": 0}
    json.dumps(diagram, allow_nan=False)
