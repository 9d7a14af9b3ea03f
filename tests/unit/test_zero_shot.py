import pickle

import numpy as np

from models_app.ml.zero_shot import build_zero_shot_head, label_phrase


def fake_embed(texts):
    """Deterministic bag-of-words hashing embedding: shared words give similar vectors."""
    vectors = np.zeros((len(texts), 32), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            vectors[row, sum(map(ord, word)) % 32] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def test_label_phrase_normalises_identifiers():
    assert label_phrase("card_arrival") == "card arrival"
    assert label_phrase("BillingIssue") == "billing issue"


def test_probabilities_sum_to_one_and_keep_label_order():
    labels = ["refund", "delivery", "password_reset"]
    head = build_zero_shot_head(labels=labels, descriptions={}, embed=fake_embed)
    probabilities = head.predict_proba(fake_embed(["refund please", "password reset now"]))
    assert head.labels == labels
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert list(probabilities.argmax(axis=1)) == [0, 2]


def test_pickle_round_trip_gives_identical_output():
    head = build_zero_shot_head(labels=["a_b", "c"], descriptions={"c": "cats"}, embed=fake_embed)
    vectors = fake_embed(["cats and dogs", "a b"])
    clone = pickle.loads(pickle.dumps(head))
    np.testing.assert_array_equal(clone.predict_proba(vectors), head.predict_proba(vectors))
