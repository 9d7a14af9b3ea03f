"""Celery tasks of the labeling queue: recompute a model's queue, release expired leases."""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from labelf_studio.celery import FollowUpTask, runs_in_worker

from .job_maintenance import job_heartbeat

logger = logging.getLogger("labelf.queue")


@shared_task(base=FollowUpTask, bind=True, acks_late=True, time_limit=900, soft_time_limit=840)
def recompute_queue(self, job_id: int) -> None:
    """Runs a `recommend` job. Safe to run twice: a finished job is left alone, and a recompute only
    rewrites the queue from the newest version, so running it again gives the same queue."""
    with job_heartbeat(job_id, enabled=runs_in_worker(self)):
        _recompute_queue_run(job_id)


def _recompute_queue_run(job_id: int) -> None:
    from .job_maintenance import heartbeat_is_fresh, heartbeat_stamp, job_claimed
    from .models import Job, JobKind, JobStatus
    from .queue import queue_recompute

    with transaction.atomic():
        job = Job.objects.select_for_update(of=("self",)).filter(pk=job_id, kind=JobKind.RECOMMEND).select_related("model").first()
        if job is None or job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return
        if job.status == JobStatus.RUNNING and heartbeat_is_fresh(job):
            return  # a second delivery while a live worker runs it
        if job.model is None:
            Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error="The model was deleted", finished_at=timezone.now())
            return
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, started_at=now, attempts=job.attempts + 1,
                                             heartbeat_at=heartbeat_stamp(job.pk, now))
    job_claimed(job_id)
    try:
        stats = queue_recompute(model=job.model)
    except Exception as exc:
        logger.exception("queue recompute failed", extra={"job_id": job_id})
        Job.objects.filter(pk=job_id).update(status=JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                             finished_at=timezone.now())
        return
    Job.objects.filter(pk=job_id).update(
        status=JobStatus.SUCCEEDED, progress=1.0, finished_at=timezone.now(),
        result={"model_id": job.model_id, "version": stats.version, "pool_size": stats.pool_size,
                "written": stats.written, "kept_leases": stats.kept_leases})


@shared_task(time_limit=60, soft_time_limit=50)
def release_expired_leases() -> int:
    """Every minute (beat): clears leases past their expiry so the queue shows who really holds what."""
    from .queue import leases_release_expired

    return leases_release_expired()
