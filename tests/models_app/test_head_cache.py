"""The per-process cache of model heads: bounded per model, keyed so a reused id never serves another head."""
from __future__ import annotations

import pytest

from models_app import inference
from models_app.ml.zero_shot import build_zero_shot_head
from models_app.models import ClassificationModel, ModelType
from models_app.services import version_create
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)


def _new_version(model: ClassificationModel, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    label_vectors = rng.normal(size=(len(model.labels), 384)).astype(np.float32)
    label_vectors /= np.linalg.norm(label_vectors, axis=1, keepdims=True)
    head = build_zero_shot_head(labels=list(model.labels), descriptions={}, embed=lambda texts: label_vectors[:len(texts)],
                                pool_vectors=None, seed=0)
    return version_create(model=model, head=head, type=ModelType.DESCRIBE_AND_CLASSIFY, training_examples=0)


@pytest.mark.django_db
def test_a_retrained_model_keeps_only_its_two_latest_heads(workspace):
    model, _ = random_setup(workspace, n=30)
    other, _ = random_setup(workspace, n=30, seed=1)
    inference.clear_cache()
    other_head = inference.head_for_version(other.versions.get())
    versions = [model.versions.get()] + [_new_version(model, seed) for seed in range(4)]
    for version in versions:
        inference.head_for_version(version)
    cached = inference.cached_version_ids()
    # The other model's head stays; of this model only the two most recently used versions remain.
    assert cached == [other.versions.get().id, versions[-2].id, versions[-1].id]
    assert inference.head_for_version(other.versions.get()) is other_head


@pytest.mark.django_db
def test_a_reused_version_id_with_another_artifact_is_not_served_from_the_cache(workspace):
    model, _ = random_setup(workspace, n=30)
    version = model.versions.get()
    first = inference.head_for_version(version)
    replacement = _new_version(model, seed=7)
    # As after a rollback or a restore: the same id now names a version with another artifact.
    replacement.id = version.id
    assert inference.head_for_version(replacement) is not first
