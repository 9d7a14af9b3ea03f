"""Describe-and-classify: a classifier built from label names and descriptions alone. Pure: no Django.

1. Each label gets a vector from its text: the label name turned into a phrase under a few templates
   (averaged), plus its description when there is one (weighted higher: it says more than the name).
2. When the dataset's unlabeled pool vectors are given, each label vector is refined by a few rounds
   of hard EM: every pool vector goes to its most similar label, and each label moves to the
   normalised mix of its description vector and the direction of its assigned pool vectors
   (weighted by their probability). This pulls label vectors from "how a label name reads"
   towards "how the dataset's texts on that subject read". A label no pool vector chooses keeps
   its description vector. No labels are used.
3. Probabilities are a softmax over cosine similarities with a fixed temperature, measured to be
   roughly calibrated on two datasets (see bench/README_zero_shot.md).

Inference is one (n x 384) @ (384 x k) product; the head holds only numpy arrays and plain data.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
from scipy import sparse

# Cosine similarities between MiniLM vectors span a narrow range (~0.0–0.7): dividing by 0.05 spreads
# them into usable probabilities. 0.05 had the lowest (or near-lowest) calibration error in a sweep on
# our support-ticket set, and gave ECE 0.016–0.048 on Banking77, which played no part in choosing it.
TEMPERATURE = 0.05
NAME_TEMPLATES = ("{phrase}", "a question about {phrase}")
DESCRIPTION_WEIGHT = 2.0
REFINEMENT_ROUNDS = 3
# Each refined label vector is normalise(PRIOR_SHARE * description vector + pool direction), the pool
# direction shrunk by count / (count + SMALL_LABEL_COUNT).
PRIOR_SHARE = 0.5
SMALL_LABEL_COUNT = 3.0
MAX_POOL = 20_000


def label_phrase(name: str) -> str:
    """Turn a label identifier into plain words: "card_arrival" -> "card arrival", "BillingIssue" -> "billing issue"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    spaced = re.sub(r"[^\w']+|_+", " ", spaced)
    return re.sub(r"\s+", " ", spaced).strip().lower() or name.strip()


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _softmax(similarities: np.ndarray, temperature: float) -> np.ndarray:
    logits = similarities.astype(np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


class ZeroShotHead:
    """Label vectors plus a softmax temperature; inference is one matrix product."""

    def __init__(self, *, labels: list[str], label_vectors: np.ndarray, temperature: float, details: dict):
        self.labels = list(labels)
        self.label_vectors = np.ascontiguousarray(label_vectors, dtype=np.float32)
        self.temperature = float(temperature)
        self.details = details

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        vectors = _as_matrix(vectors, self.label_vectors.shape[1], "vectors").astype(np.float32, copy=False)
        return _softmax(vectors @ self.label_vectors.T, self.temperature)


def _as_matrix(vectors: np.ndarray, width: int, name: str) -> np.ndarray:
    """A (n, width) view; one 1-D vector counts as one row. Any other shape is refused, never reshaped."""
    matrix = np.asarray(vectors)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise ValueError(f"{name} must be (n, {width}); got shape {np.shape(vectors)}")
    return matrix


def _label_vectors(labels: list[str], descriptions: dict[str, str], embed: Callable[[list[str]], np.ndarray]):
    phrases = [label_phrase(label) for label in labels]
    name_texts = [template.format(phrase=phrase) for template in NAME_TEMPLATES for phrase in phrases]
    name_vectors = _normalise_rows(np.asarray(embed(name_texts), dtype=np.float32))
    vectors = _normalise_rows(name_vectors.reshape(len(NAME_TEMPLATES), len(labels), -1).mean(axis=0))

    described = [i for i, label in enumerate(labels) if (descriptions.get(label) or "").strip()]
    if described:
        description_texts = [descriptions[labels[i]].strip() for i in described]
        description_vectors = _normalise_rows(np.asarray(embed(description_texts), dtype=np.float32))
        vectors[described] = _normalise_rows(vectors[described] + DESCRIPTION_WEIGHT * description_vectors)
    return vectors, phrases, len(described)


def refine_with_pool(label_vectors: np.ndarray, pool: np.ndarray, *, rounds: int = REFINEMENT_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Hard-EM refinement of label vectors on unlabeled pool vectors; returns (vectors, pool points per label)."""
    prior = label_vectors.astype(np.float32)
    refined = prior.copy()
    counts = np.zeros(len(prior), dtype=np.int64)
    for _ in range(rounds):
        probabilities = _softmax(pool @ refined.T, TEMPERATURE)
        assigned = probabilities.argmax(axis=1)
        weights = probabilities[np.arange(len(pool)), assigned].astype(np.float32)
        membership = sparse.csr_matrix((weights, (assigned, np.arange(len(pool)))), shape=(len(prior), len(pool)))
        pool_directions = _normalise_rows(np.asarray(membership @ pool, dtype=np.float32))
        counts = np.bincount(assigned, minlength=len(prior))
        # The description keeps a fixed share, so a large label cannot drift away from what it means;
        # a label with only a few pool points moves only a little, and one with none stays where it was.
        pool_share = (counts / (counts + SMALL_LABEL_COUNT)).astype(np.float32)[:, None]
        refined = _normalise_rows(PRIOR_SHARE * prior + pool_share * pool_directions)
    return refined, counts


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
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    vectors, phrases, described = _label_vectors(labels, descriptions, embed)

    pool = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    if pool_vectors is not None and len(pool_vectors):
        pool = _as_matrix(pool_vectors, vectors.shape[1], "pool_vectors")  # no copy yet: it may be a 1M-row float16 store
        if len(pool) > MAX_POOL:  # the refined centroids are means: a 20k sample estimates them as well as 1M rows
            pool = pool[np.sort(np.random.default_rng(seed).choice(len(pool), MAX_POOL, replace=False))]
        pool = _normalise_rows(pool.astype(np.float32))

    rounds = REFINEMENT_ROUNDS if len(pool) and len(labels) > 1 else 0
    counts = np.zeros(len(labels), dtype=np.int64)
    if rounds:
        vectors, counts = refine_with_pool(vectors, pool, rounds=rounds)

    details = {
        "method": "cosine to label vectors (name templates + description), hard-EM refinement on the unlabeled pool, softmax",
        "name_templates": list(NAME_TEMPLATES),
        "label_phrases": phrases,
        "labels_with_description": described,
        "description_weight": DESCRIPTION_WEIGHT,
        "temperature": TEMPERATURE,
        "pool_size": int(len(pool)),
        "refinement_rounds": rounds,
        "prior_share": PRIOR_SHARE,
        "pool_points_per_label": [int(count) for count in counts],
        "seed": seed,
    }
    return ZeroShotHead(labels=labels, label_vectors=vectors, temperature=TEMPERATURE, details=details)
