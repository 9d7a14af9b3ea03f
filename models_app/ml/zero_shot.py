"""Describe-and-classify: a classifier built from label names and descriptions alone. Pure: no Django.

1. Each label gets a vector from its text: the label name turned into a phrase under a few templates
   (averaged), plus its description when there is one (weighted higher: it says more than the name).
2. When the dataset's unlabeled pool vectors are given, each label vector is refined on the pool,
   in two steps; no labels are used.
   a. Hard EM, 2 rounds: every pool vector goes to its most similar label, and each label moves to
      the normalised mix of its step-1 vector (a fixed share) and the direction of its assigned pool
      vectors (weighted by their probability). This pulls label vectors from "how a label name reads"
      towards "how the dataset's texts on that subject read".
   b. Label spreading on a k-nearest-neighbour graph of the pool (at most 10k rows): the EM
      probabilities are smoothed over the graph, so a text whose neighbours mostly belong to one label
      joins it even if its own vector sits nearer another; then one more M-step as in (a) from the
      smoothed assignments. Texts of one intent form connected neighbourhoods more reliably than
      they form a ball around one centroid, which is what EM alone assumes.
   A label no pool vector chooses keeps its step-1 vector. More EM rounds make things worse: started
   from the *true* class centroids of Banking77, hard EM falls from 84.9% to 78% in 3 rounds and 75% in
   10 (the pool's own cluster structure is not its class structure), hence few rounds and the anchor.
3. Probabilities are a softmax over cosine similarities with a fixed temperature, measured to be
   roughly calibrated on two datasets (see bench/README_zero_shot.md).

Inference is one (n x 384) @ (384 x k) product; the head holds only numpy arrays and plain data.
The pool work (graph included) is done once, when the head is built.
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
REFINEMENT_ROUNDS = 2
# Each refined label vector is normalise(PRIOR_SHARE * description vector + pool direction), the pool
# direction shrunk by count / (count + SMALL_LABEL_COUNT).
PRIOR_SHARE = 0.3
SMALL_LABEL_COUNT = 3.0
MAX_POOL = 20_000
# Label spreading (Zhou et al. 2004) on the pool's k-NN graph: edge weight cos^3 (near neighbours count
# most), symmetric normalisation, F <- ALPHA * W F + (1 - ALPHA) * Y0 for SPREADING_STEPS steps.
# The graph is built on at most GRAPH_MAX_ROWS pool rows (~1-2 s for 10k on one core).
NEIGHBOURS = 10
SPREADING_ALPHA = 0.9
SPREADING_STEPS = 20
GRAPH_MAX_ROWS = 10_000


def label_phrase(name: str) -> str:
    """Turn a label identifier into plain words: "card_arrival" -> "card arrival", "BillingIssue" -> "billing issue"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    spaced = re.sub(r"[^\w']+|_+", " ", spaced)
    return re.sub(r"\s+", " ", spaced).strip().lower() or name.strip()


def descriptions_used(labels: Sequence[str], descriptions: dict[str, str]) -> dict[str, str]:
    """The labels' non-blank descriptions, stripped: what label vectors are built from (a blank one means the name alone)."""
    return {label: text for label in labels if (text := (descriptions.get(label) or "").strip())}


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

    used = descriptions_used(labels, descriptions)
    described = [i for i, label in enumerate(labels) if label in used]
    if described:
        description_texts = [used[labels[i]] for i in described]
        description_vectors = _normalise_rows(np.asarray(embed(description_texts), dtype=np.float32))
        vectors[described] = _normalise_rows(vectors[described] + DESCRIPTION_WEIGHT * description_vectors)
    return vectors, phrases, len(described)


def _m_step(prior: np.ndarray, pool: np.ndarray, assigned: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """normalise(PRIOR_SHARE * prior + c/(c + SMALL_LABEL_COUNT) * direction of the c pool vectors assigned)."""
    membership = sparse.csr_matrix((weights.astype(np.float32), (assigned, np.arange(len(pool)))), shape=(len(prior), len(pool)))
    pool_directions = _normalise_rows(np.asarray(membership @ pool, dtype=np.float32))
    counts = np.bincount(assigned, minlength=len(prior))
    # The description keeps a fixed share, so a large label cannot drift away from what it means;
    # a label with only a few pool points moves only a little, and one with none stays where it was.
    pool_share = (counts / (counts + SMALL_LABEL_COUNT)).astype(np.float32)[:, None]
    return _normalise_rows(PRIOR_SHARE * prior + pool_share * pool_directions), counts


def refine_with_pool(label_vectors: np.ndarray, pool: np.ndarray, *, rounds: int = REFINEMENT_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Hard-EM refinement of label vectors on unlabeled pool vectors; returns (vectors, pool points per label)."""
    prior = label_vectors.astype(np.float32)
    refined = prior.copy()
    counts = np.zeros(len(prior), dtype=np.int64)
    for _ in range(rounds):
        probabilities = _softmax(pool @ refined.T, TEMPERATURE)
        assigned = probabilities.argmax(axis=1)
        refined, counts = _m_step(prior, pool, assigned, probabilities[np.arange(len(pool)), assigned])
    return refined, counts


def neighbour_graph(points: np.ndarray, k: int = NEIGHBOURS, block: int = 1024) -> sparse.csr_matrix:
    """Symmetrically normalised k-NN graph of unit vectors, weights max(cos, 0)^3. Blocked: memory block x n."""
    n = len(points)
    k = min(k, n - 1)
    rows, cols, weights = [], [], []
    for start in range(0, n, block):
        similarities = points[start:start + block] @ points.T
        similarities[np.arange(len(similarities)), np.arange(start, start + len(similarities))] = -np.inf
        nearest = np.argpartition(similarities, n - k, axis=1)[:, n - k:]
        rows.append(np.repeat(np.arange(start, start + len(similarities)), k))
        cols.append(nearest.ravel())
        weights.append(np.maximum(np.take_along_axis(similarities, nearest, axis=1).ravel(), 0.0) ** 3)
    graph = sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    graph = graph + graph.T
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sparse.diags((1.0 / np.sqrt(np.maximum(degree, 1e-12))).astype(np.float32))
    return (scale @ graph @ scale).tocsr()


def spread_on_pool(label_vectors: np.ndarray, prior: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label spreading of the current probabilities over the pool's k-NN graph, then one M-step from its result."""
    start = _softmax(pool @ label_vectors.T, TEMPERATURE).astype(np.float32)
    graph = neighbour_graph(pool)
    spread = start.copy()
    for _ in range(SPREADING_STEPS):
        spread = SPREADING_ALPHA * (graph @ spread) + (1.0 - SPREADING_ALPHA) * start
    assigned = spread.argmax(axis=1)
    weights = spread[np.arange(len(pool)), assigned] / np.maximum(spread.sum(axis=1), 1e-12)
    return _m_step(prior, pool, assigned, weights)


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
    graph_rows = 0
    if rounds:
        prior = vectors
        vectors, counts = refine_with_pool(prior, pool, rounds=rounds)
        if len(pool) > NEIGHBOURS:
            graph_pool = pool
            if len(pool) > GRAPH_MAX_ROWS:
                graph_pool = pool[np.sort(np.random.default_rng(seed + 1).choice(len(pool), GRAPH_MAX_ROWS, replace=False))]
            vectors, counts = spread_on_pool(vectors, prior, graph_pool)
            graph_rows = len(graph_pool)

    details = {
        "method": "cosine to label vectors (name templates + description), hard-EM refinement and label spreading "
                  "on the unlabeled pool, softmax",
        "name_templates": list(NAME_TEMPLATES),
        "label_phrases": phrases,
        "labels_with_description": described,
        # What the label vectors were built from: a trainer using this head as its prior can tell whether the
        # model's descriptions changed since.
        "descriptions": descriptions_used(labels, descriptions),
        "description_weight": DESCRIPTION_WEIGHT,
        "temperature": TEMPERATURE,
        "pool_size": int(len(pool)),
        "refinement_rounds": rounds,
        "prior_share": PRIOR_SHARE,
        "spreading": {"graph_rows": int(graph_rows), "neighbours": NEIGHBOURS, "alpha": SPREADING_ALPHA,
                      "steps": SPREADING_STEPS} if graph_rows else None,
        "pool_points_per_label": [int(count) for count in counts],
        "seed": seed,
    }
    return ZeroShotHead(labels=labels, label_vectors=vectors, temperature=TEMPERATURE, details=details)
