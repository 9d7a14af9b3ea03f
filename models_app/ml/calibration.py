"""Confidence calibration: temperature scaling, expected calibration error, reliability diagram. Pure numpy/scipy.

Temperature scaling (Guo et al., 2017) divides a classifier's logits by one number T fitted to minimise the
negative log-likelihood of held-out (or out-of-fold) predictions: T > 1 softens over-confident scores, T < 1
sharpens timid ones, and the predicted label never changes. Probabilities are accepted as well as logits:
log-probabilities are logits up to a per-row constant, which softmax ignores, so softmax(log(p) / T) is the
same scaling. An array is read as probabilities when every row is non-negative and sums to 1; pass
`logits=True/False` to say so explicitly.

Calibration error is measured on the top label: equal-width confidence bins (lower, upper], the first one
closed at 0; ECE is the count-weighted mean of |accuracy - confidence| over the bins.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

_MIN_PROBABILITY = 1e-12
# T outside [0.02, 50] means the scores carry no usable confidence at all; the bound keeps the search finite.
_LOG_T_BOUNDS = (np.log(0.02), np.log(50.0))


def fit_temperature(proba_or_logits: np.ndarray, y: np.ndarray, *, logits: bool | None = None) -> float:
    """The temperature minimising the negative log-likelihood of the gold labels `y` (label indices)."""
    scores = _as_logits(proba_or_logits, logits)
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return 1.0
    rows = np.arange(y.size)

    def negative_log_likelihood(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, y].mean())

    result = minimize_scalar(negative_log_likelihood, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def apply_temperature(proba_or_logits: np.ndarray, temperature: float, *, logits: bool | None = None) -> np.ndarray:
    """Calibrated probabilities (rows sum to 1, same argmax as the input)."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    return softmax(_as_logits(proba_or_logits, logits) / temperature, axis=1)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return 0.0
    confidence, correct, bin_index = _binned(y, proba, bins)
    count = np.bincount(bin_index, minlength=bins)
    gap = np.abs(np.bincount(bin_index, weights=correct, minlength=bins) - np.bincount(bin_index, weights=confidence, minlength=bins))
    return round(float(gap.sum() / y.size), 6) if count.any() else 0.0


def reliability_diagram(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """One entry per confidence bin; an empty bin has count 0 and confidence/accuracy None (JSON null)."""
    y = np.asarray(y, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    if y.size:
        confidence, correct, bin_index = _binned(y, proba, bins)
        count = np.bincount(bin_index, minlength=bins)
        confidence_sum = np.bincount(bin_index, weights=confidence, minlength=bins)
        correct_sum = np.bincount(bin_index, weights=correct, minlength=bins)
    else:
        count = np.zeros(bins, dtype=np.int64)
        confidence_sum = correct_sum = np.zeros(bins)
    return [
        {"bin_lower": round(float(edges[i]), 6), "bin_upper": round(float(edges[i + 1]), 6),
         "confidence": round(float(confidence_sum[i] / count[i]), 6) if count[i] else None,
         "accuracy": round(float(correct_sum[i] / count[i]), 6) if count[i] else None,
         "count": int(count[i])}
        for i in range(bins)
    ]


def _binned(y: np.ndarray, proba: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    # Bins are (lower, upper]: ceil(c * bins) - 1, with confidence 0 falling in the first bin.
    bin_index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return confidence, correct, bin_index


def _as_logits(scores: np.ndarray, logits: bool | None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if logits is None:
        logits = not (scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-6))
    return scores if logits else np.log(np.clip(scores, _MIN_PROBABILITY, None))
