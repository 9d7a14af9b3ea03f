"""The review queue through /v2: records in conflict with every label and who gave it; a lead's decision is
the final label (training uses it), the annotators' labels stay in the history."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import queue_recompute
from models_app.models import ModelStatus
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)


@pytest.fixture
def model(workspace):
    model, _ = random_setup(workspace, n=200)
    queue_recompute(model=model)
    return model


@pytest.fixture
def annotators(workspace):
    return [ApiClient(make_key(workspace, "annotator", make_user(workspace, "annotator", username=name)))
            for name in ("ann", "bob")]


def make_conflicts(model, annotators, count: int) -> list[int]:
    """Overlap records the two annotators labeled differently (labels[0] vs labels[1])."""
    ann, bob = annotators
    targets = list(Recommendation.objects.filter(model=model, required_annotations__gt=1).order_by("position")
                   .values_list("record_id", flat=True)[:count])
    assert len(targets) == count
    for record_id in targets:
        for api, name in ((ann, model.labels[0]), (bob, model.labels[1])):
            response = api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": record_id, "label": name}]})
            assert response.status_code == 200, response.content
    assert Record.objects.filter(id__in=targets, in_conflict=True).count() == count
    return targets


def decide(api, model, record_id, label):
    return api.post(f"/v2/models/{model.id}/review/{record_id}", {"label": label})


@pytest.mark.django_db
def test_the_review_queue_lists_conflicts_with_every_label_and_who_gave_it(model, annotators, lead_api):
    targets = make_conflicts(model, annotators, 3)
    response = lead_api.get(f"/v2/models/{model.id}/review", {"limit": 2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total"] == 3 and body["has_more"] and len(body["data"]) == 2
    first = body["data"][0]
    assert first["record"]["id"] == min(targets) and first["record"]["label"] is None
    assert [(g["annotator"]["name"], g["label"]) for g in first["labels"]] == [("ann", model.labels[0]), ("bob", model.labels[1])]
    assert all(g["annotator"]["user_id"] and g["created_at"].endswith("Z") for g in first["labels"])
    assert first["votes"] == {model.labels[0]: 1, model.labels[1]: 1}
    rest = lead_api.get(f"/v2/models/{model.id}/review", {"offset": 2}).json()
    assert [c["record"]["id"] for c in rest["data"]] == [max(targets)] and not rest["has_more"]


@pytest.mark.django_db
def test_a_decision_is_the_final_label_and_the_history_keeps_everyones(model, annotators, lead_api, lead_user):
    target = make_conflicts(model, annotators, 1)[0]
    response = decide(lead_api, model, target, model.labels[1])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["label"] == model.labels[1] and body["record"]["label"] == model.labels[1]
    assert body["decided_by"]["name"] == lead_user.username and body["decided_at"].endswith("Z")
    assert sorted(o["annotator"]["name"] for o in body["overruled"]) == ["ann", "bob"]
    record = Record.objects.get(pk=target)
    assert record.label == model.labels[1] and not record.in_conflict and record.labeled_at is not None
    history = list(Annotation.objects.filter(record_id=target).order_by("created_at", "id")
                   .values_list("user__username", "label", "is_current", "adjudicated"))
    assert history == [("ann", model.labels[0], False, False), ("bob", model.labels[1], False, False),
                       (lead_user.username, model.labels[1], True, True)]
    assert lead_api.get(f"/v2/models/{model.id}/review").json()["total"] == 0
    # The decided record is a label like any other: labeled_total and the records list show it.
    records = lead_api.get(f"/v2/datasets/{model.dataset_id}/records", {"labeled": "true"}).json()
    assert target in [r["id"] for r in records["data"]]


@pytest.mark.django_db
def test_deciding_a_record_not_in_conflict_is_409(model, annotators, lead_api):
    plain = Record.objects.filter(dataset=model.dataset).first()
    body = assert_error(decide(lead_api, model, plain.id, model.labels[0]), 409, "CONFLICT")
    assert "not in conflict" in body["message"]
    assert not Annotation.objects.filter(record=plain).exists()


@pytest.mark.django_db
def test_a_second_decision_is_409_naming_the_first(model, annotators, lead_api, workspace):
    target = make_conflicts(model, annotators, 1)[0]
    other_lead = ApiClient(make_key(workspace, "lead", make_user(workspace, "lead", username="lou")))
    assert decide(other_lead, model, target, model.labels[0]).status_code == 200
    body = assert_error(decide(lead_api, model, target, model.labels[1]), 409, "CONFLICT")
    assert "already decided" in body["message"] and repr(model.labels[0]) in body["message"] and "lou" in body["message"]
    assert Record.objects.get(pk=target).label == model.labels[0]
    assert Annotation.objects.filter(record_id=target, adjudicated=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_leads_deciding_at_once_one_wins_and_the_other_sees_it(model, annotators, workspace):
    target = make_conflicts(model, annotators, 1)[0]
    leads = [ApiClient(make_key(workspace, "lead", make_user(workspace, "lead", username=f"lead{i}"))) for i in range(2)]
    barrier = threading.Barrier(2)
    answers = [None, None]

    def run(i):
        try:
            barrier.wait()
            answers[i] = decide(leads[i], model, target, model.labels[i])
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409], [a.content for a in answers]
    winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
    loser = answers[1 - winner]
    body = assert_error(loser, 409, "CONFLICT")
    assert repr(model.labels[winner]) in body["message"] and f"lead{winner}" in body["message"]
    assert Record.objects.get(pk=target).label == model.labels[winner]
    decisions = Annotation.objects.filter(record_id=target, adjudicated=True)
    assert decisions.count() == 1 and decisions.get().is_current
    assert Annotation.objects.filter(record_id=target, adjudicated=False).count() == 2  # nothing lost


@pytest.mark.django_db
def test_annotators_may_not_review_and_other_workspaces_see_nothing(model, annotators, annotator_api, other_api):
    target = make_conflicts(model, annotators, 1)[0]
    assert_error(annotator_api.get(f"/v2/models/{model.id}/review"), 403, "FORBIDDEN")
    assert_error(decide(annotator_api, model, target, model.labels[0]), 403, "FORBIDDEN")
    assert_error(annotator_api.get(f"/v2/models/{model.id}/agreement"), 403, "FORBIDDEN")
    assert_error(other_api.get(f"/v2/models/{model.id}/review"), 404, "NOT_FOUND")
    assert_error(decide(other_api, model, target, model.labels[0]), 404, "NOT_FOUND")
    assert Record.objects.get(pk=target).in_conflict


@pytest.mark.django_db
def test_decision_input_errors(model, annotators, lead_api, workspace):
    target = make_conflicts(model, annotators, 1)[0]
    assert_error(lead_api.post(f"/v2/models/{model.id}/review/{target}", {}), 400, "MISSING_REQUIRED_FIELD")
    assert_error(decide(lead_api, model, target, "Refunds"), 400, "INVALID_FIELD")
    assert_error(decide(lead_api, model, target, 3), 400, "INVALID_FIELD")
    assert_error(decide(lead_api, model, 10**9, model.labels[0]), 404, "NOT_FOUND")
    assert_error(decide(lead_api, model, 10**30, model.labels[0]), 404, "NOT_FOUND")
    elsewhere, _ = random_setup(workspace, n=10)
    foreign_record = Record.objects.filter(dataset=elsewhere.dataset).first()
    assert_error(decide(lead_api, model, foreign_record.id, model.labels[0]), 404, "NOT_FOUND")
    model.__class__.objects.filter(pk=model.pk).update(status=ModelStatus.ARCHIVED)
    assert_error(decide(lead_api, model, target, model.labels[0]), 409, "MODEL_ARCHIVED")
    assert Record.objects.get(pk=target).in_conflict


@pytest.mark.django_db
def test_training_takes_the_decided_label(model, annotators, lead_api):
    from models_app.models import ClassificationModel
    from models_app.training_services import train_job_run, train_request

    target = make_conflicts(model, annotators, 1)[0]
    Record.objects.filter(pk=target).update(split="pool")
    decide(lead_api, model, target, model.labels[2])
    job, _ = train_request(model=ClassificationModel.objects.get(pk=model.pk), type="active-learning")
    assert train_job_run(job_id=job.id) == "succeeded"
    version = ClassificationModel.objects.get(pk=model.pk).latest_version
    assert version.training_examples == 1 and version.details["training"]["per_class"][model.labels[2]] == 1


@pytest.mark.django_db
def test_the_review_list_query_count_is_pinned(model, annotators, lead_api, django_assert_num_queries):
    from tests.labeling.test_queue_api import middleware_queries

    make_conflicts(model, annotators, 6)
    fixed = middleware_queries(lead_api)
    # model; count; the page of records; their current labels with users and keys (one query, any page size)
    with django_assert_num_queries(fixed + 4):
        assert len(lead_api.get(f"/v2/models/{model.id}/review", {"limit": 2}).json()["data"]) == 2
    with django_assert_num_queries(fixed + 4):
        assert len(lead_api.get(f"/v2/models/{model.id}/review", {"limit": 6}).json()["data"]) == 6
