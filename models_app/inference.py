"""Classifying texts with a model version: heads loaded once per process, cached by version id.

A version's artifact never changes (its file name and checksum are fixed when it is written), so a
head cached under its version id stays valid for the life of the process; a new deployment is a
different version id and is loaded on its first request, with no restart. The embedder is the
process-wide one from `labeling.embeddings`.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
from django.core.files.storage import default_storage

from .ml.artifacts import Head, load_head

# Heads are small (a zero-shot head is labels x 384 floats); a few dozen cover every model a
# process is likely to serve, and the bound keeps a long-lived worker from growing without limit.
MAX_CACHED_HEADS = 64
# Scores are rounded for the JSON answer; the rounding residue goes to the top label so they still sum to 1.
SCORE_DECIMALS = 6

_heads: OrderedDict[int, Head] = OrderedDict()
_lock = threading.Lock()


def head_for_version(version) -> Head:
    """The version's head (`version` needs id, artifact_path and checksum), read and verified on first use."""
    with _lock:
        head = _heads.get(version.id)
        if head is not None:
            _heads.move_to_end(version.id)
            return head
    with default_storage.open(version.artifact_path, "rb") as handle:
        data = handle.read()
    head = load_head(data, version.checksum)
    with _lock:
        _heads[version.id] = head
        _heads.move_to_end(version.id)
        while len(_heads) > MAX_CACHED_HEADS:
            _heads.popitem(last=False)
    return head


def clear_cache() -> None:
    with _lock:
        _heads.clear()


def rounded_scores(row: np.ndarray) -> np.ndarray:
    """Probabilities rounded to SCORE_DECIMALS whose sum stays 1 (the residue moves to the largest score)."""
    scores = np.round(row.astype(np.float64), SCORE_DECIMALS)
    top = int(np.argmax(scores))
    scores[top] = round(scores[top] + (1.0 - scores.sum()), SCORE_DECIMALS)
    return scores


def predict(*, head: Head, texts: Sequence[str], threshold: float) -> list[dict]:
    """One prediction per text, in order: label, confidence, above_threshold and every label's score."""
    from labeling.embeddings import embed_texts

    texts = list(texts)
    proba = head.predict_proba(embed_texts(texts), texts=texts)
    labels = head.labels
    predictions = []
    for row in proba:
        scores = rounded_scores(row)
        top = int(np.argmax(scores))
        confidence = float(scores[top])
        predictions.append({
            "label": labels[top], "confidence": confidence, "above_threshold": confidence >= threshold,
            "scores": {label: float(score) for label, score in zip(labels, scores)},
        })
    return predictions


def classify(*, version, texts: Sequence[str], threshold: float) -> list[dict]:
    return predict(head=head_for_version(version), texts=texts, threshold=threshold)
