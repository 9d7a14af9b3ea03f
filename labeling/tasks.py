"""Celery tasks for datasets: they take job ids, re-fetch, and do nothing for a finished job.

Inside a worker each task runs its job under a heartbeat (`job_maintenance.job_heartbeat`), so the
stale-job sweeper (`jobs_sweep`, on beat) can tell a job whose worker died from one still at work.
"""
from celery import shared_task

from labelf_studio.celery import FollowUpTask, runs_in_worker

from . import services
from .job_maintenance import job_heartbeat


@shared_task(name="labeling.dataset_import", acks_late=True, bind=True)
def dataset_import(self, job_id: int) -> None:
    """Parses and inserts the file, then fans embedding out: one task per chunk of rows.

    Not a `FollowUpTask`: an upload whose import cannot be queued fails at once (the user still has the file).
    """
    with job_heartbeat(job_id, enabled=runs_in_worker(self)):
        embed_job = services.dataset_import_run(job_id=job_id)
    if embed_job is not None:
        for chunk_index in services.embed_job_chunks(embed_job):
            dataset_embed_chunk.delay(embed_job.id, chunk_index)


@shared_task(name="labeling.dataset_embed_chunk", base=FollowUpTask, acks_late=True, bind=True)
def dataset_embed_chunk(self, job_id: int, chunk_index: int) -> None:
    with job_heartbeat(job_id, enabled=runs_in_worker(self)):
        services.dataset_embed_chunk(job_id=job_id, chunk_index=chunk_index)


@shared_task(name="labeling.jobs_sweep", time_limit=120, soft_time_limit=100)
def jobs_sweep() -> dict:
    """On beat: re-queues jobs whose worker died, fails those that kept dying, re-sends lost queued jobs."""
    from .job_maintenance import jobs_sweep as sweep

    return sweep()
