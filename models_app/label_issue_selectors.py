"""Reads of the possible-label-errors review: the ranked open issues, the latest scan, their JSON shapes."""
from __future__ import annotations

from django.db.models import Count, F, QuerySet

from labeling.selectors import iso_utc, record_to_dict

from .models import ClassificationModel, LabelIssue, LabelIssueScan, LabelIssueStatus

MAX_ID = 2**63 - 1


def label_issues(*, model: ClassificationModel, status: str = LabelIssueStatus.OPEN) -> QuerySet[LabelIssue]:
    """Issues of `status`, most likely wrong first. An open issue whose record was relabeled (by anyone,
    anywhere) since its scan no longer applies and is left out, as is one naming a label the model no longer
    has (its label set changed since the scan; the record keeps its label, the model just ignores it)."""
    issues = LabelIssue.objects.filter(model=model, status=status).select_related("record")
    if status == LabelIssueStatus.OPEN:
        labels = list(model.labels)
        issues = (issues.filter(record__label=F("given_label"), given_label__in=labels, suggested_label__in=labels)
                  .order_by("rank", "id"))
    else:
        issues = issues.order_by("-resolved_at", "-id")
    return issues


def label_issue_get(*, model: ClassificationModel, issue_id: int) -> LabelIssue | None:
    if not 0 < issue_id <= MAX_ID:
        return None
    issue = LabelIssue.objects.filter(model=model, pk=issue_id).select_related("record").first()
    if issue is not None:
        issue.model = model
    return issue


def latest_scan(*, model: ClassificationModel) -> LabelIssueScan | None:
    return LabelIssueScan.objects.filter(model=model).order_by("-created_at", "-id").first()


def review_counts(*, model: ClassificationModel) -> dict[str, int]:
    counts = dict(LabelIssue.objects.filter(model=model).exclude(status=LabelIssueStatus.OPEN)
                  .values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {"open": label_issues(model=model).count(), "accepted": counts.get(LabelIssueStatus.ACCEPTED, 0),
            "dismissed": counts.get(LabelIssueStatus.DISMISSED, 0)}


def scan_to_dict(scan: LabelIssueScan | None) -> dict | None:
    if scan is None:
        return None
    return {"id": scan.id, "model_id": scan.model_id, "status": scan.status, "progress": round(scan.progress, 4),
            "error": scan.error, "result": scan.result or {}, "created_at": iso_utc(scan.created_at),
            "started_at": iso_utc(scan.started_at), "finished_at": iso_utc(scan.finished_at)}


def issue_to_dict(issue: LabelIssue) -> dict:
    return {"id": issue.id, "record": record_to_dict(issue.record), "given_label": issue.given_label,
            "suggested_label": issue.suggested_label, "score": round(issue.score, 6), "rank": issue.rank,
            "status": issue.status, "resolved_label": issue.resolved_label, "resolved_at": iso_utc(issue.resolved_at),
            "scan_id": issue.scan_id, "created_at": iso_utc(issue.created_at)}
