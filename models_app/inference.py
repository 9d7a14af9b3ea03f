"""Classifying texts with a model version: heads loaded once per process, cached by version.

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

from .ml.artifacts import Head, load_head, predict_texts

# Heads are small (a zero-shot head is labels x 384 floats, a fine-tuned one a few MB of n-gram weights);
# a few dozen cover every model a process is likely to serve, and the bound keeps a long-lived process
# from growing without limit.
MAX_CACHED_HEADS = 64
# A model retrained every 20 labels makes a new version every few minutes and never serves the old ones
# again: keeping only its two most recently used versions (the served one, and the one a comparison reads)
# stops a busy model from filling the cache with dead versions (the soak run grew by 100 MB that way).
MAX_CACHED_VERSIONS_PER_MODEL = 2
# Scores are rounded for the JSON answer; the rounding residue goes to the top label so they still sum to 1.
SCORE_DECIMALS = 6

# (version id, checksum) -> (model id, head). The checksum makes the key unique even where ids are
# reused (a database restored from a backup, a test database rolled back).
_heads: OrderedDict[tuple[int, str], tuple[int | None, Head]] = OrderedDict()
_lock = threading.Lock()


def head_for_version(version) -> Head:
    """The version's head (`version` needs id, artifact_path and checksum), read and verified on first use."""
    key = (version.id, version.checksum)
    with _lock:
        cached = _heads.get(key)
        if cached is not None:
            _heads.move_to_end(key)
            return cached[1]
    with default_storage.open(version.artifact_path, "rb") as handle:
        data = handle.read()
    head = load_head(data, version.checksum)
    model_id = getattr(version, "model_id", None)
    with _lock:
        _heads[key] = (model_id, head)
        _heads.move_to_end(key)
        if model_id is not None:
            same_model = [k for k, (owner, _) in _heads.items() if owner == model_id]  # least recently used first
            for stale in same_model[:-MAX_CACHED_VERSIONS_PER_MODEL]:
                del _heads[stale]
        while len(_heads) > MAX_CACHED_HEADS:
            _heads.popitem(last=False)
    return head


def cached_version_ids() -> list[int]:
    """Version ids whose heads this process holds, least recently used first (for tests and diagnostics)."""
    with _lock:
        return [version_id for version_id, _ in _heads]


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
    proba = predict_texts(head, texts, embed_texts)
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
