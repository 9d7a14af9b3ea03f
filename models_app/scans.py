"""What the background scans (near-duplicates of a dataset, possible label errors of a model) share."""
from __future__ import annotations

import logging

from django.utils import timezone

from .models import ScanStatus

logger = logging.getLogger("labelf.scans")


def queue_scan(*, task, scan_model, scan_id: int) -> None:
    """Sends `task(scan_id)`. With the broker unreachable the scan, still queued, fails at once with a message
    that says so, instead of waiting for ever (the page polls it; a new request makes a new one)."""
    try:
        task.delay(scan_id)
    except Exception:  # noqa: BLE001 - any failure to send means the same thing to the user
        logger.exception("could not queue %s %s", scan_model.__name__, scan_id)
        scan_model.objects.filter(pk=scan_id, status=ScanStatus.QUEUED).update(
            status=ScanStatus.FAILED, finished_at=timezone.now(),
            error="Could not queue the scan: the task queue is unreachable; try again later")
