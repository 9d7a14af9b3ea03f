"""models_app.ml.fine_tuning: the fine-tuned head learns the domain's vocabulary, is calibrated and picklable."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models_app.ml.calibration import expected_calibration_error
from models_app.ml.fine_tuning import TooFewExamples, train_fine_tuned_head

# Made-up product names no sentence embedding has seen; the label depends only on which one a text names.
PRODUCTS = {"Router": ["Zyntrax", "Qorvel"], "Billing": ["Plumbix", "Vantrel"], "App": ["Kestrio", "Dromfy"]}
LABELS = ["Router", "Billing", "App"]  # deliberately not alphabetical: columns must follow this order
TEMPLATES = ["my {} is not working", "question about {} please", "{} again, help", "why does {} do this",
             "I need help with the {} thing", "the {} keeps failing today"]


def product_dataset(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(PRODUCTS[LABELS[c]][rng.integers(2)]) for c in y]
    # Vectors carry no information about the label, as a generic embedding of unknown names would.
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors, y


def gaussian_dataset(n, seed, k=4, noise=1.0):
    """Overlapping classes in 8 of the 384 dimensions: about 85% accuracy is possible, so confidence matters."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(k, 8))
    y = rng.integers(0, k, n)
    vectors = np.zeros((n, 384), dtype=np.float32)
    vectors[:, :8] = centers[y] + rng.normal(size=(n, 8)) * noise
    vectors[:, 8:] = rng.normal(size=(n, 376)) * 0.05
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = ["plain message"] * n  # no vocabulary signal: the embedding alone decides
    return [f"L{i}" for i in range(k)], texts, vectors, y


def test_learns_vocabulary_the_embedding_does_not_know():
    texts, vectors, y = product_dataset(300, seed=0)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    test_texts, test_vectors, test_y = product_dataset(200, seed=1)
    proba = head.predict_proba(test_vectors, test_texts)
    assert proba.shape == (200, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba.argmax(axis=1) == test_y).mean() > 0.95
    vectors_only = LogisticRegression(C=10).fit(vectors, y)
    assert (vectors_only.predict(test_vectors) == test_y).mean() < 0.5  # what the vectors alone manage


def test_columns_follow_the_label_order():
    texts, vectors, y = product_dataset(120, seed=2)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    assert head.labels == LABELS
    proba = head.predict_proba(np.zeros((3, 384), dtype=np.float32), ["Plumbix bill", "Zyntrax down", "Kestrio crashes"])
    assert list(proba.argmax(axis=1)) == [1, 0, 2]


def test_calibrated_on_held_out_data():
    labels, texts, vectors, y = gaussian_dataset(1200, seed=0)
    head = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y)
    calibration = head.details["calibration"]
    assert calibration["ece_after"] < calibration["ece_before"]
    _, test_texts, test_vectors, test_y = gaussian_dataset(3000, seed=5)
    proba = head.predict_proba(test_vectors, test_texts)
    accuracy = (proba.argmax(axis=1) == test_y).mean()
    assert 0.7 < accuracy < 0.95  # a task with real uncertainty, so calibration matters
    assert expected_calibration_error(test_y, proba) < 0.05
    raw = np.exp(head.decision_scores(test_vectors, test_texts))
    assert expected_calibration_error(test_y, raw / raw.sum(axis=1, keepdims=True)) > expected_calibration_error(test_y, proba)


def test_out_of_fold_probabilities_cover_every_training_record():
    texts, vectors, y = product_dataset(150, seed=3)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    assert head.out_of_fold_proba.shape == (150, 3)
    assert (head.out_of_fold_proba.argmax(axis=1) == y).mean() > 0.9
    assert head.details["calibration"]["cross_validated_accuracy"] > 0.9


def test_pickle_round_trip_predicts_the_same_and_drops_training_leftovers():
    texts, vectors, y = product_dataset(150, seed=4)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    restored = pickle.loads(pickle.dumps(head))
    np.testing.assert_array_equal(restored.predict_proba(vectors, texts), head.predict_proba(vectors, texts))
    assert restored.out_of_fold_proba is None
    assert restored.details == head.details


def test_same_seed_same_model():
    texts, vectors, y = product_dataset(150, seed=6)
    first = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, seed=3)
    second = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, seed=3)
    np.testing.assert_array_equal(first.predict_proba(vectors, texts), second.predict_proba(vectors, texts))


def test_two_labels():
    texts, vectors, y = product_dataset(200, seed=7)
    keep = y < 2
    texts = [t for t, k in zip(texts, keep) if k]
    head = train_fine_tuned_head(labels=LABELS[:2], texts=texts, vectors=vectors[keep], y=y[keep])
    proba = head.predict_proba(np.zeros((2, 384), dtype=np.float32), ["Qorvel again", "Vantrel invoice"])
    assert list(proba.argmax(axis=1)) == [0, 1]
    assert proba.max(axis=1).min() > 0.5


def test_too_few_examples_names_the_labels():
    texts, vectors, y = product_dataset(60, seed=8)
    y = np.where(y == 2, 0, y)
    y[0] = 2  # "App": one example
    labels = LABELS + ["Shipping"]  # no example at all
    with pytest.raises(TooFewExamples) as error:
        train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y)
    assert error.value.short_classes == {"App": 1, "Shipping": 0}
    assert "'App' (1)" in str(error.value) and "'Shipping' (0)" in str(error.value)


def test_texts_are_required_at_prediction():
    texts, vectors, y = product_dataset(60, seed=9)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    with pytest.raises(ValueError, match="texts"):
        head.predict_proba(vectors)


def test_mismatched_inputs_are_refused():
    texts, vectors, y = product_dataset(60, seed=10)
    with pytest.raises(ValueError, match="must match"):
        train_fine_tuned_head(labels=LABELS, texts=texts[:-1], vectors=vectors, y=y)


def test_progress_reaches_one():
    texts, vectors, y = product_dataset(90, seed=11)
    seen = []
    train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


def test_fast_scoring_equals_the_scikit_learn_features_times_the_coefficients():
    texts, vectors, y = product_dataset(300, seed=12)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    new_texts = ["Zyntrax Zyntrax router down", "unknown words only xq", "", "Plumbix   invoice, Plumbix!"] * 100
    new_vectors = np.tile(vectors[:4], (100, 1))
    expected = (new_vectors @ head.embedding_coef
                + head.word_vectorizer.transform(new_texts) @ head.word_coef
                + head.char_vectorizer.transform(new_texts) @ head.char_coef + head.intercept)
    np.testing.assert_allclose(head.decision_scores(new_vectors, new_texts), expected, rtol=1e-4, atol=1e-5)


def test_two_examples_per_label_are_enough():
    texts = ["Zyntrax broke", "Zyntrax down", "Plumbix bill", "Plumbix invoice", "Kestrio crash", "Kestrio freezes"]
    vectors = np.random.default_rng(0).normal(size=(6, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=np.array([0, 0, 1, 1, 2, 2]))
    uninformative = np.zeros((3, 384), dtype=np.float32)
    proba = head.predict_proba(uninformative, ["Zyntrax again", "Plumbix charge", "Kestrio help"])
    assert list(proba.argmax(axis=1)) == [0, 1, 2]


class _CentroidPrior:
    """A stand-in for the describe-and-classify head: softmax over cosine to label vectors."""

    def __init__(self, labels, label_vectors, temperature=0.05):
        self.labels, self.label_vectors, self.temperature = list(labels), label_vectors, temperature

    def predict_proba(self, vectors, texts=None):
        logits = vectors @ self.label_vectors.T / self.temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _described_dataset(n, seed, k=6):
    """Classes the vectors separate, with a prior that knows them roughly, and texts with no vocabulary signal."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(k, 384))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.tile(np.arange(k), n // k + 1)[:n]
    vectors = centres[y] + rng.normal(size=(n, 384)) * 0.2  # the noise is 4x the signal: few labels teach little
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rough = centres + np.random.default_rng(8).normal(size=centres.shape) * 0.08
    labels = [f"L{i}" for i in range(k)]
    return labels, ["same words"] * n, vectors, y, _CentroidPrior(labels, rough / np.linalg.norm(rough, axis=1, keepdims=True))


def test_with_few_labels_the_anchored_expert_carries_what_the_prior_knows():
    """Two labels per class cannot teach an SVM much; the anchored expert keeps the prior's knowledge, and the
    out-of-fold choice gives it weight. Without a prior the same head is the SVM (or a plain vector model)."""
    labels, texts, vectors, y, prior = _described_dataset(12, seed=0)
    _, test_texts, test_vectors, test_y, _ = _described_dataset(600, seed=1)
    with_prior = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y, prior_head=prior)
    alone = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y)
    accuracy = {name: float((head.predict_proba(test_vectors, test_texts).argmax(axis=1) == test_y).mean())
                for name, head in (("with_prior", with_prior), ("alone", alone))}
    prior_accuracy = float((prior.predict_proba(test_vectors).argmax(axis=1) == test_y).mean())
    assert with_prior.expert_weight > 0 and with_prior.details["vector_expert"]["prior"] == "_CentroidPrior"
    assert accuracy["with_prior"] >= prior_accuracy - 0.01
    assert accuracy["with_prior"] > accuracy["alone"] + 0.1  # measured: 0.89 against 0.66 (prior alone 0.87)
    restored = pickle.loads(pickle.dumps(with_prior))
    np.testing.assert_allclose(restored.predict_proba(test_vectors, test_texts),
                               with_prior.predict_proba(test_vectors, test_texts))
    with pytest.raises(ValueError):
        train_fine_tuned_head(labels=labels[::-1], texts=texts, vectors=vectors, y=y, prior_head=prior)


def test_heads_pickled_before_the_vector_expert_predict_with_the_svm_alone():
    """A head pickled before the vector expert (and before the text stage) has none of their fields."""
    texts, vectors, y = product_dataset(150, seed=5)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    state = head.__getstate__()
    for name in ("vector_expert", "expert_temperature", "expert_weight", "combined_temperature", "text_word_coef",
                 "text_char_coef", "text_intercept", "text_temperature", "text_stage_threshold", "_joint_coef"):
        state.pop(name)
    old = object.__new__(type(head))
    old.__dict__.update(state)
    test_texts, test_vectors, _ = product_dataset(20, seed=6)
    expected = np.exp(head.decision_scores(test_vectors, test_texts) / head.temperature)
    np.testing.assert_allclose(old.predict_proba(test_vectors, test_texts), expected / expected.sum(axis=1, keepdims=True))


def test_ngram_scoring_equals_the_vectorizers_own_product():
    """The inference path counts n-grams itself (per word, cached, for character n-grams): it must give exactly
    what scikit-learn's transform followed by the product gives, whatever the spacing, case or script."""
    import csv
    from pathlib import Path

    from sklearn.feature_extraction.text import TfidfVectorizer

    from models_app.ml.fine_tuning import NgramColumns, _tfidf_scores

    training = ["My card has not arrived yet", "Why was I charged a fee?", "exchange rate for EUR to GBP",
                "top-up failed again!!", "Où est ma carte ?", "カードが届きません", "pin blocked", "a b c"] * 3
    odd = ["", "   ", "x", "CARD   arrived\tyet\n", "İstanbul ﬁne straße", "no known words at all: qqq zzz",
           "fee fee fee fee", "a", "Top-Up  FAILED", "ÉCHANGE rate €"]
    banking77 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "banking77" / "test.csv"
    if banking77.exists():
        with open(banking77, newline="", encoding="utf-8") as handle:
            odd += [row["text"] for row in csv.DictReader(handle)][:400]
    rng = np.random.default_rng(0)
    for vectorizer in (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32)):
        vectorizer.fit(training + odd[:40])
        coef = rng.normal(size=(len(vectorizer.vocabulary_), 5)).astype(np.float32)
        columns = NgramColumns(vectorizer)
        assert columns.per_word == (vectorizer.analyzer == "char_wb")
        for start in range(0, len(odd), 8):
            batch = odd[start:start + 8]
            expected = (vectorizer.transform(batch) @ coef).astype(np.float64)
            np.testing.assert_allclose(_tfidf_scores(batch, columns, vectorizer, coef), expected, rtol=1e-4, atol=1e-5)
        # A second pass reads the cached words and must not change anything.
        np.testing.assert_allclose(_tfidf_scores(odd[:8], columns, vectorizer, coef),
                                   (vectorizer.transform(odd[:8]) @ coef), rtol=1e-4, atol=1e-5)


def _counting_embed(vectors_by_text: dict):
    """An embed function over known texts that records every text it was asked for."""
    asked: list[str] = []

    def embed(texts):
        asked.extend(texts)
        return np.stack([vectors_by_text[text] for text in texts]) if texts else np.zeros((0, 384), np.float32)

    return embed, asked


def test_text_stage_answers_texts_with_telling_words_without_embedding_them():
    """Product names decide the label: the n-grams alone are sure of these texts, so inference never embeds
    them, and the answer is exactly what predict_proba gives with their vectors."""
    texts, vectors, y = product_dataset(600, seed=11)
    head = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    stage = head.details["text_stage"]
    assert head.text_stage_threshold is not None and stage["threshold"] == head.text_stage_threshold
    chosen = next(row for row in stage["out_of_fold_by_threshold"] if row["threshold"] == head.text_stage_threshold)
    assert chosen["text_stage_correct"] >= chosen["full_head_correct"] and chosen["coverage"] > 0.5

    test_texts, test_vectors, test_y = product_dataset(40, seed=12)
    test_texts = test_texts + ["a message that names no product at all"]
    test_vectors = np.vstack([test_vectors, test_vectors[:1]])
    embed, asked = _counting_embed(dict(zip(test_texts, test_vectors)))
    from_texts = head.predict_proba_from_texts(test_texts, embed)
    np.testing.assert_allclose(from_texts, head.predict_proba(test_vectors, test_texts), rtol=1e-6, atol=1e-12)
    assert (from_texts[:40].argmax(axis=1) == test_y).mean() > 0.95
    assert 0 < len(asked) < len(test_texts) / 2  # most texts answered from their words alone
    assert "a message that names no product at all" in asked  # nothing to go on: the vector decides

    from models_app.ml.artifacts import predict_texts
    embed, asked_again = _counting_embed(dict(zip(test_texts, test_vectors)))
    np.testing.assert_allclose(predict_texts(head, test_texts, embed), from_texts)
    assert asked_again == asked
    restored = pickle.loads(pickle.dumps(head))
    np.testing.assert_allclose(restored.predict_proba(test_vectors, test_texts), from_texts)


def test_text_stage_is_off_when_the_words_say_nothing():
    """Every text is the same words: the text stage is never right more often than the vectors, so no
    threshold qualifies, and every text is embedded."""
    labels, texts, vectors, y = gaussian_dataset(600, seed=3)
    head = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y)
    assert head.text_stage_threshold is None and head.details["text_stage"]["threshold"] is None
    assert head.text_word_coef is None  # an unused stage is not kept: inference would score it for nothing
    embed, asked = _counting_embed({"plain message": vectors[0]})
    head.predict_proba_from_texts(["plain message"] * 5, embed)
    assert len(asked) == 5


def test_text_stage_threshold_needs_evidence_at_every_stricter_threshold():
    from models_app.ml.fine_tuning import TEXT_STAGE_MIN_COVERED, _choose_text_stage_threshold

    n = 400
    y = np.zeros(n, dtype=int)
    full = np.tile([0.9, 0.1], (n, 1))  # the full head is always right
    stage = np.tile([0.45, 0.55], (n, 1))  # unsure and wrong...
    stage[:200] = [0.995, 0.005]  # ...except sure and right on half
    threshold, evidence = _choose_text_stage_threshold(stage, stage.max(axis=1), full, y)
    assert threshold == 0.6 and evidence[0]["coverage"] == 0.5  # 0.5 would let it answer the rest, wrongly
    stage[:5] = [0.005, 0.995]  # five sure mistakes among the most confident: the full head beats it there
    threshold, _ = _choose_text_stage_threshold(stage, stage.max(axis=1), full, y)
    assert threshold is None
    few = np.tile([0.55, 0.45], (n, 1))
    few[:TEXT_STAGE_MIN_COVERED - 1] = [0.995, 0.005]  # too few records at any strict threshold to say anything
    assert _choose_text_stage_threshold(few, few.max(axis=1), full, y)[0] == 0.5  # until 0.5 covers everyone, all of them right


# --- self-training on the unlabeled pool -----------------------------------------------------------------------

# Each class has a known name (in the labeled texts) and a second name that only the unlabeled pool shows, always
# beside the known one. Vectors carry nothing, so only the pool can teach the second names.
KNOWN_NAMES = {"Router": "Zyntrax", "Billing": "Plumbix", "App": "Kestrio"}
POOL_ONLY_NAMES = {"Router": "Qorvel", "Billing": "Vantrel", "App": "Dromfy"}


def _named_texts(n, seed, names_of):
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(3), n // 3 + 1)[:n]
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(names_of(LABELS[c])) for c in y]
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    return texts, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), y


def test_self_training_learns_words_only_the_unlabeled_pool_shows():
    texts, vectors, y = _named_texts(60, 0, lambda label: KNOWN_NAMES[label])
    pool_texts, pool_vectors, _ = _named_texts(300, 1, lambda label: f"{KNOWN_NAMES[label]} and {POOL_ONLY_NAMES[label]}")
    test_texts, test_vectors, test_y = _named_texts(90, 2, lambda label: POOL_ONLY_NAMES[label])
    plain = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    self_trained = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y,
                                         pool_texts=pool_texts, pool_vectors=pool_vectors)
    accuracy = {name: float((head.predict_proba(test_vectors, test_texts).argmax(axis=1) == test_y).mean())
                for name, head in (("plain", plain), ("self_trained", self_trained))}
    assert accuracy["plain"] < 0.6  # the second names are unknown words without the pool
    assert accuracy["self_trained"] > 0.95
    details = self_trained.details["self_training"]
    assert details["pool"] == 300 and details["pseudo_labels"] > 250 and details["kept"]
    assert len(details["pseudo_labels_per_fold"]) == 5 and min(details["pseudo_labels_per_fold"]) > 250
    assert plain.details["self_training"] is None


def test_self_training_keeps_the_calibration_honest():
    """The pseudo-labels each calibration fold trains on come from a model that never saw that fold's held-out
    labels, so the temperature is fitted on honest scores: confidence on new data still means what it says."""
    labels, texts, vectors, y = gaussian_dataset(400, seed=0)
    _, pool_texts, pool_vectors, _ = gaussian_dataset(2000, seed=3)
    head = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y, pool_texts=pool_texts,
                                 pool_vectors=pool_vectors)
    assert head.details["self_training"]["pseudo_labels"] > 100
    _, test_texts, test_vectors, test_y = gaussian_dataset(3000, seed=5)
    proba = head.predict_proba(test_vectors, test_texts)
    assert expected_calibration_error(test_y, proba) < 0.05


def test_copies_of_held_out_records_in_the_pool_do_not_inflate_the_out_of_fold_accuracy():
    """The pool holds a copy of every labeled text. Half the texts name no product and carry a random label, and
    every text has a unique token, so a model that saw a record's label can recall it from the copy. Were the
    pseudo-labels made by a model that saw every label, each fold would train on its held-out records' labels
    and the out-of-fold accuracy would rise above what the names allow (measured with such a leaky variant:
    1.00 against 0.67 without a pool; per-fold pseudo-labels: 0.65)."""
    rng = np.random.default_rng(2)
    texts, vectors, y = product_dataset(300, seed=13)
    nameless = rng.random(300) < 0.5
    y = np.where(nameless, rng.integers(0, 3, 300), y)
    texts = [f"ticket ref{i:04d}x" if no_name else f"{text} ref{i:04d}x"
             for i, (text, no_name) in enumerate(zip(texts, nameless))]
    plain = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    self_trained = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y,
                                         pool_texts=list(texts), pool_vectors=vectors.copy())
    assert self_trained.details["self_training"]["pseudo_labels"] > 100
    assert self_trained.details["self_training"]["kept"]  # the second pass is what is being checked
    plain_accuracy = plain.details["calibration"]["cross_validated_accuracy"]
    assert self_trained.details["calibration"]["cross_validated_accuracy"] <= plain_accuracy + 0.02


def test_no_self_training_from_a_large_label_set_or_an_empty_pool(monkeypatch):
    from models_app.ml import fine_tuning

    texts, vectors, y = product_dataset(90, seed=14)
    empty = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, pool_texts=[],
                                  pool_vectors=np.zeros((0, 384), np.float32))
    assert empty.details["self_training"] is None
    monkeypatch.setattr(fine_tuning, "SELF_TRAINING_MAX_LABELS", 90)
    large = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, pool_texts=texts,
                                  pool_vectors=vectors)
    assert large.details["self_training"] is None


def test_pool_vectors_must_match_the_pool_texts():
    texts, vectors, y = product_dataset(60, seed=15)
    with pytest.raises(ValueError, match="pool"):
        train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, pool_texts=texts[:10],
                              pool_vectors=vectors[:9])


def test_self_training_that_lowers_the_out_of_fold_accuracy_is_dropped(monkeypatch):
    """The guard: when the second pass scores significantly worse out of fold than the first (here: forced), the
    pseudo-labels are dropped and the head is exactly the one trained without a pool."""
    from models_app.ml import fine_tuning

    texts, vectors, y = _named_texts(60, 0, lambda label: KNOWN_NAMES[label])
    pool_texts, pool_vectors, _ = _named_texts(150, 1, lambda label: f"{KNOWN_NAMES[label]} and {POOL_ONLY_NAMES[label]}")
    monkeypatch.setattr(fine_tuning, "_self_training_hurts", lambda first, second: (True, [9, 0]))
    dropped = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y, pool_texts=pool_texts,
                                    pool_vectors=pool_vectors)
    plain = train_fine_tuned_head(labels=LABELS, texts=texts, vectors=vectors, y=y)
    assert dropped.details["self_training"]["kept"] is False
    probe_texts, probe_vectors, _ = _named_texts(30, 2, lambda label: POOL_ONLY_NAMES[label])
    np.testing.assert_array_equal(dropped.predict_proba(probe_vectors, probe_texts),
                                  plain.predict_proba(probe_vectors, probe_texts))
    np.testing.assert_array_equal(dropped.out_of_fold_proba, plain.out_of_fold_proba)


def test_self_training_is_dropped_only_when_significantly_worse_out_of_fold():
    from models_app.ml.fine_tuning import _self_training_hurts

    def passes(n, worse, better):
        first, second = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
        second[:worse] = False
        first[worse:worse + better] = False
        return first, second

    # 1,000 records: 60 turned wrong, 30 turned right (3 points worse): clearly worse, dropped.
    assert _self_training_hurts(*passes(1000, 60, 30)) == (True, [60, 30])
    # 50 against 40 (1 point worse): within the noise of two passes that differ on 90 records, kept.
    assert _self_training_hurts(*passes(1000, 50, 40)) == (False, [50, 40])
    # Better: kept, however large the difference.
    assert _self_training_hurts(*passes(1000, 10, 60)) == (False, [10, 60])
