"""The recommendation queue and its leases (services; the API is in test_queue_api.py)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Job, JobKind, JobStatus, Record, Recommendation
from labeling.queue import (QUEUE_SIZE, labels_submit, leases_release_expired, queue_recompute, queue_request_recompute,
                            recommendation_skip, recommendations_lease)
from labeling.queue_tasks import recompute_queue, release_expired_leases
from tests.factories import make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, _ = random_setup(workspace, n=300)
    # One annotator per record: these tests are about the plain queue (overlap: test_overlap.py).
    model.overlap_share = 0.0
    model.save(update_fields=["overlap_share"])
    queue_recompute(model=model)
    return model


def ids(lease):
    return [item.record_id for item in lease.items]


def test_recompute_writes_a_ranked_queue_from_the_newest_version(model):
    rows = list(Recommendation.objects.filter(model=model).order_by("position"))
    assert len(rows) == min(QUEUE_SIZE, 300)
    assert [r.position for r in rows] == list(range(1, len(rows) + 1))
    assert {r.version for r in rows} == {1}
    assert {r.reason for r in rows} <= {"uncertain", "diverse", "rare-class", "evaluation"}
    assert any(r.reason == "evaluation" for r in rows)  # evaluation_share 0.1 of the queue
    assert all(r.predicted_label in model.labels and 0 < r.confidence <= 1 for r in rows)
    assert all(r.leased_to_id is None for r in rows)


def test_two_annotators_never_get_the_same_record(model, workspace):
    anna, ben = make_user(workspace, "annotator"), make_user(workspace, "annotator")
    first = recommendations_lease(model=model, user=anna, limit=10)
    second = recommendations_lease(model=model, user=ben, limit=10)
    assert len(first.items) == len(second.items) == 10
    assert not set(ids(first)) & set(ids(second))
    # The queue's head goes to the first caller, in queue order.
    assert ids(first) == list(Recommendation.objects.filter(model=model).order_by("position")
                              .values_list("record_id", flat=True)[:10])
    # Asking again returns the caller's own live leases first, extended.
    again = recommendations_lease(model=model, user=anna, limit=10)
    assert ids(again) == ids(first)
    assert Recommendation.objects.filter(model=model, leased_to=anna).count() == 10


def test_a_lease_expires_and_the_record_goes_to_the_next_annotator(model, workspace, settings):
    anna, ben = make_user(workspace, "annotator"), make_user(workspace, "annotator")
    start = timezone.now()
    leased = recommendations_lease(model=model, user=anna, limit=3, now=start)
    within = recommendations_lease(model=model, user=ben, limit=3, now=start + timedelta(seconds=settings.LABELF["LEASE_SECONDS"] - 5))
    assert not set(ids(leased)) & set(ids(within))
    after = recommendations_lease(model=model, user=make_user(workspace), limit=3,
                                  now=start + timedelta(seconds=settings.LABELF["LEASE_SECONDS"] + 1))
    assert ids(after) == ids(leased)


def test_the_periodic_task_clears_expired_leases(model, workspace):
    anna = make_user(workspace, "annotator")
    recommendations_lease(model=model, user=anna, limit=4, now=timezone.now() - timedelta(hours=1))
    recommendations_lease(model=model, user=anna, limit=6)  # 4 expired ones re-leased + 2 more: all live
    stale = Recommendation.objects.filter(model=model, leased_to=anna).order_by("-position").first()
    Recommendation.objects.filter(pk=stale.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert release_expired_leases() == 1
    stale.refresh_from_db()
    assert stale.leased_to_id is None and stale.lease_expires_at is None
    assert Recommendation.objects.filter(model=model, leased_to=anna).count() == 5
    assert leases_release_expired() == 0


def test_skip_releases_the_lease_and_sends_the_record_to_the_back(model, workspace):
    anna, ben = make_user(workspace, "annotator"), make_user(workspace, "annotator")
    first = recommendations_lease(model=model, user=anna, limit=2)
    skipped = first.items[0].record_id
    assert recommendation_skip(model=model, user=anna, record_id=skipped)
    row = Recommendation.objects.get(model=model, record_id=skipped)
    assert row.leased_to_id is None and row.lease_expires_at is None
    assert row.position == Recommendation.objects.filter(model=model).order_by("-position").first().position
    # Anna's next draw does not hand the skipped record straight back to her.
    assert skipped not in ids(recommendations_lease(model=model, user=anna, limit=3))
    # Someone else's lease cannot be skipped.
    assert not recommendation_skip(model=model, user=ben, record_id=first.items[1].record_id)


def test_labeled_records_are_not_handed_out_again(model, workspace):
    anna = make_user(workspace, "annotator")
    lease = recommendations_lease(model=model, user=anna, limit=5)
    labels_submit(model=model, user=anna, labels=[{"record_id": rid, "label": model.labels[0]} for rid in ids(lease)])
    assert not Recommendation.objects.filter(record_id__in=ids(lease)).exists()
    later = recommendations_lease(model=model, user=anna, limit=50)
    assert not set(ids(later)) & set(ids(lease))


def test_recompute_keeps_live_leases_and_skips_labeled_records(model, workspace):
    anna = make_user(workspace, "annotator")
    held = ids(recommendations_lease(model=model, user=anna, limit=3))
    labeled = Record.objects.filter(dataset=model.dataset).exclude(id__in=held).first()
    Record.objects.filter(pk=labeled.pk).update(label=model.labels[1])
    stats = queue_recompute(model=model)
    assert stats.kept_leases == 3
    assert set(Recommendation.objects.filter(model=model, leased_to=anna).values_list("record_id", flat=True)) == set(held)
    assert not Recommendation.objects.filter(model=model, record=labeled).exists()
    assert Recommendation.objects.filter(model=model).count() == 300 - 1  # every unlabeled record fits the queue


def test_a_low_queue_requests_one_recompute(model, workspace, django_capture_on_commit_callbacks):
    Recommendation.objects.filter(model=model, position__gt=40).delete()
    anna = make_user(workspace, "annotator")
    with django_capture_on_commit_callbacks(execute=True):
        recommendations_lease(model=model, user=anna, limit=1)
        recommendations_lease(model=model, user=anna, limit=2)  # absorbed by the first request
    jobs = Job.objects.filter(model=model, kind=JobKind.RECOMMEND)
    assert jobs.count() == 1
    job = jobs.get()
    assert job.status == JobStatus.SUCCEEDED and job.result["written"] == 300 - 2
    assert Recommendation.objects.filter(model=model).count() == 300
    # Running the finished job again changes nothing.
    recompute_queue(job.id)
    assert Job.objects.get(pk=job.pk).finished_at == job.finished_at


def test_recompute_request_is_absorbed_by_a_queued_job(model):
    first = queue_request_recompute(model=model)
    assert first is not None and first.status == JobStatus.QUEUED
    assert queue_request_recompute(model=model) is None


def _empty_queue_with_pending_recompute(model, status=JobStatus.QUEUED):
    Recommendation.objects.filter(model=model).delete()
    return Job.objects.create(workspace_id=model.workspace_id, model=model, dataset_id=model.dataset_id,
                              kind=JobKind.RECOMMEND, status=status, params={"model_id": model.id})


def test_an_empty_queue_being_recomputed_is_waited_for_not_answered_empty(model, workspace, monkeypatch):
    """Right after a model is created its queue does not exist yet: the call waits for the pending recompute
    (here the 'worker' finishes during the first pause) and hands out its head."""
    import labeling.queue as queue_module

    job = _empty_queue_with_pending_recompute(model, status=JobStatus.RUNNING)
    pauses = []

    def worker_finishes(seconds):
        pauses.append(seconds)
        queue_recompute(model=model)
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)

    monkeypatch.setattr(queue_module.time, "sleep", worker_finishes)
    lease = recommendations_lease(model=model, user=make_user(workspace, "annotator"), limit=5, wait_seconds=15)
    assert len(lease.items) == 5 and len(pauses) == 1


def test_nothing_pending_answers_at_once_and_a_recompute_that_never_ends_is_waited_for_only_so_long(
        model, workspace, monkeypatch):
    import labeling.queue as queue_module

    # A recompute just finished and wrote nothing (every record labeled, say): it also absorbs the recompute
    # the empty queue requests, so nothing is pending and the empty answer is the truth.
    job = _empty_queue_with_pending_recompute(model, status=JobStatus.SUCCEEDED)
    pauses = []
    monkeypatch.setattr(queue_module.time, "sleep", pauses.append)
    assert recommendations_lease(model=model, user=make_user(workspace, "annotator"), limit=5, wait_seconds=15).items == []
    assert pauses == []

    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)  # a worker that never picks it up
    clock = iter(range(0, 1000, 5))  # each look at the clock moves it 5 s
    monkeypatch.setattr(queue_module.time, "monotonic", lambda: next(clock))
    assert recommendations_lease(model=model, user=make_user(workspace, "annotator"), limit=5, wait_seconds=15).items == []
    assert len(pauses) == 2  # looked at 5 s and 10 s, gave up at 15 s
