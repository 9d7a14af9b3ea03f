"""A small real world for the evaluation tests: 152 Banking77 messages in 4 intents imported through the
import pipeline (40 of them labeled for evaluation, the rest labeled in the pool), a describe-and-classify
model (version 1) and an active-learning version trained by a real train job (version 2)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import pytest

from labeling.models import Dataset, DatasetStatus
from labeling.services import dataset_create_from_records
from models_app.models import ClassificationModel

CATEGORIES = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]
DESCRIPTIONS = {
    "card_arrival": "The customer is waiting for a new card to arrive in the post",
    "lost_or_stolen_card": "The customer lost their card or it was stolen",
    "exchange_rate": "Questions about currency exchange rates",
    "top_up_failed": "Adding money to the account (a top-up) did not work",
}
PER_CATEGORY = 38
EVALUATION_EVERY = 4  # every 4th message of each intent is labeled for evaluation: 40 of 152
# One more evaluation record, hostile: every page must show it as text.
HOSTILE = {"text": "<script>alert(1)</script><b>my new card</b> has still not arrived", "label": "card_arrival",
           "split": "evaluation"}
EVALUATION_RECORDS = 41


@dataclass
class World:
    dataset: Dataset
    model: ClassificationModel
    texts: dict[str, str]  # record text -> gold label


def banking77_records(banking77_dir: str) -> list[dict]:
    taken = {c: 0 for c in CATEGORIES}
    records = []
    with open(os.path.join(banking77_dir, "train.csv"), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            category = row["category"]
            if category in taken and taken[category] < PER_CATEGORY:
                split = "evaluation" if taken[category] % EVALUATION_EVERY == 0 else "pool"
                taken[category] += 1
                records.append({"text": row["text"], "label": category, "split": split})
    return records + [HOSTILE]


def build_world(workspace, banking77_dir, *, train: bool = True) -> World:
    from models_app.services import model_create
    from models_app.training_services import train_request

    records = banking77_records(banking77_dir)
    dataset = dataset_create_from_records(workspace=workspace, name="banking sample", records=records)
    dataset.refresh_from_db()
    assert dataset.status == DatasetStatus.READY, dataset.error
    model = model_create(workspace=workspace, dataset=dataset, name="Card intents",
                         labels=[{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES])
    if train:
        job, _ = train_request(model=model, type="active-learning")
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
    model.refresh_from_db()
    return World(dataset=dataset, model=model, texts={r["text"]: r["label"] for r in records})


@pytest.fixture(autouse=True)
def fresh_caches():
    """Heads, vectors and evaluation predictions are cached per process by id; ids can repeat across tests."""
    from labeling.embeddings import vectors_cache_clear
    from models_app.evaluation_selectors import clear_predictions_cache
    from models_app.inference import clear_cache

    for clear in (clear_cache, vectors_cache_clear, clear_predictions_cache):
        clear()
    yield
    for clear in (clear_cache, vectors_cache_clear, clear_predictions_cache):
        clear()


@pytest.fixture
def world(workspace, banking77_dir) -> World:
    return build_world(workspace, banking77_dir)
