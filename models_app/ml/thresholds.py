"""The threshold curve of a model version: what a confidence threshold buys. Pure numpy, no Django.

For a threshold t, a prediction is *covered* when its confidence (the top probability) is ≥ t; the
application acts on covered predictions and sends the rest to a person. Over the n evaluation records:
- coverage  = covered / n                         (share of records the model answers on its own)
- precision = correct-and-covered / covered       (how often an answered prediction is right; 0.0 when
                                                   nothing is covered: there is nothing to trust)
- recall    = correct-and-covered / n             (share of all records answered correctly without a person)
- f1        = harmonic mean of precision and recall (0.0 when both are 0)
Thresholds are evenly spaced from 0 to 1 inclusive; at t = 0 coverage is 1 and precision is the accuracy.
Values are plain floats rounded to 6 places, so the curve is stored as JSON as is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models_app.ml.evaluation import label_indices


def threshold_curve(*, y_true: np.ndarray, proba: np.ndarray, points: int = 101, labels: list[str] | None = None) -> list[dict[str, float]]:
    """`y_true`: label indices (or names, with `labels` given); `proba`: n x k probabilities."""
    if points < 2:
        raise ValueError("a threshold curve needs at least 2 points")
    proba = np.asarray(proba, dtype=np.float64)
    gold = label_indices(labels, y_true) if labels is not None else np.asarray(y_true, dtype=np.int64)
    n = gold.size
    # Rounded so that a confidence exactly at a listed threshold (0.6, not 0.6000000000000001) is covered.
    thresholds = np.round(np.linspace(0.0, 1.0, points), 10)
    if n == 0:
        return [{"threshold": _r(t), "precision": 0.0, "recall": 0.0, "f1": 0.0, "coverage": 0.0} for t in thresholds]
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == gold
    # Sort once by confidence; for each threshold the covered records are a suffix of that order.
    order = np.argsort(confidence, kind="stable")
    sorted_confidence = confidence[order]
    correct_from_here = np.concatenate([np.cumsum(correct[order][::-1])[::-1], [0]])
    first_covered = np.searchsorted(sorted_confidence, thresholds, side="left")
    covered = n - first_covered
    correct_covered = correct_from_here[first_covered].astype(np.float64)
    precision = np.divide(correct_covered, covered, out=np.zeros(points), where=covered > 0)
    recall = correct_covered / n
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(points), where=denominator > 0)
    coverage = covered / n
    return [
        {"threshold": _r(t), "precision": _r(p), "recall": _r(r), "f1": _r(f), "coverage": _r(c)}
        for t, p, r, f, c in zip(thresholds, precision, recall, f1, coverage)
    ]


def threshold_for_target(curve: list[dict[str, Any]], *, min_precision: float) -> dict[str, float] | None:
    """The lowest threshold whose precision reaches `min_precision` (so its coverage is the largest that
    does), or None when no threshold with any coverage reaches it."""
    for point in sorted(curve, key=lambda p: p["threshold"]):
        if point["coverage"] > 0 and point["precision"] >= min_precision:
            return {key: point[key] for key in ("threshold", "precision", "coverage", "recall")}
    return None


def _r(value: float) -> float:
    return round(float(value), 6)
