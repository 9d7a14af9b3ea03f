"""The active-learning loop end to end, with eager Celery, on 200 Banking77 messages and 5 labels:
the queue starts on its own, every 20 labels a new version is trained and evaluated, and the queue is
recomputed from it."""
from __future__ import annotations

import numpy as np
import pytest

from labeling.embeddings import embed_texts
from labeling.models import Annotation, Job, JobKind, JobStatus, Record
from models_app.models import ModelType
from models_app.training_services import learning_curve
from tests.training.helpers import banking77_rows, fresh_caches, make_dataset, make_model  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CATEGORIES = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cash_withdrawal_charge", "passcode_forgotten"]
PHRASES = ["when will my new card arrive", "my card was lost or stolen", "the exchange rate used",
           "a fee for withdrawing cash", "I forgot my passcode"]


@pytest.fixture
def banking_model(workspace, banking77_dir):
    rows = banking77_rows(banking77_dir, categories=CATEGORIES, per_category=40)
    texts = [text for text, _ in rows]
    dataset = make_dataset(workspace, texts=texts, vectors=embed_texts(texts))
    model = make_model(workspace, dataset, labels=CATEGORIES, label_vectors=embed_texts(PHRASES))
    model.truth = {record_id: rows[row][1] for record_id, row in
                   Record.objects.filter(dataset=dataset).values_list("id", "row_index")}
    return model


def test_labels_every_twenty_train_a_version_and_recompute_the_queue(banking_model, annotator_api,
                                                                     django_capture_on_commit_callbacks):
    model = banking_model
    url = f"/v2/models/{model.id}"
    # Cold start: the first call finds no queue and queues its computation (absorbing repeats).
    with django_capture_on_commit_callbacks(execute=True):
        first = annotator_api.get(f"{url}/recommendations", {"limit": 20}).json()
    assert first["data"] == [] and first["version"] == 1
    assert Job.objects.get(model=model, kind=JobKind.RECOMMEND).status == JobStatus.SUCCEEDED

    versions_seen = []
    for round_number in range(1, 4):
        with django_capture_on_commit_callbacks(execute=True):
            page = annotator_api.get(f"{url}/recommendations", {"limit": 20}).json()
        assert len(page["data"]) == 20
        # The queue was ranked by the newest version: version 1 first, then each retrained one.
        assert page["version"] == round_number
        assert {item["reason"] for item in page["data"]} <= {"uncertain", "diverse", "rare-class", "evaluation"}
        labels = [{"record_id": item["record"]["id"], "label": model.truth[item["record"]["id"]], "duration_ms": 900}
                  for item in page["data"]]
        with django_capture_on_commit_callbacks(execute=True):
            answer = annotator_api.post(f"{url}/labels", {"labels": labels}).json()
        assert answer == {"accepted": 20, "labeled_total": 20 * round_number}
        job = Job.objects.filter(model=model, kind=JobKind.TRAIN).order_by("-id").first()
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.result["version"] == round_number + 1 and job.result["model_id"] == model.id
        versions_seen.append(job.result["version"])

    assert versions_seen == [2, 3, 4]
    assert Job.objects.filter(model=model, kind=JobKind.TRAIN).count() == 3
    assert Annotation.objects.filter(model=model).count() == 60

    model.refresh_from_db()
    newest = model.versions.order_by("-number").first()
    assert newest.number == 4 and newest.training_examples == Record.objects.filter(
        dataset=model.dataset, split="pool", label__isnull=False).count()
    evaluation_labels = Record.objects.filter(dataset=model.dataset, split="evaluation", label__isnull=False).count()
    assert evaluation_labels >= 3  # ~10% of the queue are evaluation samples
    assert newest.metrics["evaluation"] == "holdout" and newest.metrics["evaluated_on"] == evaluation_labels

    # 60 labels on 5 well-separated intents: the trained version clearly beats describe-and-classify on
    # the records nobody labeled.
    from models_app.inference import head_for_version
    from labeling.embeddings import vectors_load

    unlabeled = list(Record.objects.filter(dataset=model.dataset, label__isnull=True).values_list("id", "row_index"))
    vectors = vectors_load(dataset_id=model.dataset_id, row_count=200, chunk_size=200)[[row for _, row in unlabeled]]
    gold = np.array([CATEGORIES.index(model.truth[rid]) for rid, _ in unlabeled])
    accuracy = {v.number: float((head_for_version(v).predict_proba(vectors).argmax(axis=1) == gold).mean())
                for v in model.versions.all()}
    assert accuracy[4] >= 0.85 and accuracy[4] > accuracy[1]

    curve = learning_curve(model=model)
    assert [point["version"] for point in curve] == [2, 3, 4]
    assert [point["labels"] for point in curve] == [20, 40, 60]
    assert all(point["accuracy"] is not None and point["f1_macro"] is not None for point in curve)
    stability = newest.details["stability"]
    assert stability["versions"] == [4, 3, 2] and len(stability["kappas"]) == 2
    assert all(-1.0 <= k <= 1.0 for k in stability["kappas"])
    assert model.type == ModelType.ACTIVE_LEARNING  # every label has at least 2 training labels by now
