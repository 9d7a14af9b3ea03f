import json
import pickle
import zlib

import numpy as np
import pytest

from models_app.ml import zero_shot
from models_app.ml.zero_shot import build_zero_shot_head, label_phrase

DIM = 32
HASH_DIM = 256


def unit(vectors):
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def hashing_embed(texts):
    """Deterministic bag-of-words embedding: texts sharing words get similar vectors."""
    vectors = np.zeros((len(texts), HASH_DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().replace("_", " ").split():
            vectors[row, zlib.crc32(word.encode()) % HASH_DIM] += 1.0
        vectors[row, HASH_DIM - 1] += 0.01  # keeps an empty text from being the zero vector
    return unit(vectors)


class KeywordEmbed:
    """Maps any text mentioning a keyword to that keyword's fixed vector, and records what it was asked."""

    def __init__(self, vectors_by_keyword):
        self.vectors_by_keyword = vectors_by_keyword
        self.calls = []

    def __call__(self, texts):
        self.calls.extend(texts)
        rows = []
        for text in texts:
            matches = [vector for keyword, vector in self.vectors_by_keyword.items() if keyword in text]
            assert matches, f"no keyword in {text!r}"
            rows.append(matches[0])
        return unit(rows)


def clustered_problem(*, seed=0, per_class=200, test_per_class=0):
    """Five clusters in DIM dimensions; each label's description vector sits 0.9 of the way towards the
    next cluster's centre, so descriptions alone misclassify about a third of the points."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(5, DIM)))
    descriptions = unit(centres + 0.9 * np.roll(centres, -1, axis=0))

    def sample(count):
        y = np.repeat(np.arange(5), count)
        return unit(centres[y] + rng.normal(size=(len(y), DIM)) / np.sqrt(DIM)), y

    labels = ["alpha", "beta", "gamma", "delta", "epsilon"]
    points, y = sample(per_class)
    return labels, KeywordEmbed(dict(zip(labels, descriptions))), points, y, sample(test_per_class)


@pytest.mark.parametrize("name, phrase", [
    ("card_arrival", "card arrival"),
    ("BillingIssue", "billing issue"),
    ("APIKeyReset", "api key reset"),
    ("reverted_card_payment?", "reverted card payment"),
    ("top-up  limits", "top up limits"),
    ("refund", "refund"),
])
def test_label_phrase_turns_identifiers_into_words(name, phrase):
    assert label_phrase(name) == phrase


def test_probabilities_are_rows_summing_to_one_in_label_order():
    labels = ["refund", "delivery", "password_reset"]
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=hashing_embed)
    probabilities = head.predict_proba(hashing_embed(["refund please", "password reset now", "delivery late"]))
    assert head.labels == labels
    assert probabilities.shape == (3, 3)
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert list(probabilities.argmax(axis=1)) == [0, 2, 1]


def test_no_texts_gives_an_empty_matrix_with_one_column_per_label():
    head = build_zero_shot_head(labels=["a", "b"], descriptions={}, embed=hashing_embed)
    assert head.predict_proba(np.zeros((0, HASH_DIM), dtype=np.float32)).shape == (0, 2)


def test_building_twice_gives_identical_heads_and_outputs():
    labels, embed, points, _, _ = clustered_problem()
    first = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points, seed=3)
    second = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points, seed=3)
    np.testing.assert_array_equal(first.predict_proba(points), second.predict_proba(points))
    np.testing.assert_array_equal(first.predict_proba(points), first.predict_proba(points))
    assert first.details == second.details


def test_a_description_is_embedded_and_an_empty_one_falls_back_to_the_label_name():
    embed = KeywordEmbed({"alpha": np.eye(DIM)[0], "beta": np.eye(DIM)[1], "custom": np.eye(DIM)[2]})
    with_empty = build_zero_shot_head(labels=["alpha", "beta"], descriptions={"alpha": "   ", "beta": ""}, embed=embed)
    without = build_zero_shot_head(labels=["alpha", "beta"], descriptions={}, embed=embed)
    np.testing.assert_array_equal(with_empty.label_vectors, without.label_vectors)
    assert not any(text.strip() == "" for text in embed.calls)

    described = build_zero_shot_head(labels=["alpha", "beta"], descriptions={"beta": "a custom text"}, embed=embed)
    assert "a custom text" in embed.calls
    assert described.label_vectors[1] @ np.eye(DIM)[2] > 0.5  # the description moved beta towards its own text
    np.testing.assert_array_equal(described.label_vectors[0], without.label_vectors[0])
    assert described.details["labels_with_description"] == 1


@pytest.mark.parametrize("pool_rows", [0, 1, 3])
def test_pools_empty_or_smaller_than_the_label_set_still_give_a_working_head(pool_rows):
    labels, embed, points, _, _ = clustered_problem()
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points[:pool_rows])
    probabilities = head.predict_proba(points)
    assert probabilities.shape == (len(points), 5)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert head.details["pool_size"] == pool_rows
    assert head.details["refinement_rounds"] == (0 if pool_rows == 0 else zero_shot.REFINEMENT_ROUNDS)


def test_a_label_no_pool_point_chooses_keeps_its_description_vector():
    labels, embed, points, y, _ = clustered_problem()
    far_away = unit(-points.mean(axis=0))  # opposite to every pool point
    embed.vectors_by_keyword["omega"] = far_away
    head = build_zero_shot_head(labels=labels + ["omega"], descriptions={}, embed=embed, pool_vectors=points)
    assert head.details["pool_points_per_label"][-1] == 0
    np.testing.assert_allclose(head.label_vectors[-1], far_away, atol=1e-6)
    assert not np.allclose(head.label_vectors[0], embed.vectors_by_keyword["alpha"], atol=1e-3)  # the others did move


def test_pool_refinement_recovers_clusters_the_descriptions_only_point_near():
    labels, embed, points, _, (test_points, test_y) = clustered_problem(test_per_class=100)
    described_only = build_zero_shot_head(labels=labels, descriptions={}, embed=embed)
    refined = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points)
    before = np.mean(described_only.predict_proba(test_points).argmax(axis=1) == test_y)
    after = np.mean(refined.predict_proba(test_points).argmax(axis=1) == test_y)
    assert before < 0.8
    assert after > 0.95


def test_a_pool_larger_than_the_cap_is_subsampled_reproducibly(monkeypatch):
    monkeypatch.setattr(zero_shot, "MAX_POOL", 100)
    labels, embed, points, _, _ = clustered_problem()
    first = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points, seed=1)
    again = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points, seed=1)
    assert first.details["pool_size"] == 100
    np.testing.assert_array_equal(first.label_vectors, again.label_vectors)


def test_pickle_round_trip_gives_identical_output():
    labels, embed, points, _, _ = clustered_problem()
    head = build_zero_shot_head(labels=labels, descriptions={"beta": "beta things"}, embed=embed, pool_vectors=points)
    clone = pickle.loads(pickle.dumps(head))
    assert clone.labels == head.labels
    np.testing.assert_array_equal(clone.predict_proba(points), head.predict_proba(points))


def test_details_are_json_serialisable_and_say_what_was_used():
    labels, embed, points, _, _ = clustered_problem()
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points)
    details = json.loads(json.dumps(head.details))
    assert details["pool_size"] == len(points)
    assert details["temperature"] == head.temperature
    assert sum(details["pool_points_per_label"]) == len(points)
    assert details["label_phrases"] == labels


def test_vectors_of_the_wrong_width_are_refused_not_reshaped():
    labels, embed, points, _, _ = clustered_problem()
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=embed)
    with pytest.raises(ValueError):
        head.predict_proba(np.concatenate([points, points], axis=1))  # 2 x DIM wide: would reshape into twice the rows
    with pytest.raises(ValueError):
        build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points[:, : DIM // 2])
    np.testing.assert_array_equal(head.predict_proba(points[0]), head.predict_proba(points[:1]))


def test_labels_must_be_present_and_unique():
    with pytest.raises(ValueError):
        build_zero_shot_head(labels=[], descriptions={}, embed=hashing_embed)
    with pytest.raises(ValueError):
        build_zero_shot_head(labels=["a", "a"], descriptions={}, embed=hashing_embed)


def test_neighbour_graph_is_symmetric_without_self_loops_and_links_each_point_to_its_nearest():
    rng = np.random.default_rng(0)
    points = unit(rng.normal(size=(60, DIM)))
    graph = zero_shot.neighbour_graph(points, k=3, block=16).toarray()
    np.testing.assert_allclose(graph, graph.T, atol=1e-6)
    assert np.all(np.diag(graph) == 0)
    similarities = points @ points.T
    np.fill_diagonal(similarities, -np.inf)
    nearest = similarities.argmax(axis=1)
    assert all(graph[i, nearest[i]] > 0 for i in range(len(points)))
    assert ((graph > 0).sum(axis=1) >= 3).all()


def test_the_graph_is_built_on_a_capped_sample_of_a_large_pool(monkeypatch):
    monkeypatch.setattr(zero_shot, "GRAPH_MAX_ROWS", 300)
    labels, embed, points, _, (test_points, test_y) = clustered_problem(test_per_class=50)
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=points, seed=2)
    assert head.details["pool_size"] == len(points)
    assert head.details["spreading"]["graph_rows"] == 300
    assert np.mean(head.predict_proba(test_points).argmax(axis=1) == test_y) > 0.95
