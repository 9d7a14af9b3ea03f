"""labeling/agreement.py against published worked examples and scikit-learn, not against its own numbers."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from labeling.agreement import (
    agreement_with_consensus,
    coincidence_matrix,
    cohen_kappa,
    consensus_label,
    krippendorff_alpha,
    labels_per_hour,
    pairwise_kappa,
    specific_agreement,
    units_of,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers, twelve
# units, values 1-5, missing values (None). Nominal alpha = 0.743.
KRIPPENDORFF_C = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}
# Same paper, section A: two observers, ten units, binary, no missing values. Alpha = 0.095.
KRIPPENDORFF_A = {"A": [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], "B": [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]}


def as_ratings(table: dict[str, list]) -> dict[str, dict[int, str]]:
    return {coder: {unit: str(v) for unit, v in enumerate(values) if v is not None} for coder, values in table.items()}


def test_krippendorff_nominal_example_with_missing_values_is_0_743():
    units = list(units_of(as_ratings(KRIPPENDORFF_C)).values())
    assert round(krippendorff_alpha(units), 3) == 0.743
    # The paper's coincidence matrix: the 1-1 cell is 7 and the values it counts sum to n = 40 pairable values
    # (unit 12, with a single value, is not pairable).
    o, labels = coincidence_matrix(units)
    assert labels == ["1", "2", "3", "4", "5"]
    assert o.sum() == pytest.approx(40)
    assert o[0, 0] == pytest.approx(7) and o[1, 1] == pytest.approx(10) and o[0, 1] == pytest.approx(4 / 3)
    assert o.sum(axis=1) == pytest.approx([9, 13, 10, 5, 3])  # n_c row of the paper's table


def test_krippendorff_binary_two_observer_example_is_0_095():
    units = list(units_of(as_ratings(KRIPPENDORFF_A)).values())
    assert round(krippendorff_alpha(units), 3) == 0.095


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation_or_pairs():
    assert krippendorff_alpha([["a", "a"], ["b", "b", "b"], ["c", "c"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a", "a"], ["a", "a", "a"]]) is None
    assert krippendorff_alpha([["a"], ["b"]]) is None
    assert krippendorff_alpha([]) is None


def test_alpha_agrees_with_the_pairwise_disagreement_definition_on_random_data():
    """alpha = 1 - D_o / D_e, computed here naively from its definition over all pairable values."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        units = [[str(v) for v in rng.integers(0, 4, size=rng.integers(1, 5))] for _ in range(30)]
        pairable = [u for u in units if len(u) >= 2]
        values = [v for u in pairable for v in u]
        n = len(values)
        d_o = sum(sum(a != b for i, a in enumerate(u) for j, b in enumerate(u) if i != j) / (len(u) - 1)
                  for u in pairable) / n
        d_e = sum(a != b for i, a in enumerate(values) for j, b in enumerate(values) if i != j) / (n * (n - 1))
        assert krippendorff_alpha(units) == pytest.approx(1 - d_o / d_e)


def test_cohen_kappa_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.array(["billing", "card", "refund", "cancel"])
    for trial in range(50):
        n = int(rng.integers(5, 200))
        a = labels[rng.integers(0, 4, size=n)]
        # b agrees with a most of the time, on a possibly different set of labels
        b = np.where(rng.random(n) < rng.random(), a, labels[rng.integers(0, 3, size=n)])
        expected = cohen_kappa_score(a, b)
        assert cohen_kappa(list(a), list(b)) == pytest.approx(expected, abs=1e-12), trial


def test_cohen_kappa_textbook_example_is_0_4():
    # 50 applications: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 (p_o 0.7, p_e 0.5).
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_undefined_cases():
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is 1
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_specific_agreement_two_raters_is_positive_and_negative_agreement():
    # The 2x2 table above: positive agreement 2a / (2a + b + c) = 40 / 55, negative 2d / (2d + b + c) = 30 / 45.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    per_class = specific_agreement([[x, y] for x, y in zip(a, b)])
    assert per_class["yes"]["agreement"] == pytest.approx(40 / 55)
    assert per_class["no"]["agreement"] == pytest.approx(30 / 45)
    assert per_class["yes"]["ratings"] == 55 and per_class["no"]["ratings"] == 45


def test_specific_agreement_many_raters_counts_agreeing_pairs():
    # Unit 1: three raters all "x" (6 agreeing ordered pairs of 6); unit 2: "x","y","y" (x: 0 of 2; y: 2 of 4).
    per_class = specific_agreement([["x", "x", "x"], ["x", "y", "y"], ["z"]])
    assert per_class["x"]["agreement"] == pytest.approx(6 / 8)
    assert per_class["y"]["agreement"] == pytest.approx(2 / 4)
    assert "z" not in per_class  # a unit with one rater says nothing about agreement


def test_pairwise_kappa_uses_the_units_both_labeled():
    ratings = {"ann": {1: "a", 2: "b", 3: "a", 4: "b"}, "bob": {1: "a", 2: "b", 3: "b", 9: "a"}, "cy": {7: "a"}}
    pairs = {(p.a, p.b): p for p in pairwise_kappa(ratings)}
    assert set(pairs) == {("ann", "bob"), ("ann", "cy"), ("bob", "cy")}
    assert pairs[("ann", "bob")].shared == 3 and pairs[("ann", "bob")].observed == pytest.approx(2 / 3)
    assert pairs[("ann", "bob")].kappa == pytest.approx(cohen_kappa_score(["a", "b", "a"], ["a", "b", "b"]))
    assert pairs[("ann", "cy")].shared == 0 and pairs[("ann", "cy")].kappa is None


def test_consensus_is_the_adjudicated_label_else_a_strict_majority():
    assert consensus_label(["a", "a", "b"]) == "a"
    assert consensus_label(["a", "b"]) is None
    assert consensus_label(["a", "b"], final="b") == "b"
    ratings = {"ann": {1: "a", 2: "a", 3: "a", 4: "a"}, "bob": {1: "a", 2: "b", 3: "b", 5: "a"}, "cy": {2: "b"}}
    scores = {s.annotator: s for s in agreement_with_consensus(ratings, final={3: "b"})}
    # unit 1: a (both); unit 2: b (2 of 3); unit 3: adjudicated b; units 4, 5: one rater, not compared.
    assert (scores["ann"].agreed, scores["ann"].compared) == (1, 3)
    assert (scores["bob"].agreed, scores["bob"].compared) == (3, 3) and scores["bob"].agreement == 1.0
    assert (scores["cy"].agreed, scores["cy"].compared) == (1, 1)


def test_labels_per_hour_counts_looking_time_and_short_gaps_not_breaks_or_batches():
    # Three labels with durations of 10 s each: 3 labels in 30 s = 360 per hour.
    rate, hours = labels_per_hour([0, 100, 200], [10_000, 10_000, 10_000])
    assert rate == pytest.approx(360) and hours == pytest.approx(30 / 3600)
    # Without durations: the gaps count (20 s, 40 s: two labels in a minute); the first label's time is
    # unknown and a 2-hour gap is a break, so neither counts.
    rate, hours = labels_per_hour([0, 20, 60, 7260], [None, None, None, None])
    assert hours == pytest.approx(60 / 3600) and rate == pytest.approx(2 * 60)
    # 100 labels posted in one request say nothing about speed.
    assert labels_per_hour([5.0 + i * 1e-4 for i in range(100)], [None] * 100) == (None, 0.0)
    assert labels_per_hour([5], [None]) == (None, 0.0)
