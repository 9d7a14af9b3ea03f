"""/v2 near-duplicate groups of a dataset, and excluding duplicates from the recommendation pool.

Labeling a whole group needs no endpoint of its own: send the group's `record_ids` to
`POST /v2/models/{id}/labels` (up to 500 per call), as the browser's "label group" does.
"""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from ninja import Router

from labelf_studio.api import ErrorOut, json_body, not_found, pagination_params, require_role

from . import duplicates_selectors, duplicates_services, selectors
from .duplicates import DEFAULT_THRESHOLD, MIN_THRESHOLD

router = Router(tags=["data quality"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}
MAX_ID = 2**63 - 1
_THRESHOLD = {"type": "number", "minimum": MIN_THRESHOLD, "maximum": 1, "default": DEFAULT_THRESHOLD,
              "description": "cosine similarity at or above which two texts are near-duplicates (rounded to 2 decimals)"}


def _dataset_or_404(request: HttpRequest, dataset_id: int):
    dataset = selectors.dataset_get(workspace=request.workspace, dataset_id=dataset_id) if dataset_id <= MAX_ID else None
    if dataset is None:
        raise not_found("Dataset")
    return dataset


@router.get("/datasets/{int:dataset_id}/duplicates", response={200: dict, **ERRORS}, summary="Near-duplicate groups",
            openapi_extra={"parameters": [
                {"in": "query", "name": "threshold", "schema": _THRESHOLD},
                {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}]})
def duplicates_list(request: HttpRequest, dataset_id: int):
    """Groups of records whose texts are near-duplicates (embedding cosine similarity at or above `threshold`, or
    the same text up to case and spacing), largest first. The groups are computed once per dataset and threshold
    in the background: the first call queues that and answers `status: "queued"` with no groups; poll until
    `status` is `succeeded`. Each group: `{"index", "size", "record_ids", "records" (the first 10, with text,
    label and excluded), "excluded"}`. `method` is `exact` (every pair compared, up to 50,000 distinct texts) or
    `approximate` (an inverted-file search above that). The groups are recomputed after records are appended
    to the dataset; a failed computation answers `status: "failed"` with its `error` until
    `POST /duplicates/scan` tries again."""
    dataset = _dataset_or_404(request, dataset_id)
    threshold = duplicates_services.parse_threshold(request.GET.get("threshold"))
    offset, limit = pagination_params(request)
    scan, _ = duplicates_services.duplicate_scan_request(dataset=dataset, threshold=threshold)
    scan.refresh_from_db()  # an eager run (tests, embedded mode without a worker) finished in the meantime
    total = len(scan.groups or [])
    data = duplicates_selectors.groups_page(scan=scan, offset=offset, limit=limit)
    return {**duplicates_selectors.scan_to_dict(scan), "data": data, "total": total, "offset": offset, "limit": limit,
            "has_more": offset + len(data) < total}


@router.post("/datasets/{int:dataset_id}/duplicates/scan", response={202: dict, **ERRORS},
             summary="Compute the near-duplicate groups again after a failure",
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": {
                 "type": "object", "properties": {"threshold": _THRESHOLD}}}}}})
def duplicates_scan(request: HttpRequest, dataset_id: int):
    """Queues the computation at this threshold when there is none, or when the last one failed or is stale; a
    scan already queued, running or up to date is answered as it is. 202 with the scan (no groups)."""
    require_role(request, "lead")
    dataset = _dataset_or_404(request, dataset_id)
    threshold = duplicates_services.parse_threshold(json_body(request).get("threshold"))
    scan, _ = duplicates_services.duplicate_scan_request(dataset=dataset, threshold=threshold, retry_failed=True)
    return JsonResponse(duplicates_selectors.scan_to_dict(scan), status=202)


@router.post("/datasets/{int:dataset_id}/duplicates/exclude", response={200: dict, **ERRORS},
             summary="Exclude near-duplicates from the recommendation pool (or put them back)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "properties": {
                     "threshold": _THRESHOLD,
                     "exclude": {"type": "boolean", "default": True, "description": "false puts the groups' records back"},
                     "groups": {"type": "array", "items": {"type": "integer", "minimum": 0},
                                "description": "group indices; all groups when absent"}}}}}}})
def duplicates_exclude(request: HttpRequest, dataset_id: int):
    """Keeps one record of each group in the pool (its first labeled record, else its first record) and excludes
    the others from recommendations; `exclude: false` puts every record of the groups back. Needs the scan at
    this threshold to have succeeded (409 CONFLICT otherwise). Answers `{"excluded", "restored", "groups"}`."""
    require_role(request, "lead")
    dataset = _dataset_or_404(request, dataset_id)
    body = json_body(request)
    threshold = duplicates_services.parse_threshold(body.get("threshold"))
    return duplicates_services.duplicates_exclude(
        dataset=dataset, threshold=threshold, exclude=body.get("exclude", True), groups=body.get("groups"),
        user=request.api_key.user, api_key=request.api_key)
