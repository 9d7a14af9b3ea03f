"""models_app.ml.compare: McNemar against worked examples and scipy, disagreement bookkeeping, label sets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from models_app.ml.compare import LabelSetMismatch, compare_versions, mcnemar
from models_app.ml.evaluation import evaluate

LABELS = ["Billing", "Technical"]


def proba_of(predicted):
    proba = np.full((len(predicted), 2), 0.2)
    proba[np.arange(len(predicted)), predicted] = 0.8
    return proba


def test_mcnemar_chi_square_worked_example():
    # Worked by hand: b = 121, c = 59 → corrected chi2 = 61^2 / 180 ≈ 20.67.
    result = mcnemar(121, 59)
    assert result["method"] == "chi-square with continuity correction"
    assert result["statistic"] == pytest.approx(61**2 / 180, abs=1e-6)
    assert result["p_value"] == pytest.approx(chi2.sf(61**2 / 180, 1), abs=1e-6)
    assert result["p_value"] < 1e-5
    assert result["significant"] is True


def test_mcnemar_exact_for_few_discordant_records():
    result = mcnemar(1, 9)
    assert result["method"] == "exact binomial"
    # Two-sided exact: 2 * P(X <= 1), X ~ Bin(10, 0.5) = 2 * 11 / 1024.
    assert result["p_value"] == pytest.approx(22 / 1024, abs=1e-6)
    assert result["p_value"] == pytest.approx(binomtest(1, 10, 0.5).pvalue, abs=1e-6)
    assert mcnemar(3, 4)["significant"] is False


def test_mcnemar_without_discordant_records():
    result = mcnemar(0, 0)
    assert result["p_value"] == 1.0 and result["significant"] is False


def test_compare_counts_rows_and_verdict():
    gold = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1])
    a = np.array([0, 0, 1, 0, 1, 0, 1, 1, 0, 1])   # right at rows 0,1,2,7,8,9
    b = np.array([0, 0, 1, 1, 0, 1, 1, 1, 1, 1])   # right at rows 0,1,2,3,4,5,7,9
    result = compare_versions(labels=LABELS, y_true=gold, proba_a=proba_of(a), proba_b=proba_of(b),
                              metrics_a=evaluate(labels=LABELS, y_true=gold, proba=proba_of(a), evaluation="holdout"),
                              metrics_b=None)
    assert result["disagreements"] == {"both_wrong": 1, "a_right_b_wrong": 1, "a_wrong_b_right": 3}
    assert result["disagreement_rows"] == {"a_right_b_wrong": [8], "a_wrong_b_right": [3, 4, 5], "both_wrong": [6]}
    assert result["shared"]["accuracy_a"] == 0.6 and result["shared"]["accuracy_b"] == 0.8
    assert result["shared"]["accuracy_delta"] == pytest.approx(0.2)
    assert result["mcnemar"]["p_value"] == pytest.approx(binomtest(1, 4, 0.5).pvalue, abs=1e-6)
    assert result["verdict"].startswith("Version B is more accurate than version A on the 10 shared evaluation records (80.0% vs 60.0%)")
    assert "the difference is not statistically significant (p = 0.625" in result["verdict"]
    billing = result["per_class"]["Billing"]
    assert billing["delta"] == pytest.approx(billing["f1_b"] - billing["f1_a"], abs=1e-6) and billing["delta"] > 0
    json.dumps(result, allow_nan=False)


def test_compare_says_significant_for_a_large_paired_difference():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 1000)
    a = np.where(rng.random(1000) < 0.75, gold, 1 - gold)
    b = np.where(rng.random(1000) < 0.9, gold, 1 - gold)
    result = compare_versions(labels=LABELS, y_true=gold, proba_a=proba_of(a), proba_b=proba_of(b), metrics_a=None, metrics_b=None)
    assert result["mcnemar"]["significant"] is True
    assert "the difference is statistically significant (p < 0.001" in result["verdict"]


def test_different_label_sets_are_refused_with_the_reason():
    gold = np.array([0, 1])
    metrics_a = evaluate(labels=LABELS, y_true=gold, proba=proba_of([0, 1]), evaluation="holdout")
    metrics_b = evaluate(labels=["Billing", "Refunds"], y_true=gold, proba=proba_of([0, 1]), evaluation="holdout")
    with pytest.raises(LabelSetMismatch) as error:
        compare_versions(labels=LABELS, y_true=gold, proba_a=proba_of([0, 1]), proba_b=proba_of([0, 1]),
                         metrics_a=metrics_a, metrics_b=metrics_b)
    message = str(error.value)
    assert "different label sets" in message
    assert "version A has Technical that version B lacks" in message
    assert "version B has Refunds that version A lacks" in message
