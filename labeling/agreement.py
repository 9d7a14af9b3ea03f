"""Inter-annotator agreement, pure numpy (no Django): what the team page and `GET /v2/models/{id}/agreement` report.

Ratings are `{annotator: {unit: label}}` (a unit is a record; an absent entry is a missing value, so
annotators need not label the same records). All measures are for nominal labels.

- `cohen_kappa`: two raters on the units both labeled, (p_o - p_e) / (1 - p_e) with p_e from each
  rater's own label distribution (Cohen 1960; equals `sklearn.metrics.cohen_kappa_score`).
- `krippendorff_alpha`: any number of raters with missing values, 1 - D_o / D_e from the coincidence
  matrix (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"); units with fewer than two
  values are not pairable and are left out, as the paper prescribes.
- `specific_agreement`: per label, the chance that a second rater also gives label k to a unit one rater
  gave k: sum_u n_uk (n_uk - 1) / sum_u n_uk (m_u - 1) (Uebersax's generalisation of positive/negative
  specific agreement to any number of raters; for two raters 2a / (2a + b + c)).
- `consensus_label`: the final label of a unit: the adjudicated one when there is one, else a strict
  majority of its raters, else none.
- `labels_per_hour`: labels divided by the time spent labeling (see there).

Every measure answers None where it is undefined (no pairable units, or chance agreement of 1 because
a single label was used throughout), never NaN: the API returns JSON null.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Hashable, Mapping, Sequence

import numpy as np

Ratings = Mapping[Hashable, Mapping[Hashable, str]]

# A gap between two labels of one annotator longer than this is a break, not time spent labeling.
IDLE_GAP_SECONDS = 300.0
# Labels sent closer together than this came in one request (a batch upload), not one by one.
BATCH_GAP_SECONDS = 1.0


def _index(values) -> dict:
    return {value: i for i, value in enumerate(sorted(set(values), key=str))}


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Cohen's kappa of two raters' labels for the same units, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"the raters labeled {len(a)} and {len(b)} units: pass the units both labeled")
    n = len(a)
    if n == 0:
        return None
    index = _index(list(a) + list(b))
    ia = np.fromiter((index[v] for v in a), dtype=np.int64, count=n)
    ib = np.fromiter((index[v] for v in b), dtype=np.int64, count=n)
    k = len(index)
    observed = float(np.mean(ia == ib))
    expected = float(np.bincount(ia, minlength=k) @ np.bincount(ib, minlength=k)) / (n * n)
    if expected >= 1.0:
        return None  # both raters used one and the same label throughout: agreement beyond chance is undefined
    return (observed - expected) / (1.0 - expected)


def _unit_counts(units: Sequence[Sequence]) -> tuple[np.ndarray, list]:
    """Units × labels matrix of how many raters gave each label, for the pairable units (2+ values)."""
    pairable = [list(values) for values in units if len(values) >= 2]
    index = _index(v for values in pairable for v in values)
    counts = np.zeros((len(pairable), len(index)), dtype=np.float64)
    for row, values in enumerate(pairable):
        for value in values:
            counts[row, index[value]] += 1
    return counts, list(index)


def coincidence_matrix(units: Sequence[Sequence]) -> tuple[np.ndarray, list]:
    """Krippendorff's coincidences o_ck: each unit contributes its ordered value pairs, weighted 1 / (m_u - 1)."""
    counts, labels = _unit_counts(units)
    if not len(counts):
        return np.zeros((0, 0)), labels
    weights = 1.0 / (counts.sum(axis=1) - 1.0)
    weighted = counts * weights[:, None]
    # sum_u (n_u n_u^T - diag(n_u)) / (m_u - 1): pairs of values from different raters of one unit.
    return weighted.T @ counts - np.diag(weighted.sum(axis=0)), labels


def krippendorff_alpha(units: Sequence[Sequence]) -> float | None:
    """Nominal alpha; `units` holds, per unit, the values its raters gave (missing ones simply absent)."""
    o, _ = coincidence_matrix(units)
    if not o.size:
        return None
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed_disagreement = o.sum() - np.trace(o)
    expected_pairs = n * n - float(n_c @ n_c)  # sum over c != k of n_c n_k
    if expected_pairs <= 0:
        return None  # one label throughout: no variation to be reliable about
    return float(1.0 - (n - 1.0) * observed_disagreement / expected_pairs)


def specific_agreement(units: Sequence[Sequence]) -> dict[str, dict]:
    """Per label: {"agreement": share (None if no pairable unit has it), "ratings": values of that label}."""
    counts, labels = _unit_counts(units)
    if not len(counts):
        return {}
    m = counts.sum(axis=1, keepdims=True)
    agreeing = (counts * (counts - 1)).sum(axis=0)
    possible = (counts * (m - 1)).sum(axis=0)
    return {label: {"agreement": float(agreeing[i] / possible[i]) if possible[i] > 0 else None,
                    "ratings": int(counts[:, i].sum())} for i, label in enumerate(labels)}


def consensus_label(values: Sequence, final: str | None = None) -> str | None:
    if final is not None:
        return final
    if not values:
        return None
    label, votes = Counter(values).most_common(1)[0]
    return label if votes * 2 > len(values) else None


def units_of(ratings: Ratings) -> dict[Hashable, list]:
    """unit → the values its raters gave (in annotator order)."""
    units: dict[Hashable, list] = {}
    for annotator in ratings:
        for unit, label in ratings[annotator].items():
            units.setdefault(unit, []).append(label)
    return units


@dataclass
class PairAgreement:
    a: Hashable
    b: Hashable
    shared: int  # units both labeled
    observed: float | None  # share of those they gave the same label
    kappa: float | None


def pairwise_kappa(ratings: Ratings) -> list[PairAgreement]:
    """Every pair of annotators (in the mapping's order), with kappa over the units both labeled."""
    pairs = []
    for a, b in combinations(list(ratings), 2):
        shared = [unit for unit in ratings[a] if unit in ratings[b]]
        la = [ratings[a][unit] for unit in shared]
        lb = [ratings[b][unit] for unit in shared]
        observed = float(np.mean([x == y for x, y in zip(la, lb)])) if shared else None
        pairs.append(PairAgreement(a=a, b=b, shared=len(shared), observed=observed, kappa=cohen_kappa(la, lb)))
    return pairs


@dataclass
class AnnotatorAgreement:
    annotator: Hashable
    compared: int  # units with 2+ raters and a consensus that this annotator labeled
    agreed: int

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def agreement_with_consensus(ratings: Ratings, final: Mapping[Hashable, str] | None = None) -> list[AnnotatorAgreement]:
    """Per annotator, how often their label is the unit's consensus, over the units two or more raters labeled.

    `final` maps units to adjudicated labels, which are the consensus where present.
    """
    final = final or {}
    units = units_of(ratings)
    consensus = {unit: consensus_label(values, final.get(unit)) for unit, values in units.items() if len(values) >= 2}
    result = []
    for annotator, labels in ratings.items():
        compared = agreed = 0
        for unit, label in labels.items():
            target = consensus.get(unit)
            if target is None:
                continue
            compared += 1
            agreed += label == target
        result.append(AnnotatorAgreement(annotator=annotator, compared=compared, agreed=agreed))
    return result


def labels_per_hour(times: Sequence[float], durations_ms: Sequence[float | None], *,
                    idle_gap: float = IDLE_GAP_SECONDS, batch_gap: float = BATCH_GAP_SECONDS) -> tuple[float | None, float]:
    """(labels per hour, hours spent) for one annotator's labels, `times` in seconds, ascending.

    Only labels whose time is known count, in both the labels and the hours: a label's time is how long
    the annotator looked at the record (`duration_ms`, which the labeling page sends); for a label without
    it (an API client that did not send it), the gap since the annotator's previous label, unless that gap
    is a break (longer than `idle_gap`) or the labels came in one batch (closer than `batch_gap`). None
    when no label's time is known.
    """
    seconds = 0.0
    timed = 0
    previous = None
    for when, duration in zip(times, durations_ms):
        if duration is not None:
            seconds += duration / 1000.0
            timed += 1
        elif previous is not None and batch_gap <= when - previous <= idle_gap:
            seconds += when - previous
            timed += 1
        previous = when
    hours = seconds / 3600.0
    return (timed / hours if hours > 0 else None), hours
