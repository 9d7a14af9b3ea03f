"""Possible label errors: scanning a model's labeled records, and accepting or dismissing what a scan found.

A scan (`LabelIssueScan`, run by `label_issue_tasks.scan_label_issues`) scores every record whose current
label is in the model's label set with out-of-fold predictions (models_app/ml/label_errors.py) and writes
the flagged ones as open `LabelIssue` rows, most likely wrong first. Accepting an issue relabels the record
through `labeling.queue.labels_submit`, the one way labels are stored (the earlier label stays in the
record's annotation history); dismissing it keeps the label and keeps that record out of later scans for as
long as it has that label.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from django.db import transaction
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field
from labeling.models import DatasetStatus, Record

from .models import ClassificationModel, LabelIssue, LabelIssueScan, LabelIssueStatus, ModelStatus, ScanStatus
from .scans import queue_scan

logger = logging.getLogger("labelf.label_issues")

ACTIONS = ("accept", "dismiss")
_PROGRESS_EVERY_SECONDS = 0.5


def _check_can_scan(model: ClassificationModel) -> None:
    if model.status == ModelStatus.ARCHIVED:
        raise ApiError(409, "MODEL_ARCHIVED", "This model is archived; deploy it again to review its labels")
    if model.dataset.status == DatasetStatus.PROCESSING:
        raise ApiError(409, "DATASET_PROCESSING", "The dataset's import is still running; scan its labels once it is ready")
    if model.dataset.status != DatasetStatus.READY:
        raise ApiError(409, "CONFLICT", "The dataset's import failed: there are no labels to check")


def _queue_scan(scan_id: int) -> None:
    from .label_issue_tasks import scan_label_issues

    queue_scan(task=scan_label_issues, scan_model=LabelIssueScan, scan_id=scan_id)


def label_issue_scan_request(*, model: ClassificationModel, user=None) -> tuple[LabelIssueScan, bool]:
    """Queues a scan of the model's labels; a scan of this model still queued or running is returned instead
    (created False), so repeated clicks or calls never stack scans."""
    _check_can_scan(model)
    with transaction.atomic():
        # The model's row lock serialises two requests, so only one of them creates a scan.
        ClassificationModel.objects.select_for_update().filter(pk=model.pk).first()
        pending = (LabelIssueScan.objects.filter(model=model, status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING])
                   .order_by("-created_at", "-id").first())
        if pending is not None:
            return pending, False
        scan = LabelIssueScan.objects.create(model=model, created_by=user if getattr(user, "is_authenticated", False) else None)
        transaction.on_commit(lambda: _queue_scan(scan.id))
    return scan, True


def label_issue_scan_run(*, scan_id: int, max_threads: int = 1) -> str:
    """Runs a scan. Safe to run twice: a finished scan is left alone, and a rerun of a scan whose worker died
    replaces the model's open issues exactly as the first run would have."""
    with transaction.atomic():
        scan = (LabelIssueScan.objects.select_for_update(of=("self",)).select_related("model", "model__dataset")
                .filter(pk=scan_id).first())
        if scan is None or scan.status in (ScanStatus.SUCCEEDED, ScanStatus.FAILED):
            return "skipped"
        LabelIssueScan.objects.filter(pk=scan.pk).update(status=ScanStatus.RUNNING, started_at=timezone.now(),
                                                         attempts=scan.attempts + 1, progress=0.0)
    try:
        result = _scan(scan=scan, max_threads=max_threads)
    except Exception as exc:
        logger.exception("label-issue scan failed", extra={"scan_id": scan_id})
        LabelIssueScan.objects.filter(pk=scan_id).update(status=ScanStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                                         finished_at=timezone.now())
        return "failed"
    LabelIssueScan.objects.filter(pk=scan_id).update(status=ScanStatus.SUCCEEDED, progress=1.0, result=result,
                                                     finished_at=timezone.now())
    return "succeeded"


def _scan(*, scan: LabelIssueScan, max_threads: int) -> dict:
    from labeling.embeddings import vectors_load

    from .ml.label_errors import find_label_issues

    model = scan.model
    dataset = model.dataset
    labels = list(model.labels)
    index = {label: i for i, label in enumerate(labels)}
    labeled = list(Record.objects.filter(dataset_id=dataset.id, label__in=labels).order_by("row_index")
                   .values_list("id", "row_index", "label"))
    record_ids = [record_id for record_id, _, _ in labeled]
    y = np.fromiter((index[label] for _, _, label in labeled), dtype=np.int64, count=len(labeled))
    if labeled:
        rows = np.fromiter((row for _, row, _ in labeled), dtype=np.int64, count=len(labeled))
        vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)[rows]
    else:
        vectors = np.zeros((0, 1), dtype=np.float32)
    last_write = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last_write[0] >= _PROGRESS_EVERY_SECONDS or fraction >= 1.0:
            last_write[0] = now
            LabelIssueScan.objects.filter(pk=scan.pk).update(progress=round(0.05 + 0.9 * fraction, 4))

    report = find_label_issues(vectors=vectors, y=y, n_classes=len(labels), max_threads=max_threads, progress=progress)

    with transaction.atomic():
        # Read inside the write: a record relabeled while the scan ran is not raised with its old label.
        flagged_ids = [record_ids[issue.row] for issue in report.issues]
        current = dict(Record.objects.filter(id__in=flagged_ids).values_list("id", "label"))
        dismissed = set(LabelIssue.objects.filter(model=model, status=LabelIssueStatus.DISMISSED, record_id__in=flagged_ids)
                        .values_list("record_id", "given_label"))
        LabelIssue.objects.filter(model=model, status=LabelIssueStatus.OPEN).delete()
        issues = []
        for issue in report.issues:
            record_id, given = record_ids[issue.row], labels[issue.given]
            if current.get(record_id) != given or (record_id, given) in dismissed:
                continue
            issues.append(LabelIssue(model=model, scan=scan, record_id=record_id, rank=len(issues) + 1, given_label=given,
                                     suggested_label=labels[issue.suggested], score=round(issue.score, 6)))
        LabelIssue.objects.bulk_create(issues, batch_size=500)
    return {
        "labeled": report.labeled, "checked": report.checked, "flagged": len(report.issues), "open": len(issues),
        "skipped_as_dismissed_or_relabeled": len(report.issues) - len(issues),
        "out_of_fold_accuracy": None if report.out_of_fold_accuracy is None else round(report.out_of_fold_accuracy, 4),
        "temperature": round(report.temperature, 4), "folds": report.folds, "method": f"cleanlab {report.filter_by}",
        "skipped_reason": report.skipped_reason,
    }


def label_issue_resolve(*, issue: LabelIssue, action, label=None, user=None, api_key=None) -> LabelIssue:
    """Accepts (relabels the record with `label`, default the suggested one) or dismisses an open issue.

    Repeating the same resolution answers the issue as it is; a different one on a resolved issue is 409
    CONFLICT, as is an open issue whose record was relabeled since the scan (the issue no longer applies).
    """
    from labeling.queue import labels_submit

    if action is None:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "action field is required")
    if action not in ACTIONS:
        raise invalid_field("action: expected \"accept\" or \"dismiss\"")
    model = issue.model
    if label is not None:
        if action != "accept":
            raise invalid_field("label: only an accept takes a label")
        if not isinstance(label, str) or label not in model.labels:
            raise invalid_field(f"label: {label!r} is not one of the model's labels")
        if label == issue.given_label:
            raise invalid_field("label: the record already has this label; dismiss the issue to keep it")
    target = (label or issue.suggested_label) if action == "accept" else None
    wanted = LabelIssueStatus.ACCEPTED if action == "accept" else LabelIssueStatus.DISMISSED
    if issue.status != LabelIssueStatus.OPEN:
        if issue.status == wanted and (target is None or target == issue.resolved_label):
            return issue
        raise ApiError(409, "CONFLICT", f"This issue was already {issue.status}")
    current_label = Record.objects.filter(pk=issue.record_id).values_list("label", flat=True).first()
    if current_label != issue.given_label:
        raise ApiError(409, "CONFLICT", f"The record was relabeled since the scan (its label is now {current_label!r}); "
                                        "scan again for a fresh list")
    if action == "accept":
        # labels_submit validates, keeps the old label in the history and runs its own transaction; the issue is
        # marked after it, so a failed relabel never leaves an issue that says it was applied.
        labels_submit(model=model, labels=[{"record_id": issue.record_id, "label": target}], user=user, api_key=api_key)
    LabelIssue.objects.filter(pk=issue.pk, status=LabelIssueStatus.OPEN).update(
        status=wanted, resolved_label=target, resolved_at=timezone.now(),
        resolved_by=user if getattr(user, "is_authenticated", False) else None)
    issue.refresh_from_db()
    return issue
