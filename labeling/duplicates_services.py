"""Near-duplicate groups of a dataset: computing them (cached per dataset and threshold), excluding the
duplicates from the recommendation pool (reversibly), and labeling a whole group at once.

The groups come from labeling/duplicates.py over the dataset's stored vectors and texts; a `DuplicateScan`
row (models_app) caches them: a dataset's records never change after import, so a finished scan stays
valid. The computation runs in a Celery task (`duplicates_tasks.scan_duplicates`), as a million-record
dataset takes a while.
"""
from __future__ import annotations

import logging
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field

from .duplicates import DEFAULT_THRESHOLD, MIN_THRESHOLD, find_duplicate_groups, text_key
from .models import DatasetStatus, Record, Recommendation

logger = logging.getLogger("labelf.duplicates")

_PROGRESS_EVERY_SECONDS = 0.5
LABELS_PER_CALL = 500  # labels_submit's limit per call


def parse_threshold(raw) -> Decimal:
    """The threshold as the cache key: two decimals between MIN_THRESHOLD and 1 (None: the default)."""
    if raw is None or raw == "":
        return Decimal(str(DEFAULT_THRESHOLD))
    if isinstance(raw, bool):
        raise invalid_field("threshold: expected a number")
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise invalid_field(f"threshold: expected a number between {MIN_THRESHOLD} and 1") from None
    if not value.is_finite() or not Decimal(str(MIN_THRESHOLD)) <= value <= 1:
        raise invalid_field(f"threshold: expected a number between {MIN_THRESHOLD} and 1 (cosine similarity)")
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _check_ready(dataset) -> None:
    if dataset.status == DatasetStatus.PROCESSING:
        raise ApiError(409, "DATASET_PROCESSING", "The dataset is still processing an import; retry when it is ready")
    if dataset.status != DatasetStatus.READY:
        raise ApiError(409, "CONFLICT", "The dataset's import failed: it has no records to compare")


def _queue_scan(scan_id: int) -> None:
    from models_app.models import DuplicateScan
    from models_app.scans import queue_scan

    from .duplicates_tasks import scan_duplicates

    queue_scan(task=scan_duplicates, scan_model=DuplicateScan, scan_id=scan_id)


def duplicate_scan_request(*, dataset, threshold: Decimal, retry_failed: bool = False):
    """The dataset's scan at this threshold: the cached one, or one queued now when there is none yet or the
    cached one is stale (records were appended since). A failed scan is returned as it is (its `error` says
    why) unless `retry_failed`. Returns (scan, queued_now)."""
    from models_app.models import DuplicateScan, ScanStatus

    _check_ready(dataset)
    scan = DuplicateScan.objects.filter(dataset=dataset, threshold=threshold).first()
    if scan is not None:
        stale = scan.status == ScanStatus.SUCCEEDED and scan.record_count != dataset.record_count
        if scan.status in (ScanStatus.QUEUED, ScanStatus.RUNNING) or (scan.status == ScanStatus.SUCCEEDED and not stale) \
                or (scan.status == ScanStatus.FAILED and not retry_failed):
            return scan, False
    try:
        with transaction.atomic():
            if scan is None:
                scan = DuplicateScan.objects.create(dataset=dataset, threshold=threshold)
            else:
                # Conditional on the status read above, so two requests never queue the same scan twice.
                requeued = DuplicateScan.objects.filter(pk=scan.pk, status=scan.status).update(
                    status=ScanStatus.QUEUED, progress=0.0, error=None, started_at=None, finished_at=None,
                    groups=[], duplicate_records=0, method="")
                scan.refresh_from_db()
                if not requeued:
                    return scan, False
            scan_id = scan.id
            transaction.on_commit(lambda: _queue_scan(scan_id))
    except IntegrityError:  # another request created it at the same moment: that one is queued
        return DuplicateScan.objects.get(dataset=dataset, threshold=threshold), False
    return scan, True


def duplicate_scan_run(*, scan_id: int, max_threads: int = 1) -> str:
    """Runs a scan. Safe to run twice: a finished scan is left alone, and a rerun computes the same groups."""
    from labeling.embeddings import vectors_load
    from models_app.models import DuplicateScan, ScanStatus

    with transaction.atomic():
        scan = DuplicateScan.objects.select_for_update(of=("self",)).select_related("dataset").filter(pk=scan_id).first()
        if scan is None or scan.status in (ScanStatus.SUCCEEDED, ScanStatus.FAILED):
            return "skipped"
        DuplicateScan.objects.filter(pk=scan.pk).update(status=ScanStatus.RUNNING, started_at=timezone.now(),
                                                        attempts=scan.attempts + 1, progress=0.0)
    dataset = scan.dataset
    last_write = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last_write[0] >= _PROGRESS_EVERY_SECONDS:
            last_write[0] = now
            DuplicateScan.objects.filter(pk=scan_id).update(progress=round(0.1 + 0.85 * fraction, 4))

    try:
        # Streamed, so a million texts are never all held at once: only their 8-byte keys are.
        ids = np.empty(dataset.record_count, dtype=np.int64)
        keys = np.empty(dataset.record_count, dtype=np.int64)
        seen = 0
        for record_id, row, text in (Record.objects.filter(dataset=dataset).order_by("row_index")
                                     .values_list("id", "row_index", "text").iterator(chunk_size=5000)):
            ids[row], keys[row] = record_id, text_key(text)
            seen += 1
        if seen != dataset.record_count:
            raise ValueError(f"the dataset has {seen} records, expected {dataset.record_count}")
        DuplicateScan.objects.filter(pk=scan_id).update(progress=0.1)
        vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
        found = find_duplicate_groups(vectors=vectors, threshold=float(scan.threshold), text_keys=keys,
                                      max_threads=max_threads, progress=progress)
    except Exception as exc:
        logger.exception("duplicate scan failed", extra={"scan_id": scan_id})
        DuplicateScan.objects.filter(pk=scan_id).update(status=ScanStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                                        finished_at=timezone.now())
        return "failed"
    DuplicateScan.objects.filter(pk=scan_id).update(
        status=ScanStatus.SUCCEEDED, progress=1.0, method=found.method, duplicate_records=found.duplicate_rows,
        groups=[ids[group].tolist() for group in found.groups], record_count=dataset.record_count, finished_at=timezone.now())
    return "succeeded"


def _succeeded_scan(*, dataset, threshold: Decimal):
    from models_app.models import DuplicateScan, ScanStatus

    scan = DuplicateScan.objects.filter(dataset=dataset, threshold=threshold).first()
    if scan is None or scan.status != ScanStatus.SUCCEEDED:
        raise ApiError(409, "CONFLICT", f"No finished duplicate scan at threshold {threshold}: "
                                        "GET the duplicates first and wait until their status is succeeded")
    return scan


def _chosen_groups(scan, groups) -> list[list[int]]:
    if groups is None:
        return scan.groups
    if not isinstance(groups, list) or not groups:
        raise invalid_field("groups: expected a non-empty list of group indices")
    for value in groups:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(scan.groups):
            raise invalid_field(f"groups: expected group indices between 0 and {len(scan.groups) - 1}")
    return [scan.groups[i] for i in sorted(set(groups))]


def _batches(ids: list[int], size: int = 5000):
    # A bounded IN list per statement: a large dataset's groups can hold more ids than SQLite takes at once.
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def duplicates_exclude(*, dataset, threshold: Decimal, exclude=True, groups=None, user=None, api_key=None) -> dict:
    """Keeps one record per group in the recommendation pool (the group's first labeled record, else its first
    record) and excludes the others; `exclude=False` puts every record of the groups back. `groups` (indices
    into the scan's groups) limits it to those groups. Queue rows of newly excluded records are removed, except
    ones an annotator holds right now."""
    from labelf_studio.workspaces.services import audit_record

    if not isinstance(exclude, bool):
        raise invalid_field("exclude: expected true or false")
    scan = _succeeded_scan(dataset=dataset, threshold=threshold)
    chosen = _chosen_groups(scan, groups)
    member_ids = [record_id for group in chosen for record_id in group]
    with transaction.atomic():
        if not exclude:
            restored = sum(Record.objects.filter(dataset=dataset, id__in=ids, excluded=True).update(excluded=False)
                           for ids in _batches(member_ids))
            result = {"excluded": 0, "restored": restored, "groups": len(chosen)}
        else:
            labeled = {record_id for ids in _batches(member_ids) for record_id in Record.objects.filter(
                dataset=dataset, id__in=ids, label__isnull=False).values_list("id", flat=True)}
            drop: list[int] = []
            for group in chosen:
                keep = next((record_id for record_id in group if record_id in labeled), group[0])
                drop.extend(record_id for record_id in group if record_id != keep)
            # Set on every member but the kept one: the flag only matters to the unlabeled pool, and a labeled
            # duplicate whose label is withdrawn later stays out of the pool too.
            now = timezone.now()
            excluded = 0
            for ids in _batches(drop):
                excluded += Record.objects.filter(dataset=dataset, id__in=ids, excluded=False).update(excluded=True)
                Recommendation.objects.filter(record_id__in=ids).exclude(lease_expires_at__gte=now).delete()
            result = {"excluded": excluded, "restored": 0, "groups": len(chosen)}
        audit_record(workspace=dataset.workspace, action="dataset.duplicates_exclude" if exclude else "dataset.duplicates_include",
                     target=f"dataset {dataset.id} ({dataset.name})", actor=user, actor_key=api_key,
                     details={"threshold": str(threshold), **result})
    return result


def duplicates_group_label(*, model, dataset, threshold: Decimal, group: int, label, user=None, api_key=None) -> int:
    """Gives `label` (one of `model`'s labels) to every record of one group, through labels_submit (history kept).
    Returns how many records the group has."""
    from .queue import labels_submit

    if model.dataset_id != dataset.id:
        raise invalid_field("model: expected a model of this dataset")
    scan = _succeeded_scan(dataset=dataset, threshold=threshold)
    (record_ids,) = _chosen_groups(scan, [group])
    # labels_submit takes at most 500 labels and validates all before writing: check the label once here so
    # that a large group is not half labeled by a bad label.
    if not isinstance(label, str) or label not in model.labels:
        raise invalid_field(f"label: {label!r} is not one of the model's labels")
    for start in range(0, len(record_ids), LABELS_PER_CALL):
        labels_submit(model=model, labels=[{"record_id": record_id, "label": label}
                                           for record_id in record_ids[start:start + LABELS_PER_CALL]],
                      user=user, api_key=api_key)
    return len(record_ids)
