"""The evaluation page's "Trained on ..." sentence, from a version's stored details."""
from __future__ import annotations

from models_app.evaluation_selectors import trained_on
from models_app.models import ModelVersion


def version(details, training_examples=120):
    return ModelVersion(training_examples=training_examples, details=details)


def test_a_describe_and_classify_version_says_nothing():
    assert trained_on(version({}, training_examples=0)) is None


def test_labels_alone_and_self_training_kept_or_dropped():
    assert trained_on(version({"training": {}, "head": {"self_training": None}})) == "120 training labels"
    kept = {"pool": 900, "pseudo_labels": 640, "confidence": 0.7, "kept": True}
    assert trained_on(version({"training": {}, "head": {"self_training": kept}})) == (
        "120 training labels, plus 640 of 900 sampled unlabeled records that a first model trained on those labels "
        "gave at least 70% confidence (self-training)")
    dropped = {**kept, "kept": False}
    sentence = trained_on(version({"training": {}, "head": {"self_training": dropped}}))
    assert sentence.startswith("120 training labels only: self-training on 900 sampled unlabeled records was tried "
                               "and dropped")
