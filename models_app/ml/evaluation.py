"""Metrics of one model version on labels it never trained on. Pure: numpy and scikit-learn, no Django.

`evaluate` returns the contract's metrics object (docs api-v2.md, Models):

    {"accuracy", "f1_macro",
     "per_class": {label: {"precision", "recall", "f1", "support"}},
     "confusion_matrix": {"labels": [...], "matrix": [[int]]},   # rows: gold label, columns: predicted label
     "evaluated_on": n, "evaluation": "holdout" | "cross-validation"}

Definitions, chosen so the output never holds NaN and never divides by zero:
- a class's precision is 0.0 when nothing was predicted as it, its recall is 0.0 when it has no gold example;
- a class with no gold example in the evaluation set gets precision/recall/F1 0.0, support 0 and
  `"no_support": true`, and is left out of `f1_macro`, which averages F1 over the classes that have support
  (a class nobody labeled for evaluation says nothing about the model, and counting it as F1 0 would punish
  the model for the evaluation set's gaps);
- an empty evaluation set gives accuracy 0.0, f1_macro 0.0, every class `no_support`, an all-zero matrix and
  `evaluated_on: 0`: callers that want the contract's `metrics: null` check `evaluated_on == 0`.

`cross_validated_proba` gives out-of-fold probabilities for when there is no evaluation split, so that
every record is scored by a head that never saw it.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

EVALUATIONS = ("holdout", "cross-validation")


def label_indices(labels: Sequence[str], y: np.ndarray | Sequence) -> np.ndarray:
    """Gold labels as integer column indices into `labels`; accepts indices already, or label names."""
    y = np.asarray(y)
    if y.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(y.dtype, np.integer):
        if y.min() < 0 or y.max() >= len(labels):
            raise ValueError(f"label index out of range 0..{len(labels) - 1}")
        return y.astype(np.int64, copy=False)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(value) for value in y.tolist() if value not in index})
    if unknown:
        raise ValueError(f"labels not in the label set: {', '.join(unknown[:10])}")
    return np.fromiter((index[value] for value in y.tolist()), dtype=np.int64, count=y.size)


def evaluate(*, labels: list[str], y_true: np.ndarray, proba: np.ndarray, evaluation: str) -> dict[str, Any]:
    """The metrics object of predictions `proba` (n x len(labels), columns in `labels` order) against `y_true`
    (label indices or names)."""
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, not {evaluation!r}")
    n_classes = len(labels)
    gold = label_indices(labels, y_true)
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape != (gold.size, n_classes):
        raise ValueError(f"proba has shape {proba.shape}, expected ({gold.size}, {n_classes})")
    predicted = proba.argmax(axis=1) if gold.size else np.zeros(0, dtype=np.int64)

    # bincount of gold*k+pred is the confusion matrix in one vectorised pass (100k records: milliseconds).
    matrix = np.bincount(gold * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    correct = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    precision = np.divide(correct, predicted_count, out=np.zeros(n_classes), where=predicted_count > 0)
    recall = np.divide(correct, support, out=np.zeros(n_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(n_classes), where=denominator > 0)

    per_class: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(labels):
        if support[i] == 0:
            per_class[label] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "no_support": True}
        else:
            per_class[label] = {"precision": _rounded(precision[i]), "recall": _rounded(recall[i]),
                                "f1": _rounded(f1[i]), "support": int(support[i])}
    has_support = support > 0
    return {
        "accuracy": _rounded(correct.sum() / gold.size) if gold.size else 0.0,
        "f1_macro": _rounded(f1[has_support].mean()) if has_support.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
        "evaluated_on": int(gold.size),
        "evaluation": evaluation,
    }


def cross_validated_proba(*, make_head: Callable[..., Any], vectors: np.ndarray, y: np.ndarray, n_classes: int | None = None,
                          texts: Sequence[str] | None = None, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (n x n_classes): each row comes from a head trained without that row.

    `y` holds label indices 0..n_classes-1. `make_head(vectors, y, texts)` fits a head on one fold's training
    part (`texts` is None when none were given) and returns an object with `predict_proba(vectors)`, or
    `predict_proba(vectors, texts)` when texts were given (so a plain scikit-learn estimator fits the first case);
    its columns are `head.classes_` (label indices, the scikit-learn convention) when it has that attribute,
    else all n_classes. Stratified folds keep each class's share; a class with fewer examples than folds is
    simply absent from some training parts, so its rows there get probability 0 for it, which is the honest
    out-of-sample answer. With fewer than two records there is nothing to hold out: ValueError.
    """
    y = np.asarray(y, dtype=np.int64)
    n = y.size
    if n < 2:
        raise ValueError("cross-validation needs at least 2 labeled records")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    largest_class = int(np.bincount(y).max())
    if largest_class >= 2:
        splitter: StratifiedKFold | KFold = StratifiedKFold(n_splits=max(2, min(folds, largest_class)), shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=min(folds, n), shuffle=True, random_state=seed)
    out = np.zeros((n, n_classes), dtype=np.float64)
    with warnings.catch_warnings():
        # "The least populated class has only k members": expected with few labels, handled as described above.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros(n), y))
    for train_index, test_index in splits:
        train_classes = np.unique(y[train_index])
        if train_classes.size == 1:
            # One class in the training part: every classifier would answer it with certainty.
            out[test_index, train_classes[0]] = 1.0
            continue
        train_texts = [texts[i] for i in train_index] if texts is not None else None
        test_texts = [texts[i] for i in test_index] if texts is not None else None
        head = make_head(vectors[train_index], y[train_index], train_texts)
        fold_proba = np.asarray(head.predict_proba(vectors[test_index]) if texts is None
                                else head.predict_proba(vectors[test_index], test_texts), dtype=np.float64)
        columns = np.asarray(getattr(head, "classes_", np.arange(n_classes)), dtype=np.int64)
        out[np.ix_(test_index, columns)] = fold_proba
    return out


def _rounded(value: float) -> float:
    return round(float(value), 6)
