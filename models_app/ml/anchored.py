"""Logistic regression anchored on a prior head's log-probabilities. Pure numpy/scipy: no Django.

    logit_c(x) = log p_prior_c(x) + v_c · x + b_c        penalty (|V|² + BIAS_PENALTY · |b|²) / (2 C)

With no labels the model *is* the prior (the describe-and-classify head); the penalty keeps the correction
small until the labels justify it, so a few hundred labels over 77 classes move the prior where they disagree
with it instead of replacing it. A class with no labels keeps its prior logit plus a small correction: its
bias is penalised hard, so the other classes' examples cannot push it out of reach. With many labels the
correction dominates and this is plain L2 logistic regression.

Used by the fine-tuned head as its second expert (models_app/ml/fine_tuning.py). Measured on random
Banking77 subsets (2 seeds) against the active-learning head's mixture of classifier and prior: +1.0 to +1.3
points at 200 labels, +1.9 to +2.3 at 500, +0.3 to +0.5 at 1,500; C = 30 and bias penalty 10 were chosen
over C 10/60/100, penalty 1 and a prior scale of 0.7. It is *not* the active-learning trainer: in the
active-learning simulation it lifted random sampling far more than our sampler (bench/README_sampler.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

C = 30.0
BIAS_PENALTY = 10.0
MAX_ITER = 1000
_LOG_FLOOR = float(np.log(1e-12))


def prior_log_proba(prior_head, vectors: np.ndarray, texts: Sequence[str] | None, n_classes: int) -> np.ndarray:
    """log p_prior (floored at log 1e-12, so one confident prior cannot forbid a class); uniform without a prior."""
    if prior_head is None:
        return np.full((len(vectors), n_classes), -np.log(n_classes))
    proba = np.asarray(prior_head.predict_proba(vectors, texts), dtype=np.float64)
    return np.maximum(np.log(np.maximum(proba, 1e-300)), _LOG_FLOOR)


def fit_anchored_logistic_regression(vectors: np.ndarray, y: np.ndarray, offset: np.ndarray, *, c: float = C,
                                     bias_penalty: float = BIAS_PENALTY, max_iter: int = MAX_ITER,
                                     ) -> tuple[np.ndarray, np.ndarray]:
    """(weights (k, d) float32, bias (k,)) minimising the cross-entropy of softmax(offset + X Vᵀ + b) plus the
    penalty. Every one of the k = offset.shape[1] classes gets a row, labeled or not. L-BFGS on the exact loss
    and gradient; the problem is strictly convex, so the result does not depend on where it starts."""
    x = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    k = offset.shape[1]
    if n == 0:
        return np.zeros((k, d), dtype=np.float32), np.zeros(k)
    rows = np.arange(n)
    one_hot = np.zeros((n, k))
    one_hot[rows, y] = 1.0

    def loss_and_gradient(flat: np.ndarray):
        weights = flat[:k * d].reshape(k, d)
        bias = flat[k * d:]
        log_p = log_softmax(offset + (x @ weights.T.astype(np.float32)) + bias, axis=1)
        error = np.exp(log_p) - one_hot
        loss = -log_p[rows, y].sum() + (np.vdot(weights, weights) + bias_penalty * (bias @ bias)) / (2 * c)
        grad_weights = (error.T.astype(np.float32) @ x) + weights / c
        grad_bias = error.sum(axis=0) + bias_penalty * bias / c
        return loss, np.concatenate([grad_weights.ravel(), grad_bias])

    result = minimize(loss_and_gradient, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x[:k * d].reshape(k, d).astype(np.float32), result.x[k * d:]


class AnchoredExpert:
    """A fitted anchored model: `logits(vectors, texts)`; picklable when the prior head is."""

    def __init__(self, *, weights: np.ndarray, bias: np.ndarray, prior_head):
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.prior_head = prior_head

    def logits(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        return prior_log_proba(self.prior_head, vectors, texts, len(self.bias)) + (vectors @ self.weights.T) + self.bias


def fit_anchored_expert(vectors: np.ndarray, y: np.ndarray, *, prior_head, n_classes: int) -> AnchoredExpert:
    vectors = np.asarray(vectors, dtype=np.float32)
    weights, bias = fit_anchored_logistic_regression(vectors, y, prior_log_proba(prior_head, vectors, None, n_classes))
    return AnchoredExpert(weights=weights, bias=bias, prior_head=prior_head)
