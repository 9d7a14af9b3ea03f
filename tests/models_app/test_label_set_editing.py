"""Changing an existing model's label set: PATCH /v2/models/{id} with `labels`, and the model page's label editor.

Adding, removing and reordering labels; records keep their labels (the dataset's), the model just stops using those
whose label left its set; a describe-and-classify model gets a new version at once, a trained one keeps serving its
version and an active-learning retrain on the new set is requested; invalid input stores nothing.
"""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Annotation, Job, JobKind, JobStatus, Record, Recommendation, Split
from labeling.queue import queue_recompute
from labelf_studio.workspaces.models import AuditEvent
from models_app.models import ClassificationModel, ModelStatus, ModelType, ModelVersion
from models_app.training_services import train_job_run
from tests.conftest import assert_error
from tests.models_app.conftest import LABELS

pytestmark = pytest.mark.django_db

NAMES = [label["name"] for label in LABELS]
NEW_LABEL = {"name": "card_payment_fee_charged",
             "description": "The customer was charged an extra fee for paying with their card"}
FEE_TEXT = "Why was I charged an extra fee when I paid with my card?"


def patch(api, model_id, body):
    return api.patch(f"/v2/models/{model_id}", body)


def label(api, model_id, items):
    return api.post(f"/v2/models/{model_id}/labels", {"labels": [{"record_id": r, "label": name} for r, name in items]})


def records_by_truth(dataset, b77_rows) -> dict[str, list[Record]]:
    """The dataset's records grouped by their Banking77 category (the records themselves start unlabeled)."""
    records = list(Record.objects.filter(dataset=dataset).order_by("row_index"))
    grouped: dict[str, list[Record]] = {}
    for record, (_, category) in zip(records, b77_rows):
        grouped.setdefault(category, []).append(record)
    return grouped


def snapshot(model_id) -> dict:
    """Everything a rejected call must leave as it was."""
    model = ClassificationModel.objects.get(pk=model_id)
    return {"name": model.name, "labels": list(model.labels), "descriptions": dict(model.label_descriptions),
            "threshold": model.confidence_threshold, "overlap": model.overlap_share, "type": model.type,
            "versions": ModelVersion.objects.filter(model_id=model_id).count(),
            "jobs": Job.objects.filter(model_id=model_id, kind=JobKind.TRAIN).count(),
            "audit": AuditEvent.objects.filter(action__in=["model.labels", "model.update", "model.overlap"]).count(),
            "records": sorted(Record.objects.filter(dataset_id=model.dataset_id).values_list("id", "label"))}


@pytest.fixture
def trained(lead_api, created_model, ready_dataset, b77_rows, django_capture_on_commit_callbacks):
    """The describe-and-classify model trained once (version 2, active-learning): 4 pool labels per class given
    through the API (so they have a history) and 2 evaluation labels per class; automatic retrains off."""
    model_id = created_model["id"]
    ClassificationModel.objects.filter(pk=model_id).update(retrain_every=10_000)
    grouped = records_by_truth(ready_dataset, b77_rows)
    response = label(lead_api, model_id, [(r.id, name) for name in NAMES for r in grouped[name][:4]])
    assert response.status_code == 200, response.content
    for name in NAMES:
        Record.objects.filter(pk__in=[r.pk for r in grouped[name][4:6]]).update(label=name, split=Split.EVALUATION)
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post(f"/v2/models/{model_id}/train", {"type": "active-learning"})
    assert response.status_code == 202, response.content
    model = ClassificationModel.objects.get(pk=model_id)
    assert model.type == ModelType.ACTIVE_LEARNING and model.latest_version.number == 2
    return model


# --- describe-and-classify: a new version at once ---------------------------------------------------------

def test_adding_a_label_builds_a_version_that_predicts_it(lead_api, admin_api, created_model,
                                                          django_capture_on_commit_callbacks):
    model_id = created_model["id"]
    admin_api.post(f"/v2/models/{model_id}/deploy", {})
    Job.objects.filter(model_id=model_id, kind=JobKind.RECOMMEND).delete()  # creation's (it would absorb the request)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = patch(lead_api, model_id, {"labels": LABELS + [NEW_LABEL]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["labels"] == NAMES + [NEW_LABEL["name"]] and body["version"] == 2
    assert body["label_descriptions"][NEW_LABEL["name"]] == NEW_LABEL["description"]
    version = ModelVersion.objects.get(model_id=model_id, number=2)
    assert version.labels == body["labels"] and version.type == ModelType.DESCRIBE_AND_CLASSIFY
    # The summary of the new version and a ranking of the queue with it are queued once the change commits.
    assert len(callbacks) == 2 and Job.objects.filter(model_id=model_id, kind=JobKind.RECOMMEND).exists()
    # Deployed without a pin: the new version serves at once and can answer the new label.
    answer = admin_api.post(f"/v2/models/{model_id}/inference", {"texts": [FEE_TEXT]}).json()
    assert answer["version"] == 2 and answer["predictions"][0]["label"] == NEW_LABEL["name"]
    assert set(answer["predictions"][0]["scores"]) == set(body["labels"])
    # Annotators can use the new label at once.
    record = Record.objects.filter(dataset_id=created_model["dataset_id"]).first()
    assert label(lead_api, model_id, [(record.id, NEW_LABEL["name"])]).status_code == 200
    record.refresh_from_db()
    assert record.label == NEW_LABEL["name"]
    event = AuditEvent.objects.get(action="model.labels")
    assert event.details["added"] == [NEW_LABEL["name"]] and event.details["removed"] == []
    assert event.details["reordered"] is False and event.details["new_version"] is True
    assert event.target == f"model {model_id} (Contact reason)"


def test_removing_a_label_keeps_the_records_labels_and_refuses_the_label(lead_api, created_model, ready_dataset,
                                                                          b77_rows):
    model_id = created_model["id"]
    grouped = records_by_truth(ready_dataset, b77_rows)
    rates = [r.id for r in grouped["exchange_rate"][:3]]
    assert label(lead_api, model_id, [(r, "exchange_rate") for r in rates]).status_code == 200
    history = sorted(Annotation.objects.values_list("id", "record_id", "label", "is_current"))

    kept = [item for item in LABELS if item["name"] != "exchange_rate"]
    response = patch(lead_api, model_id, {"labels": kept})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["labels"] == [item["name"] for item in kept] and "exchange_rate" not in body["label_descriptions"]
    assert body["version"] == 2 and ModelVersion.objects.get(model_id=model_id, number=2).labels == body["labels"]
    # The records and their history are the dataset's: untouched.
    assert sorted(Record.objects.filter(label="exchange_rate").values_list("id", flat=True)) == sorted(rates)
    assert sorted(Annotation.objects.values_list("id", "record_id", "label", "is_current")) == history
    listed = lead_api.get(f"/v2/datasets/{ready_dataset.id}/records", {"label": "exchange_rate"}).json()
    assert listed["total"] == 3
    # The model no longer takes the label, nor counts those records.
    other = grouped["exchange_rate"][5].id
    assert_error(label(lead_api, model_id, [(other, "exchange_rate")]), 400, "INVALID_FIELD")
    response = label(lead_api, model_id, [(other, "card_arrival")])
    assert response.status_code == 200 and response.json()["labeled_total"] == 1
    event = AuditEvent.objects.get(action="model.labels")
    assert event.details["removed"] == ["exchange_rate"] and event.details["added"] == []


def test_reordering_labels(lead_api, created_model):
    model_id = created_model["id"]
    response = patch(lead_api, model_id, {"labels": [{"name": name} for name in reversed(NAMES)]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["labels"] == list(reversed(NAMES))
    # A label sent without a description keeps its own.
    assert body["label_descriptions"] == {item["name"]: item["description"] for item in LABELS}
    assert ModelVersion.objects.get(model_id=model_id, number=2).labels == list(reversed(NAMES))
    event = AuditEvent.objects.get(action="model.labels")
    assert event.details["reordered"] is True and event.details["added"] == event.details["removed"] == []


def test_descriptions_given_replace_and_label_descriptions_apply_after_labels(lead_api, created_model):
    model_id = created_model["id"]
    labels = [{"name": "card_arrival", "description": "  Where is my new card  "}, {"name": "exchange_rate"},
              {"name": "lost_or_stolen_card", "description": None}, {"name": "top_up_failed"}, {"name": "refund"}]
    response = patch(lead_api, model_id, {"labels": labels, "label_descriptions": {"refund": "Money back"}})
    assert response.status_code == 200, response.content
    descriptions = response.json()["label_descriptions"]
    assert descriptions["card_arrival"] == "Where is my new card"
    assert descriptions["exchange_rate"] == LABELS[1]["description"]
    assert descriptions["lost_or_stolen_card"] == LABELS[2]["description"]  # null: kept, as when absent
    assert descriptions["refund"] == "Money back"
    assert response.json()["version"] == 2  # labels and descriptions together: one new version
    assert ModelVersion.objects.filter(model_id=model_id).count() == 2


def test_the_same_label_set_changes_nothing(lead_api, created_model):
    model_id = created_model["id"]
    response = patch(lead_api, model_id, {"labels": LABELS})
    assert response.status_code == 200 and response.json()["version"] == 1
    response = patch(lead_api, model_id, {"labels": [{"name": f" {name} "} for name in NAMES]})
    assert response.status_code == 200 and response.json()["version"] == 1
    assert not AuditEvent.objects.filter(action__in=["model.labels", "model.update"]).exists()


# --- invalid input stores nothing ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    ([{"name": "a"}, {"name": "b"}, {"name": "a"}], "labels[2].name: duplicate label 'a'"),
    ([{"name": "a"}, {"name": " a "}], "labels[1].name: duplicate label 'a'"),
    ([{"name": "a"}, {"name": ""}], "labels[1].name: expected a non-empty string"),
    ([{"name": "   "}], "labels[0].name: expected a non-empty string"),
    ([], "labels: at least one label is required"),
    ("card_arrival", "labels: expected a list"),
    ({"name": "card_arrival"}, "labels: expected a list"),
    (["card_arrival"], "labels[0]: expected an object"),
    ([{"name": 3}], "labels[0].name: expected a non-empty string"),
    ([{"description": "no name"}], "labels[0].name: expected a non-empty string"),
    ([{"name": "a", "description": 5}], "labels[0].description: expected a string"),
    ([{"name": "x" * 201}], "labels[0].name: at most 200 characters"),
    ([{"name": "a\x00b"}], "labels[0].name: must not contain NUL characters"),
    ([{"name": f"l{i}"} for i in range(1001)], "labels: at most 1000 labels"),
    (None, "labels: must not be null"),
])
def test_invalid_label_sets_store_nothing(lead_api, created_model, labels, message):
    model_id = created_model["id"]
    before = snapshot(model_id)
    response = patch(lead_api, model_id, {"name": "Renamed", "confidence_threshold": 0.9, "overlap_share": 0.3,
                                          "labels": labels})
    assert_error(response, 400, "INVALID_FIELD")
    assert response.json()["message"].startswith(message)
    assert snapshot(model_id) == before


def test_a_valid_label_set_with_another_invalid_field_stores_nothing(lead_api, created_model):
    model_id = created_model["id"]
    before = snapshot(model_id)
    for body in ({"labels": LABELS + [NEW_LABEL], "label_descriptions": {"exchange_rate": 3}},
                 {"labels": LABELS + [NEW_LABEL], "label_descriptions": {"nope": "x"}},
                 # label_descriptions name labels of the new set: a removed one is refused
                 {"labels": LABELS[1:], "label_descriptions": {"card_arrival": "x"}},
                 {"labels": LABELS + [NEW_LABEL], "confidence_threshold": 2},
                 {"labels": LABELS + [NEW_LABEL], "overlap_annotators": 9},
                 {"labels": LABELS + [NEW_LABEL], "name": ""}):
        assert_error(patch(lead_api, model_id, body), 400, "INVALID_FIELD")
        assert snapshot(model_id) == before


def test_archived_model_answers_409_and_stores_nothing(lead_api, admin_api, created_model):
    model_id = created_model["id"]
    admin_api.post(f"/v2/models/{model_id}/archive")
    before = snapshot(model_id)
    response = patch(lead_api, model_id, {"labels": LABELS + [NEW_LABEL], "name": "Renamed"})
    assert_error(response, 409, "MODEL_ARCHIVED")
    assert snapshot(model_id) == before


def test_annotator_cannot_change_labels(annotator_api, created_model):
    before = snapshot(created_model["id"])
    assert_error(patch(annotator_api, created_model["id"], {"labels": LABELS + [NEW_LABEL]}), 403, "FORBIDDEN")
    assert snapshot(created_model["id"]) == before


# --- trained models: keep serving, retrain on the new label set ---------------------------------------------

def test_trained_model_keeps_serving_and_retrains_on_the_new_label_set(lead_api, admin_api, trained, ready_dataset,
                                                                       django_capture_on_commit_callbacks):
    model_id = trained.id
    admin_api.post(f"/v2/models/{model_id}/deploy", {})
    rates = sorted(Record.objects.filter(dataset=ready_dataset, label="exchange_rate").values_list("id", "split"))
    new_set = [item for item in LABELS if item["name"] != "exchange_rate"] + [NEW_LABEL]
    new_names = [item["name"] for item in new_set]

    with django_capture_on_commit_callbacks(execute=False):
        response = patch(lead_api, model_id, {"labels": new_set})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["labels"] == new_names and body["type"] == ModelType.ACTIVE_LEARNING
    # Versions are immutable: version 2 keeps serving with its own labels until the retrain.
    assert body["version"] == 2 and ModelVersion.objects.filter(model_id=model_id).count() == 2
    answer = admin_api.post(f"/v2/models/{model_id}/inference", {"texts": [FEE_TEXT]}).json()
    assert answer["version"] == 2 and set(answer["predictions"][0]["scores"]) == set(NAMES)
    job = Job.objects.get(model_id=model_id, kind=JobKind.TRAIN, status=JobStatus.QUEUED)
    assert job.params["type"] == ModelType.ACTIVE_LEARNING
    event = AuditEvent.objects.get(action="model.labels")
    assert event.details["added"] == [NEW_LABEL["name"]] and event.details["removed"] == ["exchange_rate"]
    assert event.details["retrain_job_id"] == job.id and event.details["new_version"] is False

    # A second change before the job runs is absorbed by it, not stacked.
    assert patch(lead_api, model_id, {"labels": new_set[::-1]}).status_code == 200
    assert patch(lead_api, model_id, {"labels": new_set}).status_code == 200
    assert Job.objects.filter(model_id=model_id, kind=JobKind.TRAIN, status=JobStatus.QUEUED).count() == 1

    # The queue, still ranked by version 2, holds predictions of the removed label: they are not offered.
    queue_recompute(model=ClassificationModel.objects.get(pk=model_id))
    assert Recommendation.objects.filter(model_id=model_id, predicted_label="exchange_rate").exists()
    page = lead_api.get(f"/v2/models/{model_id}/recommendations", {"limit": 100}).json()
    predicted = {item["prediction"]["label"] for item in page["data"]}
    assert "exchange_rate" not in predicted and None in predicted

    assert train_job_run(job_id=job.id) == JobStatus.SUCCEEDED
    version = ModelVersion.objects.get(model_id=model_id, number=3)
    assert version.labels == new_names and version.type == ModelType.ACTIVE_LEARNING
    # The removed label's records are left out of training and evaluation; the new label, without examples yet,
    # is predicted from its description (the prior was built for the new label set).
    assert version.training_examples == 12 and version.details["training"]["per_class"][NEW_LABEL["name"]] == 0
    assert version.details["head"]["prior"] == "ZeroShotHead"
    assert version.metrics["evaluation"] == "holdout" and version.metrics["evaluated_on"] == 6
    assert set(version.metrics["per_class"]) <= set(new_names)
    answer = admin_api.post(f"/v2/models/{model_id}/inference", {"texts": [FEE_TEXT]}).json()
    assert answer["version"] == 3 and set(answer["predictions"][0]["scores"]) == set(new_names)
    assert sorted(Record.objects.filter(dataset=ready_dataset, label="exchange_rate").values_list("id", "split")) == rates
    # The evaluation pages of both versions (different label sets) still answer.
    for number in (2, 3):
        assert lead_api.get(f"/v2/models/{model_id}/versions/{number}/threshold", {"min_precision": 0.9}).status_code == 200
    assert_error(lead_api.get(f"/v2/models/{model_id}/compare", {"a": 2, "b": 3}), 400, "INVALID_FIELD")


def test_trained_model_without_labels_to_train_on_skips_the_retrain(lead_api, trained):
    model_id = trained.id
    # Only the removed labels' records were labeled: nothing in the new set to train on.
    response = patch(lead_api, model_id, {"labels": [NEW_LABEL]})
    assert response.status_code == 200, response.content
    assert response.json()["labels"] == [NEW_LABEL["name"]] and response.json()["version"] == 2
    assert not Job.objects.filter(model_id=model_id, kind=JobKind.TRAIN, status=JobStatus.QUEUED).exists()
    assert AuditEvent.objects.get(action="model.labels").details["retrain_job_id"] is None
    # Version 2 (4 labels) still ranks the queue of a model that now has 1.
    stats = queue_recompute(model=ClassificationModel.objects.get(pk=model_id))
    assert stats.version == 2 and stats.written > 0


def test_labeling_page_after_a_label_change(lead_user, lead_api, trained):
    """The page shows the current labels with their keys; a queued prediction of a removed label is not offered."""
    model_id = trained.id
    queue_recompute(model=trained)
    new_set = [item for item in LABELS if item["name"] != "exchange_rate"] + [NEW_LABEL]
    assert patch(lead_api, model_id, {"labels": new_set}).status_code == 200
    Recommendation.objects.filter(model_id=model_id).update(predicted_label="exchange_rate")
    client = Client()
    client.force_login(lead_user)
    page = client.get(reverse("label_page", args=[model_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-label="{NEW_LABEL["name"]}" data-key="4"' in html and 'data-label="exchange_rate"' not in html
    assert 'data-predicted=""' in html and "No prediction for this record." in html


# --- the model page's label editor (Django's test client; tests/browser has the Playwright test) --------------

def test_model_page_editor_saves_the_rows_in_order(lead_user, created_model):
    model_id = created_model["id"]
    client = Client()
    client.force_login(lead_user)
    page = client.get(reverse("model_detail", args=[model_id])).content.decode()
    assert 'id="labels-form"' in page and 'data-label-name="exchange_rate" data-records="0"' in page
    rows = [LABELS[2], NEW_LABEL, LABELS[0], LABELS[3]]  # exchange_rate removed, one added, reordered
    response = client.post(reverse("model_labels", args=[model_id]), {
        "label_name": [row["name"] for row in rows] + [""], "label_description": [row["description"] for row in rows] + [""]})
    assert response.status_code == 302
    model = ClassificationModel.objects.get(pk=model_id)
    assert model.labels == [row["name"] for row in rows] and model.latest_version.labels == model.labels
    page = client.get(reverse("model_detail", args=[model_id])).content.decode()
    assert "Labels saved; version 2 classifies with them." in page


def test_model_page_editor_shows_errors_and_saves_nothing(lead_user, annotator_user, created_model):
    model_id = created_model["id"]
    before = snapshot(model_id)
    client = Client()
    client.force_login(lead_user)
    response = client.post(reverse("model_labels", args=[model_id]), {
        "label_name": ["card_arrival", "brand_new", "brand_new"], "label_description": ["", "one", "two"]})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="labels-error"' in html and "duplicate label &#x27;brand_new&#x27;" in html
    assert 'value="brand_new"' in html  # the rows the lead typed are kept
    assert snapshot(model_id) == before
    annotator = Client()
    annotator.force_login(annotator_user)
    assert 'id="labels-form"' not in annotator.get(reverse("model_detail", args=[model_id])).content.decode()
    assert annotator.post(reverse("model_labels", args=[model_id]), {"label_name": ["x"], "label_description": [""]}).status_code == 403
    assert snapshot(model_id) == before


def test_model_page_shows_record_counts_for_the_removal_confirmation(lead_user, lead_api, created_model, ready_dataset):
    model_id = created_model["id"]
    ids = list(Record.objects.filter(dataset=ready_dataset).order_by("row_index").values_list("id", flat=True)[:3])
    label(lead_api, model_id, [(r, "top_up_failed") for r in ids])
    client = Client()
    client.force_login(lead_user)
    page = client.get(reverse("model_detail", args=[model_id])).content.decode()
    assert 'data-label-name="top_up_failed" data-records="3"' in page
    ClassificationModel.objects.filter(pk=model_id).update(status=ModelStatus.ARCHIVED)
    assert 'id="labels-form"' not in client.get(reverse("model_detail", args=[model_id])).content.decode()


def test_edited_descriptions_reach_the_next_training_of_a_trained_model(lead_api, trained, monkeypatch,
                                                                         django_capture_on_commit_callbacks):
    """A trained model gets no new zero-shot version when a description changes; its next training builds the
    prior from the current descriptions, and reuses the stored zero-shot version while nothing changed."""
    from models_app import services
    from models_app.inference import head_for_version

    model_id = trained.id
    builds = []
    real_build = services._zero_shot_build
    monkeypatch.setattr(services, "_zero_shot_build", lambda **kwargs: builds.append(kwargs) or real_build(**kwargs))

    def train_once() -> ModelVersion:
        with django_capture_on_commit_callbacks(execute=True):
            response = lead_api.post(f"/v2/models/{model_id}/train", {"type": "active-learning"})
        assert response.status_code == 202, response.content
        return ClassificationModel.objects.get(pk=model_id).latest_version

    unchanged = train_once()
    assert builds == []  # the stored zero-shot version is the prior
    assert head_for_version(unchanged).prior_head.details["descriptions"] == {
        item["name"]: item["description"] for item in LABELS if item.get("description")}

    new_text = "The customer asks which exchange rate was applied to a payment in another currency"
    response = patch(lead_api, model_id, {"label_descriptions": {"exchange_rate": new_text}})
    assert response.status_code == 200 and response.json()["version"] == unchanged.number
    version = train_once()
    assert len(builds) == 1 and builds[0]["descriptions"]["exchange_rate"] == new_text
    assert head_for_version(version).prior_head.details["descriptions"]["exchange_rate"] == new_text
