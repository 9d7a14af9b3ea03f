"""The active-learning version's head: logistic regression on the stored vectors, blended with the prior.

Pure numpy/scikit-learn: no Django.

Active learning starts with labels for only some classes (100 labels over 150 intents is normal),
yet the version must be able to predict every label. The head therefore blends, class by class,
the classifier trained on the labels with the prior head (in the product, the describe-and-classify
version):

    q_c(x) ∝ w_c * p_clf_c(x) + (1 - w_c) * p_prior_c(x)      w_c = n_c / (n_c + PRIOR_STRENGTH)

where n_c is the number of labels of class c and p_clf_c = 0 for a class with no label. A class with
no example is predicted by the prior alone; from a handful of labels on, the classifier dominates
(w = 0.67 at 1 label, 0.86 at 3, 0.95 at 10 with PRIOR_STRENGTH = 0.5, the best of 0.5/2/6 in
bench/al_simulation.py). Without a prior head the prior is
uniform, so unseen classes keep a small probability but are never predicted over seen ones.

The classifier is multinomial logistic regression, C = 10 (93.0% on the full Banking77 train set
with MiniLM vectors, 4.5 s fit); on 2,000 labels it fits in about a second. Fits run inside
`threadpoolctl.threadpool_limits(max_threads)` so a Celery worker does not fight its neighbours.
"""
from __future__ import annotations

from typing import Sequence

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from .calibration import apply_temperature, expected_calibration_error, fit_temperature

C = 10.0
PRIOR_STRENGTH = 0.5
MAX_ITER = 300
# Confidences must mean what they say (thresholds and above_threshold rely on it): the blended
# probabilities are temperature-scaled, with T fitted on out-of-fold predictions of the training
# labels, once there are enough of them for the folds to say something.
CALIBRATION_FOLDS = 3
CALIBRATION_MIN_LABELS = 30


class ActiveLearningHead:
    """Implements the Head interface of models_app.ml.artifacts; picklable (the prior head must be too)."""

    def __init__(self, *, labels, classifier, classes, blend_weights, prior_head, details):
        self.labels = list(labels)
        self.classifier = classifier  # LogisticRegression over `classes`, or None with < 2 classes
        self.classes = np.asarray(classes, dtype=np.int64)  # label indices that have examples
        self.blend_weights = np.asarray(blend_weights, dtype=np.float64)  # (len(labels),) w_c
        self.prior_head = prior_head
        self.details = details

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        n, k = vectors.shape[0], len(self.labels)
        classifier_proba = np.zeros((n, k), dtype=np.float64)
        if self.classifier is not None:
            classifier_proba[:, self.classes] = self.classifier.predict_proba(vectors)
        elif len(self.classes) == 1:
            classifier_proba[:, self.classes[0]] = 1.0
        if self.prior_head is None:
            prior = np.full((n, k), 1.0 / k)
        else:
            prior = np.asarray(self.prior_head.predict_proba(vectors, texts), dtype=np.float64)
        blended = self.blend_weights * classifier_proba + (1.0 - self.blend_weights) * prior
        blended /= blended.sum(axis=1, keepdims=True)
        temperature = getattr(self, "temperature", 1.0)  # heads pickled before calibration existed
        return blended if temperature == 1.0 else apply_temperature(blended, temperature, logits=False)


def train_active_learning_head(
    *,
    labels: list[str],
    vectors: np.ndarray,
    y: np.ndarray,
    prior_head=None,
    seed: int = 0,
    max_threads: int = 1,
    calibrate: bool = True,
) -> ActiveLearningHead:
    labels = list(labels)
    y = np.asarray(y, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    if vectors.shape[0] != len(y):
        raise ValueError(f"{vectors.shape[0]} vectors but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(labels)):
        raise ValueError("y holds an index outside labels")
    if prior_head is not None and list(prior_head.labels) != labels:
        raise ValueError("prior_head.labels must equal labels, in the same order")

    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    blend_weights = counts / (counts + PRIOR_STRENGTH)
    classes = np.flatnonzero(counts > 0)
    classifier = None
    if len(classes) >= 2:
        classifier = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)
        with threadpool_limits(limits=max_threads), warnings.catch_warnings():
            # "more classes than half the samples" is the normal state of early active learning, not a mistake.
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            classifier.fit(vectors, y)
        # LogisticRegression orders its columns by sorted class value, which is `classes`.
        assert np.array_equal(classifier.classes_, classes)

    details = {
        "n": int(len(y)),
        "C": C,
        "prior_strength": PRIOR_STRENGTH,
        "prior": "none (uniform)" if prior_head is None else type(prior_head).__name__,
        "classes_with_examples": [labels[i] for i in classes],
        "blend_weights": {labels[i]: round(float(blend_weights[i]), 4) for i in range(len(labels))},
    }
    head = ActiveLearningHead(
        labels=labels,
        classifier=classifier,
        classes=classes,
        blend_weights=blend_weights,
        prior_head=prior_head,
        details=details,
    )
    head.temperature = 1.0
    if calibrate and len(y) >= CALIBRATION_MIN_LABELS and len(classes) >= 2:
        out_of_fold = np.zeros((len(y), len(labels)))
        for train_rows, held_rows in KFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(vectors):
            fold_head = train_active_learning_head(labels=labels, vectors=vectors[train_rows], y=y[train_rows],
                                                   prior_head=prior_head, seed=seed, max_threads=max_threads,
                                                   calibrate=False)
            out_of_fold[held_rows] = fold_head.predict_proba(vectors[held_rows])
        head.temperature = fit_temperature(out_of_fold, y, logits=False)
        details["calibration"] = {
            "temperature": round(head.temperature, 4), "folds": CALIBRATION_FOLDS,
            "ece_before": expected_calibration_error(y, out_of_fold),
            "ece_after": expected_calibration_error(y, apply_temperature(out_of_fold, head.temperature, logits=False)),
        }
    return head
