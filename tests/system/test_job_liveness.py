"""The pieces that make a killed worker harmless, each at its worst moment, on PostgreSQL without a
worker (fast): the claim (a second delivery while the worker lives does nothing), the heartbeat thread,
the sweeper (re-queue, fail after the last attempt, re-send what the broker lost), and the two writes a
kill can cut off (a version's artifact, a vector chunk)."""
import time
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from labeling import job_maintenance
from labeling.job_maintenance import job_claim, job_heartbeat, jobs_sweep
from labeling.models import Dataset, Job, Record
from labeling.services import dataset_create_from_records, dataset_import_run
from models_app.ml.artifacts import checksum
from models_app.models import ClassificationModel, ModelVersion
from models_app.services import version_create
from models_app.training_services import train_job_run, train_request
from tests.factories import make_workspace
from tests.system.conftest import wait_for
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    """What the sweeper sends, instead of sending it (no worker here)."""
    jobs = []
    monkeypatch.setattr(job_maintenance, "job_send", lambda job: jobs.append((job.id, job.kind)))
    return jobs


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def _labeled_model(workspace) -> ClassificationModel:
    model, truth = random_setup(workspace, n=40)
    for record in Record.objects.filter(dataset_id=model.dataset_id).order_by("row_index")[:20]:
        Record.objects.filter(pk=record.pk).update(label=truth[record.row_index])
    return model


def _import_job(workspace) -> Job:
    dataset = dataset_create_from_records(workspace=workspace, name="tickets",
                                          records=[{"text": f"message {i}"} for i in range(10)])
    return Job.objects.get(dataset=dataset, kind="import")


def test_a_second_delivery_while_the_worker_lives_does_nothing_and_a_dead_ones_job_is_taken_over(fast_job_liveness):
    workspace = make_workspace()
    job = _import_job(workspace)
    Job.objects.filter(pk=job.pk).update(status="running", attempts=1, heartbeat_at=_ago(1))
    assert dataset_import_run(job_id=job.pk) is None  # the live worker's run is left alone
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 1 and not Record.objects.filter(dataset_id=job.dataset_id).exists()

    Job.objects.filter(pk=job.pk).update(heartbeat_at=_ago(60))  # its worker died
    assert dataset_import_run(job_id=job.pk) is not None
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2 and Record.objects.filter(dataset_id=job.dataset_id).count() == 10

    model = _labeled_model(workspace)
    train, _ = train_request(model=model, type="active-learning")
    Job.objects.filter(pk=train.pk).update(status="running", attempts=1, heartbeat_at=_ago(1))
    assert train_job_run(job_id=train.pk) == "done"
    assert not ModelVersion.objects.filter(job=train).exists()
    Job.objects.filter(pk=train.pk).update(heartbeat_at=_ago(60))
    assert train_job_run(job_id=train.pk) == "succeeded"
    assert ModelVersion.objects.filter(job=train).count() == 1


def test_two_claims_at_once_start_the_job_once(fast_job_liveness):
    job = _import_job(make_workspace())
    with job_heartbeat(job.pk, enabled=True):
        assert job_claim(job_id=job.pk) is True
        assert job_claim(job_id=job.pk) is False  # the second delivery sees a live heartbeat
    job.refresh_from_db()
    assert job.attempts == 1


def test_the_heartbeat_beats_while_the_task_runs_and_stops_with_it(fast_job_liveness):
    job = _import_job(make_workspace())
    with job_heartbeat(job.pk, enabled=True):
        assert job_claim(job_id=job.pk)
        first = Job.objects.get(pk=job.pk).heartbeat_at
        later = wait_for(lambda: (lambda j: j.heartbeat_at if j.heartbeat_at > first else None)(Job.objects.get(pk=job.pk)),
                         timeout=10, interval=0.1, message="a heartbeat")
    assert later > first
    stopped = Job.objects.get(pk=job.pk).heartbeat_at
    time.sleep(1.5)  # three heartbeat intervals after the task ended: no beat any more
    assert Job.objects.get(pk=job.pk).heartbeat_at == stopped


def test_the_sweeper_requeues_a_job_whose_worker_died_and_leaves_live_ones_alone(fast_job_liveness, sent):
    workspace = make_workspace()
    model = _labeled_model(workspace)
    dead, _ = train_request(model=model, type="active-learning")
    Job.objects.filter(pk=dead.pk).update(status="running", attempts=1, started_at=_ago(60), heartbeat_at=_ago(30))
    alive = _import_job(workspace)
    Job.objects.filter(pk=alive.pk).update(status="running", attempts=1, started_at=_ago(60), heartbeat_at=_ago(1))
    # Started by an eager call (no heartbeat): alive until the task time limit.
    eager = _import_job(workspace)
    Job.objects.filter(pk=eager.pk).update(status="running", attempts=1, started_at=_ago(60), heartbeat_at=None)

    counts = jobs_sweep()
    assert counts["requeued"] == 1 and counts["failed"] == 0
    assert sent == [(dead.pk, "train")]
    assert Job.objects.get(pk=dead.pk).status == "queued"
    assert {Job.objects.get(pk=alive.pk).status, Job.objects.get(pk=eager.pk).status} == {"running"}
    sent.clear()
    jobs_sweep()
    assert sent == []  # just sent: not sent again until JOB_RESEND_SECONDS pass


def test_a_job_whose_worker_died_on_every_attempt_fails_with_the_reason(fast_job_liveness, sent):
    workspace = make_workspace()
    model = _labeled_model(workspace)
    ClassificationModel.objects.filter(pk=model.pk).update(status="training")
    train, _ = train_request(model=model, type="active-learning")
    Job.objects.filter(pk=train.pk).update(status="running", attempts=3, heartbeat_at=_ago(30),
                                           params={**train.params, "previous_status": "deployed"})
    imported = _import_job(workspace)
    Job.objects.filter(pk=imported.pk).update(status="running", attempts=3, heartbeat_at=_ago(30))

    assert jobs_sweep()["failed"] == 2 and sent == []
    for job in (train, imported):
        job.refresh_from_db()
        assert job.status == "failed" and "stopped 3 times" in job.error and job.finished_at is not None
    model.refresh_from_db()
    assert model.status == "deployed"  # the model is back to what it was; its version keeps serving
    dataset = Dataset.objects.get(pk=imported.dataset_id)
    assert dataset.status == "failed" and "stopped 3 times" in dataset.error


def test_the_sweeper_resends_a_queued_job_the_broker_lost(fast_job_liveness, sent):
    workspace = make_workspace()
    lost = _import_job(workspace)
    Job.objects.filter(pk=lost.pk).update(created_at=_ago(30))
    fresh = _import_job(workspace)
    waiting = _import_job(workspace)
    Job.objects.filter(pk=waiting.pk).update(created_at=_ago(30), heartbeat_at=_ago(1))  # its task rescheduled itself
    assert jobs_sweep()["resent"] == 1
    assert sent == [(lost.pk, "import")]
    assert {job.status for job in Job.objects.filter(pk__in=[lost.pk, fresh.pk, waiting.pk])} == {"queued"}


def test_a_version_write_cut_off_by_a_kill_is_replaced_not_reused(fast_job_liveness):
    from models_app.inference import head_for_version
    from models_app.ml.artifacts import dump_head
    from models_app.services import artifact_path

    model, _ = random_setup(make_workspace(), n=40)
    head = head_for_version(model.latest_version)
    data = dump_head(head)
    # The killed attempt got as far as half of the next version's file (the same bytes, the same name).
    cut_off = artifact_path(model_id=model.pk, number=2, digest=checksum(data))
    default_storage.save(cut_off, ContentFile(data[: len(data) // 2]))
    version = version_create(model=model, head=head, type="describe-and-classify", training_examples=0)
    with default_storage.open(version.artifact_path, "rb") as handle:
        assert checksum(handle.read()) == version.checksum
    directory = version.artifact_path.rsplit("/", 1)[0]
    assert len(default_storage.listdir(directory)[1]) == 2  # versions 1 and 2, nothing else


def test_temporaries_of_a_cut_off_vector_write_are_removed_when_the_embedding_finishes(fast_job_liveness):
    from pathlib import Path

    from labeling.embeddings import vector_chunk_name, vectors_load
    from labeling.services import dataset_embed_chunk

    workspace = make_workspace()
    job = _import_job(workspace)
    embed = dataset_import_run(job_id=job.pk)
    chunk = Path(default_storage.path(vector_chunk_name(job.dataset_id, 0)))
    chunk.parent.mkdir(parents=True, exist_ok=True)
    (chunk.parent / f".{chunk.name}.killed").write_bytes(b"\x93NUMPY half a chunk")
    dataset_embed_chunk(job_id=embed.pk, chunk_index=0)
    assert sorted(p.name for p in chunk.parent.iterdir()) == [chunk.name]
    vectors = vectors_load(dataset_id=job.dataset_id, row_count=10, chunk_size=Dataset.objects.get(pk=job.dataset_id).vector_chunk_size)
    assert vectors.shape == (10, 384) and np.isfinite(vectors).all()
