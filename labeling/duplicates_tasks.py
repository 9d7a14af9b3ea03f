"""Celery task of the near-duplicate scan (the logic lives in duplicates_services)."""
from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(acks_late=True, time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def scan_duplicates(scan_id: int) -> str:
    """Runs a DuplicateScan. Idempotent: a finished scan is left alone (see duplicate_scan_run)."""
    from .duplicates_services import duplicate_scan_run

    return duplicate_scan_run(scan_id=scan_id)
