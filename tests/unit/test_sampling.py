"""labeling.sampling.rank_pool: the ranking of the unlabeled pool for annotation."""
from collections import Counter

import numpy as np
import pytest

from labeling import sampling
from labeling.sampling import Recommendation, margin_uncertainty, rank_pool, softened_margin_uncertainty


def unit_rows(rng, n, dim=16):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_pool(seed=0, n=400, k=5, dim=16):
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(scale=2.0, size=(n, k))), unit_rows(rng, n, dim)


def test_margin_is_one_minus_gap_between_two_best():
    proba = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(margin_uncertainty(proba), [1.0, 0.15, 0.8])


def test_softening_undoes_a_sharpening_temperature():
    """Calibration sharpens a head by p -> p**(1/T) renormalised; margins on p**0.5 of a head sharpened with
    T = 0.5 are the margins of the unsharpened head, so the ranking does not depend on that calibration."""
    proba, _ = random_pool(seed=4, n=300, k=6)
    sharpened = proba**2 / (proba**2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softened_margin_uncertainty(sharpened, 0.5), margin_uncertainty(proba), atol=1e-9)
    np.testing.assert_allclose(softened_margin_uncertainty(proba, 1.0), margin_uncertainty(proba), atol=1e-12)
    # No underflow: a row whose runner-up is 1e-300 still gets a finite, small uncertainty.
    extreme = np.array([[1.0, 1e-300, 0.0]])
    assert np.isfinite(softened_margin_uncertainty(extreme)).all()


def test_only_the_most_uncertain_candidates_are_taken(monkeypatch):
    monkeypatch.setattr(sampling, "MAX_CANDIDATES", 2000)
    proba, vectors = random_pool(seed=1, n=5000, k=4)
    margin = softened_margin_uncertainty(proba)
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.full(4, 10), queue_size=20,
                     evaluation_share=0.0)
    # Coverage and diversity only reorder among the 2,000 most uncertain: the certain records never enter.
    threshold = np.sort(margin)[-2000]
    assert all(margin[r.row] >= threshold for r in recs)
    assert np.mean(margin[[r.row for r in recs]]) > np.quantile(margin, 0.8)


def test_a_record_amid_uncertain_records_beats_a_slightly_more_uncertain_one_amid_certain_records():
    """Expected gain counts the uncertainty a label covers. Region A: 30 similar records the model is unsure
    of. Region B: 30 similar records the model is sure of, except its most typical member, which is the most
    uncertain record in the pool. Plain margin (and margin x typicality) puts that record first; labeling it
    teaches the model about one record, labeling a record of region A about thirty."""
    rng = np.random.default_rng(6)
    dim = 32
    centre_a, centre_b = unit_rows(rng, 2, dim)
    region_a = centre_a + rng.normal(scale=0.1, size=(30, dim))
    region_b = centre_b + rng.normal(scale=0.1, size=(30, dim))
    background = unit_rows(rng, 500, dim)
    vectors = np.vstack([region_a, region_b, background]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    proba = np.tile([0.97, 0.01, 0.01, 0.01], (560, 1))
    proba[:30] = [0.45, 0.40, 0.10, 0.05]
    lone = 30 + int(np.argmax(vectors[30:60] @ centre_b))
    proba[lone] = [0.34, 0.33, 0.33, 0.0]
    assert softened_margin_uncertainty(proba).argmax() == lone
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.full(4, 20), queue_size=5,
                     evaluation_share=0.0)
    assert recs[0].row < 30
    # And the pick is typical of region A: nearer its mean than the average member is.
    mean = vectors[:30].mean(axis=0) / np.linalg.norm(vectors[:30].mean(axis=0))
    assert vectors[recs[0].row] @ mean > np.mean(vectors[:30] @ mean)


def test_scores_never_increase_down_the_queue_and_fields_are_consistent():
    proba, vectors = random_pool()
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([3, 0, 10, 1, 4]), queue_size=100)
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True)
    for r in recs:
        assert isinstance(r, Recommendation)
        assert r.predicted == int(proba[r.row].argmax())
        assert r.confidence == pytest.approx(proba[r.row].max())
        assert r.reason in {"uncertain", "diverse", "rare-class", "evaluation"}


def test_a_batch_does_not_take_many_near_duplicates():
    rng = np.random.default_rng(2)
    dim, k = 32, 4
    centres = unit_rows(rng, 10, dim)
    # 10 tight clusters of 50 near-duplicates, all maximally uncertain, plus 300 other records less so.
    duplicates = np.repeat(centres, 50, axis=0) + rng.normal(scale=0.01, size=(500, dim))
    others = unit_rows(rng, 300, dim)
    vectors = np.vstack([duplicates, others]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    proba = np.vstack([np.tile([0.49, 0.49, 0.01, 0.01], (500, 1)),
                       softmax(rng.normal(scale=1.0, size=(300, k)))])
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.full(k, 20), queue_size=50,
                     evaluation_share=0.0)
    per_cluster = Counter(r.row // 50 for r in recs if r.row < 500)
    assert max(per_cluster.values()) <= 2
    assert sum(per_cluster.values()) < 30  # a plain margin ranking would take 50 of the duplicates


def test_class_without_labels_gets_candidates_even_if_never_predicted_top():
    rng = np.random.default_rng(3)
    n, k = 300, 4
    logits = rng.normal(size=(n, k))
    logits[:, 3] -= 3.0  # class 3 is never the most likely class anywhere
    proba = softmax(logits)
    assert (proba.argmax(axis=1) != 3).all()
    recs = rank_pool(proba=proba, vectors=unit_rows(rng, n), labeled_counts=np.array([30, 30, 30, 0]),
                     queue_size=20, evaluation_share=0.0)
    rare = [r for r in recs if r.reason == "rare-class"]
    assert rare and rare[0].row == int(proba[:, 3].argmax())
    assert recs[0].row == int(proba[:, 3].argmax())  # a first example for the class goes to the top


def test_records_predicted_as_rare_classes_are_boosted():
    rng = np.random.default_rng(4)
    n, k = 2000, 2
    proba = softmax(rng.normal(size=(n, k)))
    vectors = unit_rows(rng, n)
    balanced = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([50, 50]), queue_size=200,
                         evaluation_share=0.0)
    skewed = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([200, 1]), queue_size=200,
                       evaluation_share=0.0)
    share_balanced = np.mean([r.predicted == 1 for r in balanced])
    share_skewed = np.mean([r.predicted == 1 for r in skewed])
    assert share_skewed > share_balanced + 0.1
    assert any(r.reason == "rare-class" for r in skewed)


def test_cold_start_covers_every_label_first():
    rng = np.random.default_rng(5)
    n, k = 1000, 12
    proba = softmax(rng.normal(scale=2.0, size=(n, k)))
    recs = rank_pool(proba=proba, vectors=unit_rows(rng, n), labeled_counts=np.zeros(k), queue_size=100,
                     evaluation_share=0.1)
    training_part = [r for r in recs if r.reason != "evaluation"]
    first = training_part[:k]
    assert len(set(proba.argmax(axis=1))) == k  # every label is predicted somewhere in this pool
    assert {r.predicted for r in first} == set(range(k))
    assert {r.reason for r in first} == {"rare-class"}
    # Then representatives of the pool's clusters.
    assert any(r.reason == "diverse" for r in training_part[k:])


def test_evaluation_share_is_requested_size_random_and_only_from_eligible_rows():
    proba, vectors = random_pool(n=2000)
    eligible = np.zeros(2000, dtype=bool)
    eligible[1000:] = True
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.full(5, 10), queue_size=200,
                     evaluation_share=0.1, eval_candidates=eligible)
    evaluation = [r for r in recs if r.reason == "evaluation"]
    assert len(evaluation) == 20
    assert all(r.row >= 1000 for r in evaluation)
    # Random, not the uncertain ones: their margins look like the pool's, not like the queue's top.
    pool_margin = margin_uncertainty(proba[1000:]).mean()
    eval_margin = margin_uncertainty(proba[[r.row for r in evaluation]]).mean()
    top_margin = np.sort(margin_uncertainty(proba))[-20:].mean()  # what 20 picks for uncertainty would look like
    assert abs(eval_margin - pool_margin) < abs(top_margin - pool_margin)
    # Spread through the queue, not all at the end.
    positions = [i for i, r in enumerate(recs) if r.reason == "evaluation"]
    assert positions[0] < 20 and positions[-1] > 180
    # A different seed draws different evaluation records.
    other = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.full(5, 10), queue_size=200,
                      evaluation_share=0.1, eval_candidates=eligible, seed=1)
    assert {r.row for r in other if r.reason == "evaluation"} != {r.row for r in evaluation}


def test_same_seed_same_queue():
    proba, vectors = random_pool(n=3000)
    a = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([1, 2, 0, 5, 9]), queue_size=300, seed=7)
    b = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([1, 2, 0, 5, 9]), queue_size=300, seed=7)
    assert a == b


@pytest.mark.parametrize("counts", [np.zeros(5), np.array([4, 4, 0, 4, 4])])
def test_no_row_twice_and_pool_smaller_than_queue(counts):
    proba, vectors = random_pool(n=60)
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=counts, queue_size=500)
    rows = [r.row for r in recs]
    assert len(rows) == len(set(rows)) == 60


def test_two_classes():
    proba, vectors = random_pool(n=500, k=2)
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([3, 8]), queue_size=50)
    assert len(recs) == 50 and len({r.row for r in recs}) == 50
    assert {r.predicted for r in recs} <= {0, 1}


def test_a_confident_pick_is_called_diverse_not_uncertain():
    # A small pool: the queue takes every record, sure ones included; only the unsure ones are "uncertain".
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    proba = np.full((60, 3), 0.0005, dtype=np.float64)
    proba[:, 0] = 0.999
    proba[:20] = [0.4, 0.35, 0.25]
    proba /= proba.sum(axis=1, keepdims=True)
    recs = rank_pool(proba=proba, vectors=vectors, labeled_counts=np.array([10, 10, 10]), queue_size=60,
                     evaluation_share=0.0, seed=0)
    reasons = {rec.row: rec.reason for rec in recs}
    assert {reasons[row] for row in range(20, 60) if row in reasons} <= {"diverse"}
    assert any(reasons.get(row) == "uncertain" for row in range(20))
