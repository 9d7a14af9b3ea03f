"""GET /v2/models/{id}/recommendations and POST /v2/models/{id}/labels."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import queue_recompute
from models_app.models import ModelStatus
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_user
from tests.training.helpers import fresh_caches, make_dataset, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, truth = random_setup(workspace, n=120)
    model.truth = truth
    # One annotator per record: these tests are about the plain queue (overlap: test_overlap.py).
    model.overlap_share = 0.0
    model.save(update_fields=["overlap_share"])
    queue_recompute(model=model)
    return model


def recommendations(api, model, **params):
    return api.get(f"/v2/models/{model.id}/recommendations", params)


def post_labels(api, model, labels):
    return api.post(f"/v2/models/{model.id}/labels", {"labels": labels})


# --- recommendations -------------------------------------------------------------------------------

def test_recommendations_return_the_leased_head_with_reason_prediction_and_version(annotator_api, annotator_user, model):
    response = recommendations(annotator_api, model, limit=5)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 1
    assert len(body["data"]) == 5
    head = list(Recommendation.objects.filter(model=model).order_by("position")[:5])
    for item, row in zip(body["data"], head):
        assert set(item["record"]) == {"id", "dataset_id", "text", "metadata", "label", "split"}
        assert item["record"]["id"] == row.record_id and item["record"]["label"] is None
        assert item["record"]["text"].startswith("message ") and item["record"]["metadata"]["source"] == "test"
        assert item["reason"] == row.reason in {"uncertain", "diverse", "rare-class", "evaluation"}
        assert item["prediction"] == {"label": row.predicted_label, "confidence": round(row.confidence, 6)}
        assert item["prediction"]["label"] in model.labels
        assert item["score"] == round(row.score, 6)
    scores = [item["score"] for item in body["data"]]
    assert scores == sorted(scores, reverse=True)
    assert Recommendation.objects.filter(model=model, leased_to=annotator_user).count() == 5


def test_recommendations_default_limit_and_bounds(annotator_api, model):
    assert len(recommendations(annotator_api, model).json()["data"]) == 20
    assert_error(recommendations(annotator_api, model, limit=0), 400, "INVALID_FIELD")
    assert_error(recommendations(annotator_api, model, limit=101), 400, "INVALID_FIELD")
    assert_error(recommendations(annotator_api, model, limit="many"), 400, "INVALID_FIELD")


def test_recommendations_of_another_workspace_or_archived_model(other_api, annotator_api, anonymous_api, model):
    assert_error(recommendations(other_api, model), 404, "NOT_FOUND")
    assert_error(recommendations(anonymous_api, model), 401, "UNAUTHORIZED")
    model.__class__.objects.filter(pk=model.pk).update(status=ModelStatus.ARCHIVED)
    assert_error(recommendations(annotator_api, model), 409, "MODEL_ARCHIVED")


def test_two_keys_of_different_users_get_disjoint_records(annotator_api, workspace, model):
    other = ApiClient(make_key(workspace, "annotator", make_user(workspace, "annotator")))
    mine = {item["record"]["id"] for item in recommendations(annotator_api, model, limit=30).json()["data"]}
    theirs = {item["record"]["id"] for item in recommendations(other, model, limit=30).json()["data"]}
    assert len(mine) == len(theirs) == 30 and not mine & theirs


def test_a_key_without_a_user_leases_records_nobody_else_gets(workspace, annotator_api, model):
    from labelf_studio.workspaces.services import api_key_create

    _, secret = api_key_create(workspace=workspace, role="annotator", user=None)
    service = ApiClient(secret)
    held = {item["record"]["id"] for item in recommendations(service, model, limit=10).json()["data"]}
    assert Recommendation.objects.filter(model=model, record_id__in=held, leased_to__isnull=True,
                                         lease_expires_at__isnull=False).count() == 10
    others = {item["record"]["id"] for item in recommendations(annotator_api, model, limit=50).json()["data"]}
    assert not held & others


def middleware_queries(api) -> int:
    """Queries every authenticated /v2 request makes before its handler (key, rate limit, usage)."""
    api.get("/v2/no-such-path")
    with CaptureQueriesContext(connection) as baseline:
        api.get("/v2/no-such-path")
    return len(baseline.captured_queries)


def test_recommendations_query_count_is_pinned(annotator_api, model, django_assert_num_queries):
    fixed = middleware_queries(annotator_api)
    # model; savepoint; claim (SELECT ... FOR UPDATE SKIP LOCKED); lease UPDATE; rows with records; free count; release
    with django_assert_num_queries(fixed + 7):
        recommendations(annotator_api, model, limit=1)
    with django_assert_num_queries(fixed + 7):
        recommendations(annotator_api, model, limit=50)


# --- labels ----------------------------------------------------------------------------------------

def test_labels_are_stored_with_who_when_version_reason_and_duration(annotator_api, annotator_user, model):
    items = recommendations(annotator_api, model, limit=3).json()["data"]
    response = post_labels(annotator_api, model, [
        {"record_id": item["record"]["id"], "label": model.labels[0], "duration_ms": 1500 + i} for i, item in enumerate(items)])
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 3, "labeled_total": 3}
    for i, item in enumerate(items):
        record = Record.objects.get(pk=item["record"]["id"])
        assert record.label == model.labels[0] and record.labeled_at is not None
        annotation = Annotation.objects.get(record=record)
        assert annotation.user == annotator_user and annotation.api_key is not None and annotation.model_id == model.id
        assert annotation.is_current and annotation.duration_ms == 1500 + i
        assert annotation.recommended_by_version == 1 and annotation.reason == item["reason"]
    # Labeled records leave the queue.
    assert not Recommendation.objects.filter(record_id__in=[i["record"]["id"] for i in items]).exists()


def test_relabeling_replaces_the_label_and_keeps_the_history(annotator_api, lead_api, lead_user, model):
    record_id = recommendations(annotator_api, model, limit=1).json()["data"][0]["record"]["id"]
    post_labels(annotator_api, model, [{"record_id": record_id, "label": model.labels[0]}])
    response = post_labels(lead_api, model, [{"record_id": record_id, "label": model.labels[1]}])
    assert response.json() == {"accepted": 1, "labeled_total": 1}
    assert Record.objects.get(pk=record_id).label == model.labels[1]
    history = list(Annotation.objects.filter(record_id=record_id).order_by("created_at", "id"))
    assert [(a.label, a.is_current) for a in history] == [(model.labels[0], False), (model.labels[1], True)]
    assert history[1].user == lead_user and history[1].recommended_by_version is None  # no longer in the queue


def test_double_submission_is_idempotent(annotator_api, model):
    record_id = recommendations(annotator_api, model, limit=1).json()["data"][0]["record"]["id"]
    body = [{"record_id": record_id, "label": model.labels[2]}]
    first = post_labels(annotator_api, model, body).json()
    second = post_labels(annotator_api, model, body).json()
    assert first == second == {"accepted": 1, "labeled_total": 1}
    assert Annotation.objects.filter(record_id=record_id).count() == 1
    # The same record twice in one call is one label.
    other = recommendations(annotator_api, model, limit=1).json()["data"][0]["record"]["id"]
    twice = post_labels(annotator_api, model, [{"record_id": other, "label": model.labels[0]},
                                               {"record_id": other, "label": model.labels[1]}]).json()
    assert twice["labeled_total"] == 2
    assert list(Annotation.objects.filter(record_id=other).values_list("label", flat=True)) == [model.labels[1]]


def test_a_label_for_an_evaluation_sample_puts_the_record_in_the_evaluation_split(annotator_api, model):
    rows = list(Recommendation.objects.filter(model=model).order_by("position"))
    evaluation = next(r for r in rows if r.reason == "evaluation")
    ordinary = next(r for r in rows if r.reason != "evaluation")
    post_labels(annotator_api, model, [{"record_id": evaluation.record_id, "label": model.labels[0]},
                                       {"record_id": ordinary.record_id, "label": model.labels[0]}])
    assert Record.objects.get(pk=evaluation.record_id).split == "evaluation"
    assert Record.objects.get(pk=ordinary.record_id).split == "pool"
    assert Annotation.objects.get(record_id=evaluation.record_id).reason == "evaluation"


def test_a_record_already_in_the_evaluation_split_stays_there(annotator_api, model):
    record = Record.objects.filter(dataset=model.dataset).last()
    Record.objects.filter(pk=record.pk).update(split="evaluation")
    post_labels(annotator_api, model, [{"record_id": record.id, "label": model.labels[1]}])
    record.refresh_from_db()
    assert record.split == "evaluation" and record.label == model.labels[1]


def test_a_label_outside_the_label_set_rejects_the_whole_call(annotator_api, model):
    records = list(Record.objects.filter(dataset=model.dataset)[:2])
    body = assert_error(post_labels(annotator_api, model, [{"record_id": records[0].id, "label": model.labels[0]},
                                                           {"record_id": records[1].id, "label": "Refunds"}]),
                        400, "INVALID_FIELD")
    assert "Refunds" in body["message"]
    assert not Annotation.objects.exists() and not Record.objects.filter(label__isnull=False).exists()


@pytest.mark.parametrize("bad", [
    {"labels": []}, {"labels": "x"}, {"labels": [{"record_id": "1", "label": "billing"}]},
    {"labels": [{"record_id": 1, "label": "billing", "duration_ms": -5}]}, {"labels": [7]},
])
def test_malformed_label_calls_are_400(annotator_api, model, bad):
    assert_error(annotator_api.post(f"/v2/models/{model.id}/labels", bad), 400, "INVALID_FIELD")


def test_missing_fields_and_too_many_labels(annotator_api, model):
    assert_error(annotator_api.post(f"/v2/models/{model.id}/labels", {}), 400, "MISSING_REQUIRED_FIELD")
    assert_error(post_labels(annotator_api, model, [{"label": model.labels[0]}]), 400, "MISSING_REQUIRED_FIELD")
    record = Record.objects.filter(dataset=model.dataset).first()
    too_many = [{"record_id": record.id, "label": model.labels[0]}] * 501
    assert_error(post_labels(annotator_api, model, too_many), 400, "INVALID_FIELD")
    assert not Annotation.objects.exists()


def test_a_record_of_another_dataset_or_workspace_is_404(annotator_api, workspace, other_workspace, model):
    vectors = np.eye(2, 384, dtype=np.float32)
    elsewhere = make_dataset(workspace, texts=["a", "b"], vectors=vectors, name="other dataset")
    foreign = make_dataset(other_workspace, texts=["c", "d"], vectors=vectors, name="foreign")
    own = Record.objects.filter(dataset=model.dataset).first()
    for record in (Record.objects.filter(dataset=elsewhere).first(), Record.objects.filter(dataset=foreign).first()):
        assert_error(post_labels(annotator_api, model, [{"record_id": own.id, "label": model.labels[0]},
                                                        {"record_id": record.id, "label": model.labels[0]}]),
                     404, "NOT_FOUND")
    assert_error(post_labels(annotator_api, model, [{"record_id": 10**9, "label": model.labels[0]}]), 404, "NOT_FOUND")
    assert not Annotation.objects.exists()


def test_labeling_an_archived_model_is_409(annotator_api, model, other_api):
    record = Record.objects.filter(dataset=model.dataset).first()
    assert_error(post_labels(other_api, model, [{"record_id": record.id, "label": model.labels[0]}]), 404, "NOT_FOUND")
    model.__class__.objects.filter(pk=model.pk).update(status=ModelStatus.ARCHIVED)
    assert_error(post_labels(annotator_api, model, [{"record_id": record.id, "label": model.labels[0]}]), 409, "MODEL_ARCHIVED")
    assert not Annotation.objects.exists()


def test_labels_query_count_is_pinned(annotator_api, model, django_assert_num_queries):
    fixed = middleware_queries(annotator_api)
    records = list(Record.objects.filter(dataset=model.dataset).order_by("id").values_list("id", flat=True))
    # model; savepoint; records; current annotations; recommendations; INSERT annotations; UPDATE records;
    # DELETE recommendations; labeled total; release
    with django_assert_num_queries(fixed + 10):
        post_labels(annotator_api, model, [{"record_id": records[0], "label": model.labels[0]}])
    with django_assert_num_queries(fixed + 10):
        post_labels(annotator_api, model, [{"record_id": rid, "label": model.labels[1]} for rid in records[1:11]])
    # Relabeling adds one UPDATE that retires the previous annotations, whatever the batch size.
    with django_assert_num_queries(fixed + 11):
        post_labels(annotator_api, model, [{"record_id": rid, "label": model.labels[2]} for rid in records[0:11]])
