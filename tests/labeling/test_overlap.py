"""Overlap: a share of the queue goes to N different annotators, never twice to the same one; agreeing
labels finish the record, disagreeing ones put it in conflict (no label: training ignores it)."""
from __future__ import annotations

import pytest

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import QUEUE_SIZE, overlap_rows, queue_recompute
from models_app.models import ClassificationModel
from models_app.training_services import train_job_run, train_request
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_user
from tests.labeling.test_queue_api import middleware_queries
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, truth = random_setup(workspace, n=700)
    model.truth = truth
    queue_recompute(model=model)
    return model


@pytest.fixture
def team(workspace):
    """Three annotators with their own keys."""
    users = [make_user(workspace, "annotator", username=name) for name in ("ann", "bob", "cy")]
    return [(user, ApiClient(make_key(workspace, "annotator", user))) for user in users]


def overlap_ids(model) -> list[int]:
    return list(Recommendation.objects.filter(model=model, required_annotations__gt=1).order_by("position")
                .values_list("record_id", flat=True))


def leased(api, model, limit=100) -> list[int]:
    response = api.get(f"/v2/models/{model.id}/recommendations", {"limit": limit})
    assert response.status_code == 200, response.content
    return [item["record"]["id"] for item in response.json()["data"]]


def label(api, model, record_id, name, **extra):
    response = api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": record_id, "label": name, **extra}]})
    assert response.status_code == 200, response.content
    return response.json()


def test_default_share_is_ten_percent_of_the_queue_for_two_annotators(model):
    assert (model.overlap_share, model.overlap_annotators) == (0.1, 2)
    rows = Recommendation.objects.filter(model=model)
    assert rows.count() == QUEUE_SIZE
    assert rows.filter(required_annotations=2).count() == QUEUE_SIZE // 10
    assert rows.exclude(required_annotations__in=[1, 2]).count() == 0
    # Spread over the queue, not bunched at its head or tail.
    positions = sorted(rows.filter(required_annotations=2).values_list("position", flat=True))
    assert positions[0] < QUEUE_SIZE // 4 and positions[-1] > QUEUE_SIZE * 3 // 4


def test_the_choice_is_deterministic_and_follows_the_settings(model, lead_api):
    first = set(overlap_ids(model))
    queue_recompute(model=model)
    assert set(overlap_ids(model)) == first
    response = lead_api.patch(f"/v2/models/{model.id}", {"overlap_share": 0.3, "overlap_annotators": 3})
    assert response.status_code == 200, response.content
    assert response.json()["overlap_share"] == 0.3 and response.json()["overlap_annotators"] == 3
    model.refresh_from_db()
    queue_recompute(model=model)
    rows = Recommendation.objects.filter(model=model)
    assert rows.filter(required_annotations=3).count() == round(0.3 * rows.count())
    lead_api.patch(f"/v2/models/{model.id}", {"overlap_share": 0})
    model.refresh_from_db()
    queue_recompute(model=model)
    assert not Recommendation.objects.filter(model=model, required_annotations__gt=1).exists()


def test_overlap_rows_helper_picks_exactly_the_share():
    ids = list(range(1000, 3000, 7))
    chosen = overlap_rows(record_ids=ids, share=0.1, salt=5)
    assert chosen.sum() == round(0.1 * len(ids))
    assert (overlap_rows(record_ids=ids, share=0.1, salt=5) == chosen).all()
    assert (overlap_rows(record_ids=ids, share=0.1, salt=6) != chosen).any()  # another model, other records
    assert overlap_rows(record_ids=ids, share=0.0, salt=5).sum() == 0 and overlap_rows(record_ids=[], share=0.5, salt=1).size == 0


@pytest.mark.parametrize("bad", [{"overlap_share": 1.5}, {"overlap_share": -0.1}, {"overlap_share": "10%"},
                                 {"overlap_annotators": 1}, {"overlap_annotators": 6}, {"overlap_annotators": 2.5},
                                 {"overlap_annotators": True}, {"overlap_share": None}])
def test_bad_overlap_settings_are_400_and_change_nothing(model, lead_api, bad):
    assert_error(lead_api.patch(f"/v2/models/{model.id}", {"name": "renamed", **bad}), 400, "INVALID_FIELD")
    model.refresh_from_db()
    assert (model.name, model.overlap_share, model.overlap_annotators) == ("intents", 0.1, 2)


def test_an_annotator_may_not_change_overlap_settings(model, annotator_api):
    assert_error(annotator_api.patch(f"/v2/models/{model.id}", {"overlap_share": 0.5}), 403, "FORBIDDEN")


def test_an_overlap_record_goes_to_a_second_annotator_never_back_to_the_first(model, team):
    (ann, ann_api), (bob, bob_api), (cy, cy_api) = team
    target = overlap_ids(model)[0]
    Recommendation.objects.filter(model=model, record_id=target).update(position=0)  # at the head
    assert leased(ann_api, model, limit=1) == [target]
    result = label(ann_api, model, target, "billing", duration_ms=900)
    # The first label counts at once ...
    assert result["labeled_total"] == 1
    record = Record.objects.get(pk=target)
    assert record.label == "billing" and not record.in_conflict
    # ... and the record waits, unleased, for someone else.
    row = Recommendation.objects.get(model=model, record_id=target)
    assert row.leased_to is None and row.lease_expires_at is None
    for _ in range(3):
        assert target not in leased(ann_api, model)
    assert leased(bob_api, model, limit=1) == [target]
    # Bob holds it now: cy does not get it either.
    assert target not in leased(cy_api, model)
    result = label(bob_api, model, target, "billing")
    assert result["labeled_total"] == 1  # the same record, not a second one
    assert not Recommendation.objects.filter(record_id=target).exists()
    current = Annotation.objects.filter(record_id=target, is_current=True)
    assert sorted(current.values_list("user__username", "label")) == [("ann", "billing"), ("bob", "billing")]
    assert Record.objects.get(pk=target).label == "billing"
    assert target not in leased(cy_api, model)


def test_disagreement_puts_the_record_in_conflict_out_of_every_queue(model, team, lead_api):
    (ann, ann_api), (bob, bob_api), (cy, cy_api) = team
    target = overlap_ids(model)[0]
    label(ann_api, model, target, "billing")
    assert label(bob_api, model, target, "technical")["labeled_total"] == 0
    record = Record.objects.get(pk=target)
    assert record.in_conflict and record.label is None and record.labeled_at is None
    assert not Recommendation.objects.filter(record_id=target).exists()
    assert sorted(Annotation.objects.filter(record_id=target, is_current=True).values_list("label", flat=True)) == \
        ["billing", "technical"]
    queue_recompute(model=model)
    assert not Recommendation.objects.filter(record_id=target).exists()
    assert target not in leased(cy_api, model)
    # Another label through the API is one more opinion, not a way around the review.
    label(cy_api, model, target, "billing")
    record.refresh_from_db()
    assert record.in_conflict and record.label is None
    assert Annotation.objects.filter(record_id=target, is_current=True).count() == 3


def test_three_annotators_needed_when_the_model_says_so(model, team, lead_api):
    lead_api.patch(f"/v2/models/{model.id}", {"overlap_annotators": 3})
    model.refresh_from_db()
    queue_recompute(model=model)
    target = overlap_ids(model)[0]
    assert Recommendation.objects.get(model=model, record_id=target).required_annotations == 3
    (_, ann_api), (_, bob_api), (_, cy_api) = team
    label(ann_api, model, target, "cancellation")
    label(bob_api, model, target, "cancellation")
    assert Recommendation.objects.filter(model=model, record_id=target).exists()  # two of three
    assert target not in leased(ann_api, model) and target not in leased(bob_api, model)
    assert target in leased(cy_api, model, limit=100)
    label(cy_api, model, target, "cancellation")
    assert not Recommendation.objects.filter(record_id=target).exists()
    assert Annotation.objects.filter(record_id=target, is_current=True).count() == 3


def test_a_repeated_label_by_the_same_annotator_is_not_a_second_opinion(model, team):
    (_, ann_api), (_, bob_api), _ = team
    target = overlap_ids(model)[0]
    label(ann_api, model, target, "billing")
    label(ann_api, model, target, "billing")
    assert Annotation.objects.filter(record_id=target).count() == 1
    # Changing one's own mind replaces one's own label; the record still waits for a second annotator.
    label(ann_api, model, target, "technical")
    assert list(Annotation.objects.filter(record_id=target, is_current=True).values_list("label", flat=True)) == ["technical"]
    assert Record.objects.get(pk=target).label == "technical"
    assert Recommendation.objects.filter(model=model, record_id=target).exists()


def test_a_key_without_a_user_is_one_annotator_and_never_gets_its_record_back(model, workspace, team):
    from labelf_studio.workspaces.services import api_key_create

    _, secret = api_key_create(workspace=workspace, role="annotator", user=None)
    service = ApiClient(secret)
    target = overlap_ids(model)[0]
    label(service, model, target, "billing")
    Recommendation.objects.filter(model=model, record_id=target).update(position=0)
    assert target not in leased(service, model)
    (_, ann_api), _, _ = team
    assert leased(ann_api, model, limit=1) == [target]
    label(ann_api, model, target, "billing")
    assert not Recommendation.objects.filter(record_id=target).exists()


def test_recompute_keeps_records_waiting_for_their_second_annotator_at_the_head(model, team):
    (_, ann_api), _, _ = team
    waiting = overlap_ids(model)[-1]  # far down the queue
    label(ann_api, model, waiting, "billing")
    queue_recompute(model=model)
    row = Recommendation.objects.get(model=model, record_id=waiting)
    assert row.required_annotations == 2 and row.position == 0


def test_undo_of_an_overlap_label_keeps_the_other_annotators_label(model, team, django_user_model):
    from labeling.queue import annotation_undo_last

    (ann, ann_api), (bob, bob_api), _ = team
    target = overlap_ids(model)[0]
    label(ann_api, model, target, "billing")
    label(bob_api, model, target, "technical")
    assert Record.objects.get(pk=target).in_conflict
    undone = annotation_undo_last(model=model, user=bob)
    assert undone.id == target
    record = Record.objects.get(pk=target)
    assert not record.in_conflict and record.label == "billing"
    row = Recommendation.objects.get(model=model, record_id=target)
    assert row.leased_to_id == bob.id and row.required_annotations == 2
    assert target in leased(bob_api, model)  # his lease: he labels it again
    label(bob_api, model, target, "billing")
    assert not Recommendation.objects.filter(record_id=target).exists()
    assert Record.objects.get(pk=target).label == "billing"


def test_training_uses_agreed_labels_and_ignores_conflicts(model, team):
    (_, ann_api), (_, bob_api), _ = team
    targets = overlap_ids(model)[:8]
    truth = dict(zip(Record.objects.filter(dataset=model.dataset).order_by("row_index").values_list("id", flat=True),
                     model.truth))
    conflict = targets[0]
    for record_id in targets:
        label(ann_api, model, record_id, truth[record_id])
        other = truth[record_id] if record_id != conflict else next(lab for lab in model.labels if lab != truth[record_id])
        label(bob_api, model, record_id, other)
    # Plain records too, so every class has training labels.
    plain = list(Recommendation.objects.filter(model=model, required_annotations=1).order_by("position")
                 .values_list("record_id", flat=True)[:40])
    ann_api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": r, "label": truth[r]} for r in plain]})
    labeled_pool = set(Record.objects.filter(dataset=model.dataset, label__isnull=False, split="pool")
                       .values_list("id", flat=True))
    evaluation = set(Record.objects.filter(dataset=model.dataset, split="evaluation").values_list("id", flat=True))
    assert conflict not in labeled_pool and set(targets[1:]) - evaluation <= labeled_pool
    job, _ = train_request(model=ClassificationModel.objects.get(pk=model.pk), type="active-learning")
    assert train_job_run(job_id=job.id) == "succeeded"
    version = ClassificationModel.objects.get(pk=model.pk).latest_version
    assert version.training_examples == len(labeled_pool)


def test_labeling_an_overlap_record_adds_one_query(model, team, django_assert_num_queries):
    (_, ann_api), _, _ = team
    fixed = middleware_queries(ann_api)
    target = overlap_ids(model)[0]
    # As the plain path (tests/labeling/test_queue_api.py) plus the UPDATE that releases the waiting row's lease.
    with django_assert_num_queries(fixed + 11):
        label(ann_api, model, target, "billing")


def test_the_labeling_page_marks_an_overlap_record(model, team):
    from django.test import Client

    (ann, _), _, _ = team
    target = overlap_ids(model)[0]
    Recommendation.objects.filter(model=model, record_id=target).update(position=0)
    client = Client()
    client.force_login(ann)
    html = client.get(f"/models/{model.id}/label/").content.decode()
    assert f'data-record-id="{target}"' in html and "overlap · 2 annotators" in html
