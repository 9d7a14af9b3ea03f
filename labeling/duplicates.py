"""Groups of near-duplicate texts in a dataset. Pure numpy/scipy/scikit-learn: no Django.

Two records are near-duplicates when the cosine similarity of their (L2-normalised) vectors is at least
`threshold` (default 0.95), or when their texts are equal after normalisation (case, spacing). Groups
are the connected components of that relation (union-find), so a chain a~b~c is one group.

How it stays within memory
- Exact text duplicates are collapsed first: only one row per distinct text enters the similarity pass.
- Up to `EXACT_MAX_ROWS` distinct texts, every pair is compared, in square blocks of `BLOCK` rows
  (a few MB each), never as an n x n matrix.
- Above that the search is approximate (an inverted file, as vector indexes do): k-means cells over a
  sample; each row is compared with the rows whose nearest cell is one of its `PROBES` nearest cells.
  Near-duplicates at 0.95 are so close that they almost always share a cell; a pair split across cells
  that are not among each other's nearest is missed, so the result says `method: "approximate"`.
- Edges found so far are merged into component labels whenever they pile up (scipy's connected
  components), so a huge group of near-identical texts does not keep millions of pairs in memory.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

DEFAULT_THRESHOLD = 0.95
MIN_THRESHOLD = 0.8  # below this "near-duplicate" stops meaning the same message
EXACT_MAX_ROWS = 50_000
BLOCK = 2048
PROBES = 2
_FLUSH_EDGES = 2_000_000
_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    return _WHITESPACE.sub(" ", text.casefold()).strip()


def text_key(text: str) -> int:
    """A 63-bit key of the normalised text: equal texts (up to case and spacing) get equal keys."""
    digest = hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class DuplicateGroups:
    groups: list[np.ndarray]  # row indices, ascending; groups of 2+ rows, largest first, then by first row
    method: str  # "exact" (every pair compared) or "approximate"
    rows: int
    distinct_texts: int

    @property
    def duplicate_rows(self) -> int:
        """Rows beyond one per group: what excluding duplicates takes out of the pool."""
        return sum(len(group) - 1 for group in self.groups)


class _Components:
    """Component labels over n rows, merged from batches of edges."""

    def __init__(self, n: int):
        self.n = n
        self.labels = np.arange(n, dtype=np.int64)
        self.pending: list[np.ndarray] = []
        self.pending_count = 0

    def add(self, left: np.ndarray, right: np.ndarray) -> None:
        a, b = self.labels[left], self.labels[right]
        keep = a != b
        if not keep.any():
            return
        self.pending.append(np.stack([a[keep], b[keep]], axis=1))
        self.pending_count += int(keep.sum())
        if self.pending_count >= _FLUSH_EDGES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        edges = np.concatenate(self.pending)
        self.pending, self.pending_count = [], 0
        graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(self.n, self.n))
        _, merged = connected_components(graph, directed=False)
        self.labels = merged[self.labels].astype(np.int64)


def find_duplicate_groups(*, vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                          text_keys: Sequence[int] | np.ndarray | None = None, exact_max_rows: int = EXACT_MAX_ROWS,
                          block: int = BLOCK, max_threads: int = 1, seed: int = 0,
                          progress: Callable[[float], None] | None = None) -> DuplicateGroups:
    """Near-duplicate groups among the rows of `vectors` (n x d, L2-normalised); `text_keys[i]` (e.g. from
    `text_key`) groups equal texts whatever their vectors."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise ValueError(f"threshold must be between {MIN_THRESHOLD} and 1")
    if text_keys is not None and len(text_keys) != n:
        raise ValueError(f"{len(text_keys)} text keys for {n} vectors")
    report = progress or (lambda fraction: None)

    # Distinct texts: one representative row each (the first); identical texts share its component.
    if text_keys is not None and n:
        _, representative_rows, owner = np.unique(np.asarray(text_keys, dtype=np.int64), return_index=True, return_inverse=True)
        owner = owner.reshape(-1)
    else:
        representative_rows, owner = np.arange(n), np.arange(n)
    unique_vectors = vectors[representative_rows] if len(representative_rows) != n else vectors
    m = len(representative_rows)
    components = _Components(m)
    # Float32 products of unit vectors can land a hair under 1.0 for identical vectors.
    cut = np.float32(threshold - 1e-6)
    with threadpool_limits(limits=max_threads):
        if m <= exact_max_rows:
            method = "exact"
            _all_pairs(unique_vectors, cut, block, components, report)
        else:
            method = "approximate"
            _inverted_file(unique_vectors, cut, block, components, report, seed)
    components.flush()

    row_labels = components.labels[owner]
    order = np.argsort(row_labels, kind="stable")
    sorted_labels = row_labels[order]
    boundaries = np.flatnonzero(np.diff(sorted_labels)) + 1
    groups = [np.sort(group) for group in np.split(order, boundaries) if len(group) > 1]
    groups.sort(key=lambda group: (-len(group), int(group[0])))
    report(1.0)
    return DuplicateGroups(groups=groups, method=method, rows=n, distinct_texts=m)


def _all_pairs(vectors: np.ndarray, cut: np.float32, block: int, components: _Components,
               report: Callable[[float], None]) -> None:
    m = len(vectors)
    starts = list(range(0, m, block))
    total = len(starts) * (len(starts) + 1) // 2 or 1
    done = 0
    for i, a in enumerate(starts):
        rows = vectors[a:a + block]
        for b in starts[i:]:
            similarities = rows @ vectors[b:b + block].T
            left, right = np.nonzero(similarities >= cut)
            left, right = left + a, right + b
            upper = left < right
            components.add(left[upper], right[upper])
            done += 1
        report(0.95 * done / total)


def _inverted_file(vectors: np.ndarray, cut: np.float32, block: int, components: _Components,
                   report: Callable[[float], None], seed: int) -> None:
    from sklearn.cluster import MiniBatchKMeans

    m = len(vectors)
    cells = int(min(4096, max(16, np.sqrt(m))))
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(m, size=min(m, 50_000), replace=False)]
    kmeans = MiniBatchKMeans(n_clusters=cells, batch_size=4096, n_init=1, max_iter=20, random_state=seed).fit(sample)
    centres = kmeans.cluster_centers_.astype(np.float32)
    centres /= np.clip(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12, None)
    nearest = np.empty((m, PROBES), dtype=np.int64)
    for a in range(0, m, 65_536):
        scores = vectors[a:a + 65_536] @ centres.T
        top = np.argpartition(-scores, PROBES - 1, axis=1)[:, :PROBES]
        best_first = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        nearest[a:a + 65_536] = np.take_along_axis(top, best_first, axis=1)
    report(0.1)
    home = nearest[:, 0]
    home_order = np.argsort(home, kind="stable")
    home_bounds = np.searchsorted(home[home_order], np.arange(cells + 1))
    probe_rows = np.repeat(np.arange(m), PROBES)
    probe_cells = nearest.reshape(-1)
    probe_order = np.argsort(probe_cells, kind="stable")
    probe_bounds = np.searchsorted(probe_cells[probe_order], np.arange(cells + 1))
    for cell in range(cells):
        members = home_order[home_bounds[cell]:home_bounds[cell + 1]]
        probers = probe_rows[probe_order[probe_bounds[cell]:probe_bounds[cell + 1]]]
        if len(members) == 0 or len(probers) == 0:
            continue
        member_vectors = vectors[members]
        for a in range(0, len(probers), block):
            chunk = probers[a:a + block]
            left, right = np.nonzero(vectors[chunk] @ member_vectors.T >= cut)
            left, right = chunk[left], members[right]
            distinct = left != right
            components.add(left[distinct], right[distinct])
        if cell % 64 == 0:
            report(0.1 + 0.85 * (cell + 1) / cells)
