"""Comparing two versions of a model on the same evaluation records. Pure numpy/scipy, no Django.

Both versions' predictions on the shared records are paired, so the right test is McNemar's: it looks only at
the discordant records (one version right, the other wrong). With fewer than 25 discordant records it uses
the exact two-sided binomial test, otherwise the chi-square statistic with continuity correction,
(|b - c| - 1)^2 / (b + c) with 1 degree of freedom (the usual rule, as in statsmodels' `mcnemar`).
Per-class F1 deltas are recomputed on the shared records too, so both sides are measured on the same data;
the versions' stored metrics are returned alongside unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest, chi2

from models_app.ml.evaluation import evaluate, label_indices

ALPHA = 0.05
EXACT_TEST_BELOW = 25


class LabelSetMismatch(ValueError):
    """The two versions classify into different label sets, so their predictions cannot be paired."""


def compare_versions(*, labels: list[str], y_true: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray,
                     metrics_a: dict[str, Any] | None, metrics_b: dict[str, Any] | None,
                     evaluation: str = "holdout") -> dict[str, Any]:
    """`proba_a`/`proba_b`: both versions' probabilities on the same records, columns in `labels` order;
    `y_true`: those records' gold labels (indices or names). Raises LabelSetMismatch if the versions' metrics
    name different label sets."""
    _check_same_label_set(labels, metrics_a, metrics_b)
    gold = label_indices(labels, y_true)
    proba_a, proba_b = np.asarray(proba_a), np.asarray(proba_b)
    for name, proba in (("A", proba_a), ("B", proba_b)):
        if proba.shape != (gold.size, len(labels)):
            raise ValueError(f"version {name}'s probabilities have shape {proba.shape}, expected ({gold.size}, {len(labels)})")

    right_a = proba_a.argmax(axis=1) == gold if gold.size else np.zeros(0, dtype=bool)
    right_b = proba_b.argmax(axis=1) == gold if gold.size else np.zeros(0, dtype=bool)
    rows = {
        "a_right_b_wrong": np.flatnonzero(right_a & ~right_b),
        "a_wrong_b_right": np.flatnonzero(~right_a & right_b),
        "both_wrong": np.flatnonzero(~right_a & ~right_b),
    }
    shared_a = evaluate(labels=labels, y_true=gold, proba=proba_a, evaluation=evaluation)
    shared_b = evaluate(labels=labels, y_true=gold, proba=proba_b, evaluation=evaluation)
    per_class = {
        label: {"f1_a": shared_a["per_class"][label]["f1"], "f1_b": shared_b["per_class"][label]["f1"],
                "delta": round(shared_b["per_class"][label]["f1"] - shared_a["per_class"][label]["f1"], 6),
                "support": shared_a["per_class"][label]["support"]}
        for label in labels
    }
    test = mcnemar(int(rows["a_right_b_wrong"].size), int(rows["a_wrong_b_right"].size))
    return {
        "metrics_a": metrics_a,
        "metrics_b": metrics_b,
        "shared": {"evaluated_on": int(gold.size),
                   "accuracy_a": shared_a["accuracy"], "accuracy_b": shared_b["accuracy"],
                   "accuracy_delta": round(shared_b["accuracy"] - shared_a["accuracy"], 6),
                   "f1_macro_a": shared_a["f1_macro"], "f1_macro_b": shared_b["f1_macro"],
                   "f1_macro_delta": round(shared_b["f1_macro"] - shared_a["f1_macro"], 6)},
        "per_class": per_class,
        "mcnemar": test,
        "disagreements": {
            "both_wrong": int(rows["both_wrong"].size),
            "a_right_b_wrong": int(rows["a_right_b_wrong"].size),
            "a_wrong_b_right": int(rows["a_wrong_b_right"].size),
        },
        # Row positions in the evaluation records passed in, for showing the disputed examples.
        "disagreement_rows": {key: value.tolist() for key, value in rows.items()},
        "verdict": _verdict(shared_a["accuracy"], shared_b["accuracy"], int(gold.size), test),
    }


def mcnemar(a_right_b_wrong: int, a_wrong_b_right: int, *, alpha: float = ALPHA) -> dict[str, Any]:
    """McNemar's test on the two discordant counts."""
    b, c = a_right_b_wrong, a_wrong_b_right
    discordant = b + c
    if discordant == 0:
        method, statistic, p_value = "none: no discordant records", 0.0, 1.0
    elif discordant < EXACT_TEST_BELOW:
        method, statistic = "exact binomial", float(min(b, c))
        p_value = float(binomtest(min(b, c), discordant, 0.5, alternative="two-sided").pvalue)
    else:
        method = "chi-square with continuity correction"
        statistic = (abs(b - c) - 1) ** 2 / discordant
        p_value = float(chi2.sf(statistic, df=1))
    p_value = min(1.0, p_value)
    return {"method": method, "statistic": round(float(statistic), 6), "p_value": round(p_value, 6),
            "alpha": alpha, "significant": p_value < alpha, "discordant": discordant}


def _verdict(accuracy_a: float, accuracy_b: float, n: int, test: dict[str, Any]) -> str:
    p_text = "p < 0.001" if test["p_value"] < 0.001 else f"p = {test['p_value']:.3f}"
    if accuracy_b > accuracy_a:
        lead = f"Version B is more accurate than version A on the {n} shared evaluation records ({accuracy_b:.1%} vs {accuracy_a:.1%})"
    elif accuracy_a > accuracy_b:
        lead = f"Version A is more accurate than version B on the {n} shared evaluation records ({accuracy_a:.1%} vs {accuracy_b:.1%})"
    else:
        lead = f"Both versions are equally accurate on the {n} shared evaluation records ({accuracy_a:.1%})"
    significance = "is" if test["significant"] else "is not"
    return f"{lead}; the difference {significance} statistically significant ({p_text}, McNemar's test, alpha {test['alpha']})."


def _check_same_label_set(labels: list[str], metrics_a: dict[str, Any] | None, metrics_b: dict[str, Any] | None) -> None:
    sets = {name: set(metrics["confusion_matrix"]["labels"])
            for name, metrics in (("version A", metrics_a), ("version B", metrics_b)) if metrics}
    sets["the label list compared on"] = set(labels)
    names = list(sets)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if sets[first] != sets[second]:
                only_first, only_second = sorted(sets[first] - sets[second]), sorted(sets[second] - sets[first])
                parts = [f"{owner} has {', '.join(extra)} that {other} lacks"
                         for owner, other, extra in ((first, second, only_first), (second, first, only_second)) if extra]
                raise LabelSetMismatch(
                    "the versions classify into different label sets, so their predictions cannot be paired record "
                    f"by record: {'; '.join(parts)}"
                )
