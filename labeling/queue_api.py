"""/v2 recommendations, labels and training requests.

Leases are held by the API key's user (`request.api_key.user`). A key created without a user leases
records for nobody in particular: they are held for the lease time like any other lease, but that key
never gets its own leases back on the next call (see labeling/queue.py).
"""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from ninja import Router

from labelf_studio.api import ApiError, ErrorOut, json_body, not_found, require_role
from models_app.models import ClassificationModel
from models_app.training_services import train_request

from . import queue
from .selectors import iso_utc, job_to_dict, record_to_dict

router = Router(tags=["labeling"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}


def _model_or_404(request: HttpRequest, model_id: int):
    # Only the columns the labeling loop reads: the model object's versions carry large JSON (metrics,
    # threshold curves) that the hot path would otherwise fetch and parse on every call.
    model = (ClassificationModel.objects.filter(workspace=request.workspace, pk=model_id).select_related("latest_version")
             .only("id", "workspace_id", "dataset_id", "status", "type", "labels", "retrain_every", "evaluation_share",
                   "latest_version__id", "latest_version__number").first())
    if model is None:
        raise not_found("Model")
    return model


def _body_schema(properties: dict, required: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": properties, "required": required}}}}}


@router.get("/models/{int:model_id}/recommendations", response={200: dict, **ERRORS},
            summary="Lease the next records to label")
def recommendations(request: HttpRequest, model_id: int, limit: int = 20):
    """The queue's head, best first, leased to the calling key's user for 10 minutes (repeat calls
    return that user's live leases first). Records already labeled or leased to someone else are not
    returned. `version` is the model version whose predictions ranked them. When nothing is free but the
    queue is being (re)computed, as right after the model is created, the call waits up to 15 s for it."""
    require_role(request, "annotator")
    model = _model_or_404(request, model_id)
    lease = queue.recommendations_lease(model=model, user=request.api_key.user, api_key=request.api_key, limit=limit,
                                        wait_seconds=queue.RECOMPUTE_WAIT_SECONDS)
    # A label removed from the model since the queue was ranked is not offered as the prediction.
    labels = set(model.labels)
    return {
        "data": [{"record": record_to_dict(item.record), "score": round(item.score, 6), "reason": item.reason,
                  "prediction": {"label": item.predicted_label if item.predicted_label in labels else None,
                                 "confidence": round(item.confidence, 6)},
                  "version": item.version, "lease_expires_at": iso_utc(item.lease_expires_at)}
                 for item in lease.items],
        "version": lease.version,
    }


_LABEL_ITEM = {"type": "object", "required": ["record_id", "label"], "properties": {
    "record_id": {"type": "integer"}, "label": {"type": "string"},
    "duration_ms": {"type": "integer", "description": "how long the annotator looked at the record"}}}


@router.post("/models/{int:model_id}/labels", response={200: dict, **ERRORS}, summary="Submit labels (1-500)",
             openapi_extra=_body_schema({"labels": {"type": "array", "items": _LABEL_ITEM, "minItems": 1, "maxItems": 500}},
                                        ["labels"]))
def labels(request: HttpRequest, model_id: int):
    """All or nothing. Relabeling replaces the record's label and keeps the history; the same label
    for the same record by the same user again is idempotent (no second annotation)."""
    require_role(request, "annotator")
    model = _model_or_404(request, model_id)
    body = json_body(request)
    if "labels" not in body:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "labels field is required")
    result = queue.labels_submit(model=model, labels=body["labels"], user=request.api_key.user, api_key=request.api_key)
    return {"accepted": result.accepted, "labeled_total": result.labeled_total}


@router.post("/models/{int:model_id}/train", response={202: dict, **ERRORS}, summary="Train a new version",
             openapi_extra=_body_schema({"type": {"type": "string", "enum": ["active-learning", "fine-tuned"]}}, ["type"]))
def train(request: HttpRequest, model_id: int):
    """202 with the train job. A job of this model and type that is still queued is returned instead of
    a new one; while one runs, a new one is queued after it."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    body = json_body(request)
    train_type = body.get("type")
    if train_type is None:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "type field is required")
    job, _ = train_request(model=model, type=train_type, user=request.api_key.user, api_key=request.api_key)
    return JsonResponse(job_to_dict(job), status=202)
