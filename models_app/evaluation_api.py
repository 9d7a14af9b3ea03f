"""/v2 version comparison and the threshold helper.

Query parameters are read from `request.GET` here (not declared as typed arguments) so that every bad value
answers with the contract's codes and messages; they are documented in the schema through `openapi_extra`.
"""
from __future__ import annotations

import math

from django.http import HttpRequest
from ninja import Router

from labelf_studio.api import ApiError, ErrorOut, invalid_field, not_found

from . import evaluation_selectors as evaluation
from . import selectors, services

router = Router(tags=["evaluation"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut}


def _query(name: str, description: str, schema: dict, required: bool) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _model_or_404(request: HttpRequest, model_id: int):
    model = selectors.model_get(workspace=request.workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise not_found("Model")
    return model


def _version_number(request: HttpRequest, name: str) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        raise ApiError(400, "MISSING_REQUIRED_FIELD", f"{name} field is required")
    if not (raw.isascii() and raw.isdigit()):
        raise invalid_field(f"{name}: expected a version number (a positive integer)")
    return int(raw)


def _version_or_404(model, number: int, what: str):
    version = selectors.version_get(model=model, number=number) if 0 < number <= services.MAX_ID else None
    if version is None:
        raise not_found(f"Version {number} of model {model.id} ({what})")
    version.model = model
    return version


_THRESHOLD_ANSWER = {
    "type": "object",
    "properties": {
        "version": {"type": "integer"},
        "min_precision": {"type": "number"},
        "threshold": {"type": ["number", "null"], "description": "lowest threshold whose precision reaches min_precision; null when none does"},
        "precision": {"type": ["number", "null"]},
        "recall": {"type": ["number", "null"], "description": "share of all evaluation records answered correctly at that threshold"},
        "coverage": {"type": ["number", "null"], "description": "share of records whose confidence is at or above the threshold"},
        "curve_source": {"type": "string"},
    },
    "required": ["threshold", "precision", "coverage", "recall"],
}


@router.get("/models/{int:model_id}/versions/{int:number}/threshold", response={200: dict, **ERRORS},
            summary="The threshold that reaches a target precision",
            openapi_extra={
                "parameters": [_query("min_precision", "target precision, 0 to 1 (0.95 = 95%)",
                                      {"type": "number", "minimum": 0, "maximum": 1}, True)],
                "responses": {200: {"description": "the threshold, or nulls when no threshold reaches the target",
                                      "content": {"application/json": {"schema": _THRESHOLD_ANSWER}}}},
            })
def version_threshold(request: HttpRequest, model_id: int, number: int):
    """Reads the version's threshold curve (precision, recall, F1 and coverage at thresholds 0, 0.01, … 1, measured on
    the evaluation records) and answers the lowest threshold whose precision is at least `min_precision`, which is the
    one that keeps the most coverage. When no threshold with any coverage reaches the target the answer is 200 with
    `threshold: null` (and null precision, recall, coverage), not an error."""
    model = _model_or_404(request, model_id)
    version = _version_or_404(model, number, "in the path")
    raw = request.GET.get("min_precision")
    if raw is None or raw == "":
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "min_precision field is required")
    try:
        min_precision = float(raw)
    except ValueError:
        raise invalid_field("min_precision: expected a number between 0 and 1") from None
    if not math.isfinite(min_precision) or not 0.0 <= min_precision <= 1.0:
        raise invalid_field("min_precision: expected a number between 0 and 1 (0.95 means 95% precision)")
    curve, source = evaluation.curve_for_version(version=version)
    return {"version": version.number, "min_precision": min_precision,
            **evaluation.threshold_answer(curve, min_precision=min_precision), "curve_source": source}


@router.get("/models/{int:model_id}/compare", response={200: dict, **ERRORS}, summary="Compare two versions",
            openapi_extra={"parameters": [
                _query("a", "version A (of this model)", {"type": "integer", "minimum": 1}, True),
                _query("b", "version B (of this model, or of other_model)", {"type": "integer", "minimum": 1}, True),
                _query("other_model", "compare with a version of another model on the same dataset and label set",
                       {"type": "integer", "minimum": 1}, False),
            ]})
def models_compare(request: HttpRequest, model_id: int):
    """Both versions' stored metrics; accuracy, macro-F1 and per-class F1 (with B − A deltas) recomputed on the
    shared evaluation records; McNemar's test on them (`p_value`, and `verdict` in plain words); and counts of
    disagreements (`both_wrong`, `a_right_b_wrong`, `a_wrong_b_right`, `predictions_differ`). With no shared
    evaluation record the counts are 0 and `p_value` is null. Versions with different label sets, or models on
    different datasets, answer 400 INVALID_FIELD saying why."""
    model_a = _model_or_404(request, model_id)
    number_a, number_b = _version_number(request, "a"), _version_number(request, "b")
    raw_other = request.GET.get("other_model")
    model_b = model_a
    if raw_other not in (None, ""):
        if not (raw_other.isascii() and raw_other.isdigit()):
            raise invalid_field("other_model: expected a model id (a positive integer)")
        model_b = _model_or_404(request, int(raw_other))
    version_a = _version_or_404(model_a, number_a, "a")
    version_b = _version_or_404(model_b, number_b, "b")
    try:
        result = evaluation.comparison(model_a=model_a, version_a=version_a, model_b=model_b, version_b=version_b)
    except evaluation.NotComparable as exc:
        raise invalid_field(f"{'other_model' if model_b.pk != model_a.pk else 'b'}: {exc}") from None
    return {"model_id": model_a.id, **result}
