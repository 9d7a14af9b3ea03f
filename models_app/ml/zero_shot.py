"""Describe-and-classify: a classifier built from label names and descriptions alone. Pure: no Django.

Each label is represented by the sentence embedding of its description (or of its name turned into a
phrase when the description is empty); a text's probabilities are a softmax over its cosine
similarities to those label vectors.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

# Cosine similarities between MiniLM vectors span a narrow range (~0.0–0.7), so an untempered softmax
# would be nearly uniform; this temperature spreads it into usable probabilities.
DEFAULT_TEMPERATURE = 0.05


def label_phrase(name: str) -> str:
    """Turn a label identifier into plain words: "card_arrival" -> "card arrival", "BillingIssue" -> "billing issue"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    spaced = re.sub(r"[_\-./:]+", " ", spaced)
    return re.sub(r"\s+", " ", spaced).strip().lower()


class ZeroShotHead:
    """Label vectors plus a softmax temperature; inference is one matrix product."""

    def __init__(self, *, labels: list[str], label_vectors: np.ndarray, temperature: float, details: dict):
        self.labels = list(labels)
        self.label_vectors = np.asarray(label_vectors, dtype=np.float32)
        self.temperature = float(temperature)
        self.details = details

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.label_vectors.shape[1])
        logits = (vectors @ self.label_vectors.T).astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def build_zero_shot_head(
    *,
    labels: list[str],
    descriptions: dict[str, str],
    embed: Callable[[list[str]], np.ndarray],
    pool_vectors: np.ndarray | None = None,
    seed: int = 0,
) -> ZeroShotHead:
    if not labels:
        raise ValueError("a zero-shot model needs at least one label")
    texts = [(descriptions.get(label) or "").strip() or label_phrase(label) for label in labels]
    label_vectors = _normalise_rows(np.asarray(embed(texts), dtype=np.float32))
    details = {
        "method": "cosine to label descriptions, softmax with fixed temperature",
        "texts": texts,
        "temperature": DEFAULT_TEMPERATURE,
        "pool_size": 0,
        "refinement_rounds": 0,
    }
    return ZeroShotHead(labels=labels, label_vectors=label_vectors, temperature=DEFAULT_TEMPERATURE, details=details)
