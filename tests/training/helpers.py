"""Building a labeled-or-not dataset with stored vectors and a describe-and-classify model, for the
queue and training tests (fast: no import job, no embedder unless the caller embeds)."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from labeling.embeddings import vectors_write_chunk
from labeling.models import Dataset, DatasetStatus, Record
from models_app.ml.zero_shot import ZeroShotHead
from models_app.models import ClassificationModel, ModelStatus, ModelType
from models_app.services import version_create


def normalised(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def make_dataset(workspace, *, texts: list[str], vectors: np.ndarray, name: str = "messages",
                 splits: list[str] | None = None, labels: list[str | None] | None = None) -> Dataset:
    dataset = Dataset.objects.create(workspace=workspace, name=name, status=DatasetStatus.READY, record_count=len(texts),
                                     progress=1.0, phase="done", embedded_count=len(texts), vector_chunk_size=len(texts))
    Record.objects.bulk_create([
        Record(dataset=dataset, row_index=i, text=text, metadata={"source": "test", "n": i},
               split=(splits[i] if splits else "pool"), label=(labels[i] if labels else None))
        for i, text in enumerate(texts)])
    vectors_write_chunk(dataset_id=dataset.id, chunk_index=0, vectors=np.asarray(vectors, dtype=np.float32))
    return dataset


def make_model(workspace, dataset: Dataset, *, labels: list[str], label_vectors: np.ndarray, name: str = "intents",
               status: str = ModelStatus.READY) -> ClassificationModel:
    model = ClassificationModel.objects.create(workspace=workspace, dataset=dataset, name=name, labels=labels,
                                               label_descriptions={label: "" for label in labels}, status=status,
                                               type=ModelType.DESCRIBE_AND_CLASSIFY)
    head = ZeroShotHead(labels=labels, label_vectors=normalised(label_vectors), temperature=0.05, details={})
    version_create(model=model, head=head, type=ModelType.DESCRIBE_AND_CLASSIFY, training_examples=0)
    model.refresh_from_db()
    return model


def random_setup(workspace, *, n: int = 300, labels=("billing", "technical", "cancellation"), seed: int = 0):
    """n records whose vectors lie near one of the label vectors (so the zero-shot head is meaningful)."""
    rng = np.random.default_rng(seed)
    label_vectors = normalised(rng.normal(size=(len(labels), 384)))
    truth = rng.integers(0, len(labels), size=n)
    vectors = normalised(label_vectors[truth] * 2.0 + rng.normal(size=(n, 384)) * 0.08)
    dataset = make_dataset(workspace, texts=[f"message {i} <b>&</b>" for i in range(n)], vectors=vectors)
    model = make_model(workspace, dataset, labels=list(labels), label_vectors=label_vectors)
    return model, [labels[t] for t in truth]


def banking77_rows(banking77_dir: str, *, categories: list[str], per_category: int) -> list[tuple[str, str]]:
    taken: dict[str, int] = {c: 0 for c in categories}
    rows = []
    with open(os.path.join(banking77_dir, "train.csv"), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            category = row["category"]
            if category in taken and taken[category] < per_category:
                taken[category] += 1
                rows.append((row["text"], category))
    return rows


@pytest.fixture(autouse=True)
def fresh_caches():
    """Heads and vectors are cached per process by id, and the test database reuses ids after a rollback."""
    from labeling.embeddings import vectors_cache_clear
    from models_app.inference import clear_cache

    clear_cache()
    vectors_cache_clear()
    yield
    clear_cache()
    vectors_cache_clear()
