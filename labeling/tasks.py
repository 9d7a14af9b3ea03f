"""Celery tasks for datasets: they take job ids, re-fetch, and do nothing for a finished job."""
from celery import shared_task

from . import services


@shared_task(name="labeling.dataset_import", acks_late=True)
def dataset_import(job_id: int) -> None:
    """Parses and inserts the file, then fans embedding out: one task per chunk of rows."""
    embed_job = services.dataset_import_run(job_id=job_id)
    if embed_job is not None:
        for chunk_index in services.embed_job_chunks(embed_job):
            dataset_embed_chunk.delay(embed_job.id, chunk_index)


@shared_task(name="labeling.dataset_embed_chunk", acks_late=True)
def dataset_embed_chunk(job_id: int, chunk_index: int) -> None:
    services.dataset_embed_chunk(job_id=job_id, chunk_index=chunk_index)
