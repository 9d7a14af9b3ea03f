"""A dataset goes through Redis to a real Celery worker process and lands in PostgreSQL."""
import csv
import os

from django.db import connection

from labelf_studio.celery import app as celery_app
from labeling.models import Dataset, Record
from tests.conftest import ApiClient
from tests.factories import make_key, make_workspace
from tests.system.conftest import wait_for


def banking77_rows(banking77_dir, count: int) -> list[dict]:
    with open(os.path.join(banking77_dir, "train.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    return [{"text": row["text"], "metadata": {"category": row["category"]}} for row in rows]


def test_import_and_embedding_run_in_the_worker(celery_worker, banking77_dir):
    assert connection.vendor == "postgresql"
    assert celery_app.conf.task_always_eager is False and celery_app.conf.broker_url.startswith("redis://")
    workspace = make_workspace()
    api = ApiClient(make_key(workspace, "lead"))
    response = api.post("/v2/datasets", {"name": "tickets", "records": banking77_rows(banking77_dir, 300)})
    assert response.status_code == 202, response.content
    dataset_id = response.json()["id"]
    assert response.json()["status"] == "processing"

    dataset = wait_for(lambda: Dataset.objects.filter(pk=dataset_id, status__in=["ready", "failed"]).first(),
                       timeout=240, message="the worker to import and embed the dataset")
    assert dataset.status == "ready", dataset.error
    assert dataset.record_count == 300 == Record.objects.filter(dataset=dataset).count()
    assert dataset.embedded_count == 300

    found = api.get(f"/v2/datasets/{dataset_id}/search", {"q": "my card still has not arrived", "limit": 3})
    assert found.status_code == 200, found.content
    top = found.json()["data"][0]
    assert top["metadata"]["category"] in {"card_arrival", "card_delivery_estimate"} and 0 < top["score"] <= 1
