"""Celery task of the retraining loop (the logic lives in training_services)."""
from __future__ import annotations

from celery import shared_task
from django.conf import settings

from labelf_studio.celery import FollowUpTask, runs_in_worker


@shared_task(base=FollowUpTask, bind=True, acks_late=True, time_limit=settings.CELERY_TASK_TIME_LIMIT,
             soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def train_model(self, job_id: int) -> str:
    """Runs a train job. Idempotent: a finished job is left alone and a job never writes two versions.

    While another train job of the same model runs, this one reschedules itself instead of waiting
    inside the worker (the contract: a request during a running job is queued after it).
    """
    from labeling.job_maintenance import job_heartbeat, job_waiting

    from .training_services import WAIT_FOR_RUNNING_SECONDS, train_job_run

    with job_heartbeat(job_id, enabled=runs_in_worker(self)):
        outcome = train_job_run(job_id=job_id)
    # Eagerly (tests) a countdown is not honoured and the retry would recurse; the job stays queued.
    if outcome == "wait" and not train_model.app.conf.task_always_eager:
        job_waiting(job_id)  # its message is alive: the sweeper must not send a second one
        train_model.apply_async(args=[job_id], countdown=WAIT_FOR_RUNNING_SECONDS)
    return outcome
