"""POST /v2/models/{id}/train and the train job's faults: absorbing, failures, redelivery."""
from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from labeling.models import Job, JobStatus, Record, Recommendation
from models_app.models import ClassificationModel, ModelStatus, ModelType, ModelVersion
from models_app.services import model_deploy
from models_app.training_services import train_job_run, train_request
from models_app.training_tasks import train_model
from tests.conftest import assert_error
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, truth = random_setup(workspace, n=150)
    # 8 labels per class in the pool split, 2 per class in the evaluation split.
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index"))
    seen: dict[str, int] = {}
    for record, label in zip(records, truth):
        n = seen.get(label, 0)
        if n < 10:
            seen[label] = n + 1
            Record.objects.filter(pk=record.pk).update(label=label, split="evaluation" if n >= 8 else "pool")
    return model


def train(api, model, body):
    return api.post(f"/v2/models/{model.id}/train", body)


def test_train_answers_202_with_the_job_and_the_job_trains_a_version(lead_api, model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = train(lead_api, model, {"type": "active-learning"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) >= {"id", "kind", "status", "progress", "error", "result", "created_at", "finished_at"}
    assert body["kind"] == "train" and body["status"] == "queued"
    job = Job.objects.get(pk=body["id"])
    assert job.status == JobStatus.SUCCEEDED and job.progress == 1.0 and job.finished_at is not None
    assert job.result["model_id"] == model.id and job.result["version"] == 2
    version = ModelVersion.objects.get(model=model, number=2)
    assert version.job_id == job.id and version.type == ModelType.ACTIVE_LEARNING
    assert version.training_examples == 24
    assert version.metrics["evaluation"] == "holdout" and version.metrics["evaluated_on"] == 6
    assert version.threshold_curve and version.threshold_curve[0]["coverage"] == 1.0
    assert version.details["learning_curve"]["labels"] == 30
    assert version.details["stability"]["kappas"]  # compared with version 1
    # The queue was recomputed from the new version before the job succeeded.
    assert set(Recommendation.objects.filter(model=model).values_list("version", flat=True)) == {2}
    model.refresh_from_db()
    assert model.status == ModelStatus.READY and model.type == ModelType.ACTIVE_LEARNING


def test_without_evaluation_labels_the_version_is_cross_validated(lead_api, model, django_capture_on_commit_callbacks):
    Record.objects.filter(dataset=model.dataset, split="evaluation").update(split="pool")
    with django_capture_on_commit_callbacks(execute=True):
        train(lead_api, model, {"type": "active-learning"})
    version = ModelVersion.objects.get(model=model, number=2)
    assert version.metrics["evaluation"] == "cross-validation" and version.metrics["evaluated_on"] == 30


def test_requests_while_a_job_is_queued_are_absorbed(lead_api, admin_api, model):
    first = train(lead_api, model, {"type": "active-learning"}).json()
    second = train(admin_api, model, {"type": "active-learning"}).json()
    assert first["id"] == second["id"]
    assert Job.objects.filter(model=model, kind="train").count() == 1


def test_a_request_while_a_job_runs_queues_one_after_it(model):
    running, _ = train_request(model=model, type="active-learning")
    Job.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
    waiting, created = train_request(model=model, type="active-learning")
    assert created and waiting.id != running.id
    assert train_job_run(job_id=waiting.id) == "wait"
    assert Job.objects.get(pk=waiting.pk).status == JobStatus.QUEUED
    Job.objects.filter(pk=running.pk).update(status=JobStatus.SUCCEEDED)
    assert train_job_run(job_id=waiting.id) == JobStatus.SUCCEEDED


def test_train_input_errors(lead_api, annotator_api, other_api, model):
    assert_error(train(lead_api, model, {"type": "prompt-tuned"}), 400, "INVALID_FIELD")
    assert_error(train(lead_api, model, {"type": 3}), 400, "INVALID_FIELD")
    assert_error(train(lead_api, model, {}), 400, "MISSING_REQUIRED_FIELD")
    assert_error(train(annotator_api, model, {"type": "active-learning"}), 403, "FORBIDDEN")
    assert_error(train(other_api, model, {"type": "active-learning"}), 404, "NOT_FOUND")
    ClassificationModel.objects.filter(pk=model.pk).update(status=ModelStatus.ARCHIVED)
    assert_error(train(lead_api, model, {"type": "active-learning"}), 409, "MODEL_ARCHIVED")
    assert not Job.objects.exists()


def test_active_learning_with_no_training_labels_is_409(lead_api, workspace):
    unlabeled, _ = random_setup(workspace, n=30)
    Record.objects.filter(dataset=unlabeled.dataset, row_index=0).update(label="billing", split="evaluation")
    body = assert_error(train(lead_api, unlabeled, {"type": "active-learning"}), 409, "CONFLICT")
    assert "no labels to train on yet" in body["message"]
    assert not Job.objects.filter(model=unlabeled, kind="train").exists()
    assert unlabeled.versions.count() == 1


def test_fine_tuning_with_a_class_under_two_labels_is_400_naming_it(lead_api, model):
    short = model.labels[1]
    keep = Record.objects.filter(dataset=model.dataset, label=short, split="pool").order_by("id").first()
    Record.objects.filter(dataset=model.dataset, label=short, split="pool").exclude(pk=keep.pk).update(label=None)
    body = assert_error(train(lead_api, model, {"type": "fine-tuned"}), 400, "INVALID_FIELD")
    assert short in body["message"] and model.labels[0] not in body["message"]
    assert "1 of 3 labels have fewer" in body["message"]
    assert not Job.objects.exists()


def test_the_fine_tune_refusal_names_a_few_short_labels_and_counts_the_rest(lead_api, workspace):
    labels = tuple(f"intent_{i}" for i in range(30))
    many, truth = random_setup(workspace, n=60, labels=labels)
    Record.objects.filter(dataset=many.dataset, row_index=0).update(label=truth[0])
    body = assert_error(train(lead_api, many, {"type": "fine-tuned"}), 400, "INVALID_FIELD")
    assert "30 of 30 labels have fewer" in body["message"] and body["message"].endswith("and 22 more")


def test_fine_tuned_job_makes_a_fine_tuned_model(lead_api, model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = train(lead_api, model, {"type": "fine-tuned"}).json()["id"]
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    model.refresh_from_db()
    assert model.type == ModelType.FINE_TUNED and model.versions.get(number=2).type == ModelType.FINE_TUNED
    assert set(Recommendation.objects.filter(model=model).values_list("version", flat=True)) == {2}


def test_a_failing_train_fails_the_job_and_the_previous_version_keeps_serving(model, monkeypatch,
                                                                              django_capture_on_commit_callbacks):
    model_deploy(model=model)

    status_while_training = []

    def broken(**kwargs):
        status_while_training.append(ClassificationModel.objects.get(pk=model.pk).status)
        raise RuntimeError("the head could not be fitted")

    monkeypatch.setattr("models_app.ml.training.train_active_learning_head", broken)
    with django_capture_on_commit_callbacks(execute=True):
        job, _ = train_request(model=model, type="active-learning")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "the head could not be fitted" in job.error
    assert status_while_training == [ModelStatus.TRAINING]
    model.refresh_from_db()
    assert model.status == ModelStatus.DEPLOYED and model.served_version.number == 1
    assert model.versions.count() == 1 and model.type == ModelType.DESCRIBE_AND_CLASSIFY


def test_the_task_run_twice_writes_one_version(model):
    job, _ = train_request(model=model, type="active-learning")
    assert train_model(job.id) == JobStatus.SUCCEEDED
    assert train_model(job.id) == "done"
    assert ModelVersion.objects.filter(job=job).count() == 1 and model.versions.count() == 2


def test_a_task_redelivered_after_a_crash_finishes_without_a_second_version(model, monkeypatch):
    job, _ = train_request(model=model, type="active-learning")

    def worker_killed(**kwargs):
        raise KeyboardInterrupt  # not an Exception: the job is left "running", as after a killed worker

    monkeypatch.setattr("labeling.queue.queue_recompute", worker_killed)
    with pytest.raises(KeyboardInterrupt):
        train_model(job.id)
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING
    assert ModelVersion.objects.filter(job=job).count() == 1
    monkeypatch.undo()
    assert train_model(job.id) == JobStatus.SUCCEEDED  # acks_late redelivery
    job.refresh_from_db()
    assert job.result["version"] == 2 and job.attempts == 2
    assert ModelVersion.objects.filter(job=job).count() == 1 and model.versions.count() == 2
    model.refresh_from_db()
    assert model.status == ModelStatus.READY


def test_type_stays_describe_and_classify_until_every_label_has_two_training_labels(model, lead_api,
                                                                                   django_capture_on_commit_callbacks):
    short = model.labels[2]
    Record.objects.filter(dataset=model.dataset, label=short).update(label=None)
    with django_capture_on_commit_callbacks(execute=True):
        train(lead_api, model, {"type": "active-learning"})
    model.refresh_from_db()
    version = model.versions.get(number=2)
    assert version.type == ModelType.ACTIVE_LEARNING and model.type == ModelType.DESCRIBE_AND_CLASSIFY
    assert version.details["training"]["per_class"][short] == 0


@pytest.mark.django_db(transaction=True)
def test_two_leads_pressing_train_at_once_get_one_job(workspace):
    import threading

    from django.db import connection

    model, truth = random_setup(workspace, n=40)
    first = Record.objects.filter(dataset=model.dataset).order_by("row_index").first()
    Record.objects.filter(pk=first.pk).update(label=truth[0])
    barrier = threading.Barrier(2)
    job_ids = []

    def press():
        try:
            barrier.wait()
            job, _ = train_request(model=model, type="active-learning")
            job_ids.append(job.id)
        finally:
            connection.close()

    # Nothing runs the job (no commit hooks are executed by a worker here), so both presses meet it queued.
    from unittest import mock

    with mock.patch("models_app.training_tasks.train_model.delay"):
        threads = [threading.Thread(target=press) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(job_ids) == 2 and job_ids[0] == job_ids[1]
    assert Job.objects.filter(model=model, kind="train").count() == 1


def test_a_fine_tuned_model_answers_texts_its_words_decide_without_embedding_them(workspace, lead_api, admin_api,
                                                                                   monkeypatch,
                                                                                   django_capture_on_commit_callbacks):
    """The fine-tuned version's text stage: through the inference API, texts whose words settle the label are
    answered from their n-grams, and only the others reach the sentence encoder."""
    from tests.training.helpers import make_dataset, make_model, normalised

    products = {"router": ["Zyntrax", "Qorvel"], "billing": ["Plumbix", "Vantrel"], "app": ["Kestrio", "Dromfy"]}
    templates = ["my {} is not working", "question about {} please", "{} again, help", "why does {} do this",
                 "I need help with the {} thing", "the {} keeps failing today"]
    labels = list(products)
    rng = np.random.default_rng(0)
    truth = [labels[i % 3] for i in range(360)]
    texts = [templates[rng.integers(len(templates))].format(products[label][rng.integers(2)]) for label in truth]
    vectors = normalised(rng.normal(size=(360, 384)))  # the vectors know nothing of the made-up names
    dataset = make_dataset(workspace, texts=texts, vectors=vectors, labels=truth,
                           splits=["evaluation" if i % 10 == 0 else "pool" for i in range(360)])
    model = make_model(workspace, dataset, labels=labels, label_vectors=rng.normal(size=(3, 384)))
    with django_capture_on_commit_callbacks(execute=True):
        job_id = train(lead_api, model, {"type": "fine-tuned"}).json()["id"]
    assert Job.objects.get(pk=job_id).status == JobStatus.SUCCEEDED
    model.refresh_from_db()
    assert model.versions.get(number=2).type == ModelType.FINE_TUNED
    model_deploy(model=model)

    import labeling.embeddings as embeddings

    real_embed, embedded = embeddings.embed_texts, []
    monkeypatch.setattr(embeddings, "embed_texts", lambda batch, **kw: embedded.extend(batch) or real_embed(batch, **kw))
    # Phrasings seen in training with the other names; then a text in words the model has never seen.
    asked = ["my Qorvel is not working", "why does Plumbix do this", "Kestrio again, help", "nothing to go on here"]
    response = admin_api.post(f"/v2/models/{model.id}/inference", {"texts": asked})
    assert response.status_code == 200, response.content
    predicted = [prediction["label"] for prediction in response.json()["predictions"]]
    assert predicted[:3] == ["router", "billing", "app"]
    assert embedded == ["nothing to go on here"]


def test_a_fine_tuned_training_self_trains_on_the_unlabeled_pool_records_only(workspace, lead_api,
                                                                               django_capture_on_commit_callbacks):
    """Each label has a name the labeled texts show and a second name only unlabeled pool texts show, beside the
    first. The evaluation records use the second names alone: the version gets them right only by reading the
    pool. Excluded records and unlabeled evaluation-split records are never pseudo-labeled."""
    from tests.training.helpers import make_dataset, make_model, normalised

    known = {"router": "Zyntrax", "billing": "Plumbix", "app": "Kestrio"}
    pool_only = {"router": "Qorvel", "billing": "Vantrel", "app": "Dromfy"}
    templates = ["my {} is not working", "question about {} please", "{} again, help", "why does {} do this"]
    labels = list(known)
    rng = np.random.default_rng(0)
    texts, truth, splits = [], [], []

    def add(count, name_of, label_it, split):
        for i in range(count):
            label = labels[i % 3]
            texts.append(templates[rng.integers(len(templates))].format(name_of(label)))
            truth.append(label if label_it else None)
            splits.append(split)

    add(60, lambda label: known[label], True, "pool")
    add(150, lambda label: f"{known[label]} and {pool_only[label]}", False, "pool")
    add(30, lambda label: pool_only[label], True, "evaluation")
    add(6, lambda label: pool_only[label], False, "evaluation")
    vectors = normalised(rng.normal(size=(len(texts), 384)))  # the vectors know nothing of the made-up names
    dataset = make_dataset(workspace, texts=texts, vectors=vectors, labels=truth, splits=splits)
    Record.objects.filter(dataset=dataset, row_index__in=range(60, 70)).update(excluded=True)
    model = make_model(workspace, dataset, labels=labels, label_vectors=rng.normal(size=(3, 384)))
    with django_capture_on_commit_callbacks(execute=True):
        job_id = train(lead_api, model, {"type": "fine-tuned"}).json()["id"]
    assert Job.objects.get(pk=job_id).status == JobStatus.SUCCEEDED
    version = model.versions.get(number=2)
    self_training = version.details["head"]["self_training"]
    assert self_training["pool"] == 140 and self_training["pseudo_labels"] > 100
    assert version.metrics["evaluation"] == "holdout" and version.metrics["evaluated_on"] == 30
    assert version.metrics["accuracy"] > 0.9  # without the pool: about a third (test_fine_tuning measures it)

    # With no evaluation labels the self-trained head's own out-of-fold probabilities are the evaluation.
    Record.objects.filter(dataset=dataset, split="evaluation").update(label=None)
    with django_capture_on_commit_callbacks(execute=True):
        train(lead_api, model, {"type": "fine-tuned"})
    version = model.versions.get(number=3)
    assert version.details["head"]["self_training"]["pool"] == 140
    assert version.metrics["evaluation"] == "cross-validation" and version.metrics["evaluated_on"] == 60
    assert version.metrics["accuracy"] > 0.9
