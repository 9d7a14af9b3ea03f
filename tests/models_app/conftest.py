"""Ready datasets with real vectors, and describe-and-classify models on them, for the models tests."""
from __future__ import annotations

import csv

import pytest

from labeling.embeddings import embed_texts, vectors_write_chunk
from labeling.models import Dataset, DatasetStatus, Record, Split

# A few well-separated Banking77 intents with plain descriptions, so zero-shot predictions are meaningful.
LABELS = [
    {"name": "card_arrival", "description": "The customer is waiting for a new card to arrive in the post"},
    {"name": "exchange_rate", "description": "Questions about currency exchange rates"},
    {"name": "lost_or_stolen_card", "description": "The customer lost their card or it was stolen"},
    {"name": "top_up_failed", "description": "Adding money to the account (a top-up) did not work"},
]
ROWS_PER_LABEL = 12
CHUNK_SIZE = 16  # small, so the dataset spans several vector chunks


def banking77_rows(banking77_dir: str, per_label: int = ROWS_PER_LABEL) -> list[tuple[str, str]]:
    wanted = {label["name"] for label in LABELS}
    taken: dict[str, int] = {}
    rows = []
    with open(f"{banking77_dir}/train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in wanted and taken.get(row["category"], 0) < per_label:
                taken[row["category"]] = taken.get(row["category"], 0) + 1
                rows.append((row["text"], row["category"]))
    return rows


def make_ready_dataset(workspace, rows: list[tuple[str, str]], *, evaluation_labels: bool = False,
                       name: str = "banking sample") -> Dataset:
    """A dataset as the import pipeline leaves it: records, vector chunks, status ready."""
    dataset = Dataset.objects.create(workspace=workspace, name=name, status=DatasetStatus.READY,
                                     record_count=len(rows), progress=1.0, phase="done",
                                     embedded_count=len(rows), vector_chunk_size=CHUNK_SIZE)
    Record.objects.bulk_create([
        Record(dataset=dataset, row_index=i, text=text,
               label=label if evaluation_labels and i % 2 == 0 else None,
               split=Split.EVALUATION if evaluation_labels and i % 2 == 0 else Split.POOL)
        for i, (text, label) in enumerate(rows)
    ])
    vectors = embed_texts([text for text, _ in rows])
    for chunk, start in enumerate(range(0, len(rows), CHUNK_SIZE)):
        vectors_write_chunk(dataset_id=dataset.id, chunk_index=chunk, vectors=vectors[start:start + CHUNK_SIZE])
    return dataset


@pytest.fixture
def b77_rows(banking77_dir):
    return banking77_rows(banking77_dir)


@pytest.fixture
def ready_dataset(workspace, b77_rows):
    return make_ready_dataset(workspace, b77_rows)


@pytest.fixture
def model_payload(ready_dataset):
    return {"name": "Contact reason", "dataset_id": ready_dataset.id, "labels": LABELS, "type": "describe-and-classify"}


@pytest.fixture
def created_model(lead_api, model_payload):
    """A describe-and-classify model made through the API (the model object)."""
    response = lead_api.post("/v2/models", model_payload)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def deployed_model(admin_api, created_model):
    response = admin_api.post(f"/v2/models/{created_model['id']}/deploy", {})
    assert response.status_code == 200, response.content
    return response.json()




@pytest.fixture(autouse=True)
def _fresh_model_caches():
    """Model heads and vectors are cached per process by id, and the test database reuses ids after a rollback:
    without this, a test could classify with a head cached by an earlier test (seed_demo's demo model, say)."""
    from labeling.embeddings import vectors_cache_clear
    from models_app.inference import clear_cache

    clear_cache()
    vectors_cache_clear()
    yield
    clear_cache()
    vectors_cache_clear()
