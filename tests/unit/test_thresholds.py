"""models_app.ml.thresholds: the curve's definitions on a hand-computed example, and the target search."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models_app.ml.thresholds import threshold_curve, threshold_for_target

# Confidence and correctness of five predictions (class 0 always predicted; gold decides correctness).
CONFIDENCE = np.array([0.95, 0.85, 0.75, 0.6, 0.5])
GOLD = np.array([0, 0, 1, 0, 1])  # right, right, wrong, right, wrong


def proba_for(confidence):
    return np.column_stack([confidence, 1 - confidence])


def point(curve, threshold):
    return next(p for p in curve if p["threshold"] == pytest.approx(threshold))


def test_hand_computed_points():
    curve = threshold_curve(y_true=GOLD, proba=proba_for(CONFIDENCE), points=21)
    assert len(curve) == 21 and curve[0]["threshold"] == 0.0 and curve[-1]["threshold"] == 1.0
    assert point(curve, 0.0) == {"threshold": 0.0, "precision": 0.6, "recall": 0.6, "f1": 0.6, "coverage": 1.0}
    at_08 = point(curve, 0.8)  # covers 0.95 and 0.85, both right
    assert at_08["coverage"] == 0.4 and at_08["precision"] == 1.0 and at_08["recall"] == 0.4
    assert at_08["f1"] == pytest.approx(2 * 0.4 / 1.4, abs=1e-6)
    at_07 = point(curve, 0.7)  # adds the wrong 0.75
    assert at_07["coverage"] == 0.6 and at_07["precision"] == pytest.approx(2 / 3, abs=1e-6) and at_07["recall"] == 0.4
    at_06 = point(curve, 0.6)  # a confidence exactly at the threshold is covered
    assert at_06["coverage"] == 0.8 and at_06["precision"] == 0.75
    assert point(curve, 1.0) == {"threshold": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "coverage": 0.0}
    json.dumps(curve, allow_nan=False)


def test_matches_a_direct_computation_on_random_data():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(5) * 0.5, 3000)
    gold = rng.integers(0, 5, 3000)
    curve = threshold_curve(y_true=gold, proba=proba)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == gold
    for p in curve[::7]:
        covered = confidence >= p["threshold"]
        assert p["coverage"] == pytest.approx(covered.mean(), abs=1e-6)
        assert p["recall"] == pytest.approx((covered & correct).mean(), abs=1e-6)
        if covered.any():
            assert p["precision"] == pytest.approx(correct[covered].mean(), abs=1e-6)


def test_empty_evaluation_set_gives_a_flat_json_safe_curve():
    curve = threshold_curve(y_true=np.array([], dtype=int), proba=np.zeros((0, 3)), points=5)
    assert [p["coverage"] for p in curve] == [0.0] * 5
    json.dumps(curve, allow_nan=False)


def test_label_names_are_accepted_with_the_label_list():
    curve = threshold_curve(y_true=np.array(["a", "b"]), proba=np.array([[0.9, 0.1], [0.2, 0.8]]), labels=["a", "b"], points=3)
    assert curve[0]["precision"] == 1.0


def test_threshold_for_target_picks_the_lowest_threshold_reaching_the_precision():
    curve = threshold_curve(y_true=GOLD, proba=proba_for(CONFIDENCE), points=21)
    # 0.75 precision is first reached at 0.55 (covers 0.6 and up: 3 right of 4), widest coverage that does.
    assert threshold_for_target(curve, min_precision=0.75) == {"threshold": 0.55, "precision": 0.75, "coverage": 0.8, "recall": 0.6}
    assert threshold_for_target(curve, min_precision=1.0)["threshold"] == 0.8
    assert threshold_for_target(curve, min_precision=0.5)["threshold"] == 0.0


def test_threshold_for_target_returns_none_when_unreachable():
    curve = threshold_curve(y_true=np.array([1, 1]), proba=np.array([[0.9, 0.1], [0.8, 0.2]]))
    assert threshold_for_target(curve, min_precision=0.5) is None
