"""/v2 possible label errors: start a scan, read the ranked review queue, accept or dismiss an issue (leads)."""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from ninja import Router

from labelf_studio.api import ErrorOut, invalid_field, json_body, not_found, paginate, require_role

from . import label_issue_selectors as issues
from . import label_issue_services, selectors, services
from .models import LabelIssueStatus

router = Router(tags=["data quality"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}

_SCAN = {"type": "object", "properties": {
    "id": {"type": "integer"}, "model_id": {"type": "integer"},
    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
    "progress": {"type": "number"}, "error": {"type": ["string", "null"]},
    "result": {"type": "object", "description": "labeled, checked, flagged, open, out_of_fold_accuracy, method, skipped_reason"},
    "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]}}}


def _model_or_404(request: HttpRequest, model_id: int):
    model = selectors.model_get(workspace=request.workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise not_found("Model")
    return model


@router.post("/models/{int:model_id}/label-issues/scan", response={202: dict, **ERRORS},
             summary="Scan the model's labels for probable errors",
             openapi_extra={"responses": {202: {"description": "the scan (a scan already queued or running is returned)",
                                                "content": {"application/json": {"schema": _SCAN}}}}})
def label_issues_scan(request: HttpRequest, model_id: int):
    """Queues a background scan of every record whose current label is in the model's label set: out-of-fold
    predictions (5-fold logistic regression on the stored vectors) and confident learning flag the labels that
    are probably wrong. When it succeeds, its findings replace the model's open issues. 409 on an archived model
    or a dataset that is not ready."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    scan, _ = label_issue_services.label_issue_scan_request(model=model, user=request.api_key.user)
    return JsonResponse(issues.scan_to_dict(scan), status=202)


@router.get("/models/{int:model_id}/label-issues", response={200: dict, **ERRORS},
            summary="Possible label errors, most likely wrong first",
            openapi_extra={"parameters": [
                {"in": "query", "name": "status", "schema": {"type": "string", "enum": list(LabelIssueStatus.values),
                                                             "default": "open"}},
                {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}]})
def label_issues_list(request: HttpRequest, model_id: int):
    """Paginated issues `{"id", "record", "given_label", "suggested_label", "score" (probability the given label
    is wrong), "rank", "status", ...}` plus `scan`, the latest scan (null before the first). Open issues come in
    rank order and leave the list once their record is relabeled; accepted and dismissed ones newest first."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    status = request.GET.get("status") or LabelIssueStatus.OPEN
    if status not in LabelIssueStatus.values:
        raise invalid_field("status: expected open, accepted or dismissed")
    page = paginate(request, issues.label_issues(model=model, status=status), issues.issue_to_dict)
    return {**page, "scan": issues.scan_to_dict(issues.latest_scan(model=model))}


@router.post("/models/{int:model_id}/label-issues/{int:issue_id}", response={200: dict, **ERRORS},
             summary="Accept or dismiss a possible label error",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["action"], "properties": {
                     "action": {"type": "string", "enum": ["accept", "dismiss"]},
                     "label": {"type": "string", "description": "with accept: the label to give instead of the suggested one"}}}}}}})
def label_issues_resolve(request: HttpRequest, model_id: int, issue_id: int):
    """`accept` relabels the record (with `label`, else the suggested label) the way `POST /labels` does, keeping
    the old label in its history; `dismiss` keeps the label, and later scans leave the record alone while it keeps
    it. Answers the issue. Repeating a resolution is harmless; a resolved issue asked otherwise, or an issue whose
    record was relabeled since the scan, is 409 CONFLICT."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    issue = issues.label_issue_get(model=model, issue_id=issue_id)
    if issue is None:
        raise not_found("Label issue")
    body = json_body(request)
    issue = label_issue_services.label_issue_resolve(issue=issue, action=body.get("action"), label=body.get("label"),
                                                     user=request.api_key.user, api_key=request.api_key)
    return issues.issue_to_dict(issue)
