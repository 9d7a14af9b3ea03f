"""/v2 datasets, records, export, semantic search, similarity and jobs.

Handlers read the body themselves (`json_body`, or the multipart form for uploads) so every
failure maps to the contract's error codes; writes go through `services`, reads through `selectors`.
"""
from __future__ import annotations

from typing import Optional

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router, Schema, Status

from labelf_studio.api import ApiError, ErrorOut, invalid_field, json_body, not_found, paginate, require_role

from . import selectors, services
from .importers import SPLITS, ImportFileError
from .models import DatasetStatus

router = Router(tags=["datasets"])

MAX_SIMILARITY_TEXTS = 200
MAX_SEARCH_LIMIT = 100
ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 429: ErrorOut}


class DatasetOut(Schema):
    id: int
    name: str
    status: str
    record_count: int
    progress: float
    error: Optional[str]
    created_at: str


class RecordOut(Schema):
    id: int
    dataset_id: int
    text: str
    metadata: dict
    label: Optional[str]
    split: str


class JobOut(Schema):
    id: int
    kind: str
    status: str
    progress: float
    error: Optional[str]
    result: dict
    created_at: str
    finished_at: Optional[str]


class _Page(Schema):
    total: int
    offset: int
    limit: int
    has_more: bool


class DatasetPage(_Page):
    data: list[DatasetOut]


class RecordPage(_Page):
    data: list[RecordOut]


class SearchHit(RecordOut):
    score: float


class SearchOut(Schema):
    data: list[SearchHit]


class SimilarityOut(Schema):
    matrix: list[list[float]]


_RECORD_IN = {"type": "object", "required": ["text"], "properties": {
    "text": {"type": "string"}, "label": {"type": "string", "nullable": True},
    "split": {"type": "string", "enum": list(SPLITS)}, "metadata": {"type": "object"}}}
_RECORDS_BODY = {"type": "object", "required": ["name", "records"], "properties": {
    "name": {"type": "string"}, "records": {"type": "array", "items": _RECORD_IN}}}


def _dataset_or_404(request: HttpRequest, dataset_id: int):
    dataset = selectors.dataset_get(workspace=request.workspace, dataset_id=dataset_id)
    if dataset is None:
        raise not_found("Dataset")
    return dataset


def _name(value) -> str:
    if value is None:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "name field is required")
    if not isinstance(value, str) or not value.strip():
        raise invalid_field("name: expected a non-empty string")
    if len(value.strip()) > 200:
        raise invalid_field("name: at most 200 characters")
    return value.strip()


def _records_field(body: dict):
    if "records" not in body:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "records field is required")
    return body["records"]


@router.post("/datasets", response={202: DatasetOut, **ERRORS}, summary="Create a dataset from a file or records",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file", "name"], "properties": {
                     "file": {"type": "string", "format": "binary", "description": "CSV, TSV or JSONL (UTF-8)"},
                     "name": {"type": "string"},
                     "text_column": {"type": "string", "description": "the column (CSV) or key (JSONL) holding the text, if not \"text\""},
                     "label_column": {"type": "string", "description": "the column or key holding the label, if not \"label\""},
                     "split_column": {"type": "string", "description": "the column or key holding the split, if not \"split\""}}}},
                 "application/json": {"schema": _RECORDS_BODY}}}})
def datasets_create(request: HttpRequest):
    """Answers at once with the dataset `processing`; a background job parses, inserts and embeds it.

    File-level problems (empty, binary, no `text` column, duplicate columns) answer 400 INVALID_FILE
    at once; a bad row found while importing makes the dataset `failed` with the line in `error`.
    """
    require_role(request, "lead")
    user = request.api_key.user
    try:
        if request.content_type == "multipart/form-data":
            uploaded = request.FILES.get("file")
            if uploaded is None:
                raise ApiError(400, "MISSING_REQUIRED_FIELD", "file field is required")
            name = _name(request.POST.get("name"))
            columns = {role: request.POST.get(f"{role}_column") for role in ("text", "label", "split")}
            dataset = services.dataset_create_from_upload(workspace=request.workspace, name=name,
                                                          uploaded_file=uploaded, user=user, columns=columns)
        else:
            body = json_body(request)
            name = _name(body.get("name"))
            dataset = services.dataset_create_from_records(workspace=request.workspace, name=name,
                                                           records=_records_field(body), user=user)
    except services.UploadTooLarge as exc:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", str(exc)) from None
    except ImportFileError as exc:
        code = "INVALID_FILE" if request.content_type == "multipart/form-data" else "INVALID_FIELD"
        raise ApiError(400, code, str(exc)) from None
    dataset.refresh_from_db()
    return Status(202, selectors.dataset_to_dict(dataset))


@router.get("/datasets", response={200: DatasetPage, **ERRORS}, summary="List datasets")
def datasets_list(request: HttpRequest):
    return paginate(request, selectors.dataset_list(workspace=request.workspace), selectors.dataset_to_dict)


@router.get("/datasets/{int:dataset_id}", response={200: DatasetOut, **ERRORS}, summary="Get a dataset")
def datasets_get(request: HttpRequest, dataset_id: int):
    return selectors.dataset_to_dict(_dataset_or_404(request, dataset_id))


@router.delete("/datasets/{int:dataset_id}", response={204: None, **ERRORS}, summary="Delete a dataset")
def datasets_delete(request: HttpRequest, dataset_id: int):
    """Removes the dataset with its records, labels, models, vectors and files."""
    require_role(request, "admin")
    services.dataset_delete(dataset=_dataset_or_404(request, dataset_id), actor=request.api_key.user,
                            actor_key=request.api_key)
    return Status(204, None)


@router.post("/datasets/{int:dataset_id}/records", response={202: DatasetOut, **ERRORS}, summary="Append records",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["records"],
                 "properties": {"records": {"type": "array", "items": _RECORD_IN}}}}}}})
def datasets_records_append(request: HttpRequest, dataset_id: int):
    """Appends and embeds the records in the background; 409 DATASET_PROCESSING while an import runs."""
    require_role(request, "lead")
    dataset = _dataset_or_404(request, dataset_id)
    if dataset.status == DatasetStatus.PROCESSING:
        raise ApiError(409, "DATASET_PROCESSING", "The dataset is still processing an import; retry when it is ready")
    body = json_body(request)
    try:
        dataset = services.dataset_records_append(dataset=dataset, records=_records_field(body), user=request.api_key.user)
    except ImportFileError as exc:
        raise invalid_field(str(exc)) from None
    except services.DatasetBusy as exc:
        code = "DATASET_PROCESSING" if dataset.status == DatasetStatus.PROCESSING else "CONFLICT"
        raise ApiError(409, code, str(exc)) from None
    dataset.refresh_from_db()
    return Status(202, selectors.dataset_to_dict(dataset))


def _bool_param(request: HttpRequest, name: str) -> bool | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise invalid_field(f"{name}: expected true or false")


@router.get("/datasets/{int:dataset_id}/records", response={200: RecordPage, **ERRORS}, summary="List records",
            openapi_extra={"parameters": [
                {"in": "query", "name": "labeled", "schema": {"type": "boolean"}},
                {"in": "query", "name": "label", "schema": {"type": "string"}},
                {"in": "query", "name": "split", "schema": {"type": "string", "enum": list(SPLITS)}},
                {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}]})
def datasets_records(request: HttpRequest, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    split = request.GET.get("split") or None
    if split is not None and split not in SPLITS:
        raise invalid_field("split: expected pool or evaluation")
    filters = selectors.RecordFilters(labeled=_bool_param(request, "labeled"), label=request.GET.get("label") or None,
                                      split=split)
    return paginate(request, selectors.record_list(dataset=dataset, filters=filters), selectors.record_to_dict)


@router.get("/datasets/{int:dataset_id}/export", response={**ERRORS}, summary="Export records with their current labels",
            openapi_extra={"parameters": [{"in": "query", "name": "format",
                                           "schema": {"type": "string", "enum": ["csv", "jsonl"], "default": "csv"}}],
                           "responses": {"200": {"description": "The records, streamed",
                                                 "content": {"text/csv": {}, "application/x-ndjson": {}}}}})
def datasets_export(request: HttpRequest, dataset_id: int):
    require_role(request, "lead")
    dataset = _dataset_or_404(request, dataset_id)
    fmt = request.GET.get("format") or "csv"
    if fmt not in ("csv", "jsonl"):
        raise invalid_field("format: expected csv or jsonl")
    return export_response(dataset=dataset, fmt=fmt)


def export_response(*, dataset, fmt: str) -> StreamingHttpResponse:
    """The streamed download, shared with the browser view."""
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8"
    response = StreamingHttpResponse(selectors.dataset_export_lines(dataset=dataset, fmt=fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="dataset-{dataset.id}.{fmt}"'
    return response


@router.get("/datasets/{int:dataset_id}/search", response={200: SearchOut, **ERRORS}, summary="Semantic search",
            openapi_extra={"parameters": [
                {"in": "query", "name": "q", "required": True, "schema": {"type": "string"}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT, "default": 10}}]})
def datasets_search(request: HttpRequest, dataset_id: int):
    """Records nearest to `q` by cosine similarity of sentence embeddings, best first, each with `score`."""
    dataset = _dataset_or_404(request, dataset_id)
    query = request.GET.get("q")
    if query is None:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "q field is required")
    if not query.strip():
        raise invalid_field("q: must not be empty")
    if len(query) > settings.LABELF["MAX_TEXT_CHARS"]:
        raise invalid_field(f"q: at most {settings.LABELF['MAX_TEXT_CHARS']} characters")
    try:
        limit = int(request.GET.get("limit") or 10)
    except ValueError:
        raise invalid_field("limit: expected an integer") from None
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise invalid_field(f"limit: must be between 1 and {MAX_SEARCH_LIMIT}")
    if dataset.status == DatasetStatus.PROCESSING:
        raise ApiError(409, "DATASET_PROCESSING", "The dataset's vectors are not ready yet; retry when it is ready")
    if dataset.status == DatasetStatus.FAILED:
        raise ApiError(409, "CONFLICT", "The dataset's import failed; it has nothing to search")
    hits = selectors.dataset_search(dataset=dataset, query=query, limit=limit)
    return {"data": [{**selectors.record_to_dict(record), "score": round(score, 6)} for record, score in hits]}


def _texts_field(body: dict, name: str, *, required: bool) -> list[str] | None:
    if name not in body:
        if required:
            raise ApiError(400, "MISSING_REQUIRED_FIELD", f"{name} field is required")
        return None
    texts = body[name]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid_field(f"{name}: expected a list of strings")
    if not texts or all(not t.strip() for t in texts):
        raise ApiError(400, "EMPTY_TEXTS", f"{name}: expected at least one non-empty text")
    if len(texts) > MAX_SIMILARITY_TEXTS:
        raise ApiError(400, "TOO_MANY_TEXTS", f"{name}: at most {MAX_SIMILARITY_TEXTS} texts per request, got {len(texts)}")
    limit = settings.LABELF["MAX_TEXT_CHARS"]
    for position, text in enumerate(texts):
        if len(text) > limit:
            raise invalid_field(f"{name}[{position}]: at most {limit} characters")
    return texts


@router.post("/similarity", response={200: SimilarityOut, **ERRORS}, summary="Cosine similarity of texts",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["texts"], "properties": {
                     "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_SIMILARITY_TEXTS},
                     "queries": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_SIMILARITY_TEXTS}}}}}}})
def similarity(request: HttpRequest):
    """`{"texts": [...]}` → texts × texts; with `"queries"` too → queries × texts."""
    body = json_body(request)
    texts = _texts_field(body, "texts", required=True)
    queries = _texts_field(body, "queries", required=False)
    matrix = selectors.texts_similarity(texts=texts, queries=queries)
    return {"matrix": [[round(float(v), 6) for v in row] for row in matrix]}


@router.get("/jobs/{int:job_id}", response={200: JobOut, **ERRORS}, summary="Get a background job")
def jobs_get(request: HttpRequest, job_id: int):
    job = selectors.job_get(workspace=request.workspace, job_id=job_id)
    if job is None:
        raise not_found("Job")
    return selectors.job_to_dict(job)
