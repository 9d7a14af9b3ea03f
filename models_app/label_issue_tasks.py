"""Celery task of the possible-label-errors scan (the logic lives in label_issue_services)."""
from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(acks_late=True, time_limit=settings.CELERY_TASK_TIME_LIMIT, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
def scan_label_issues(scan_id: int) -> str:
    """Runs a LabelIssueScan. Idempotent: a finished scan is left alone (see label_issue_scan_run)."""
    from .label_issue_services import label_issue_scan_run

    return label_issue_scan_run(scan_id=scan_id)
