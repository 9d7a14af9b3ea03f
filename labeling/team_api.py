"""/v2 agreement figures and the review queue (leads and admins; an annotator key is 403 FORBIDDEN).

- `GET /v2/models/{id}/agreement?window=24h|7d|30d|all&since=&until=`: labeling/team_selectors.py.
- `GET /v2/models/{id}/review`: paginated records in conflict, each with every current label and who gave it.
- `POST /v2/models/{id}/review/{record_id}` `{"label"}`: the final label (labeling/review.py); 409 CONFLICT
  when the record is not in conflict, or another lead decided it first (the message says what and who).
"""
from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema

from labelf_studio.api import ApiError, ErrorOut, json_body, not_found, paginate, require_role

from models_app.models import ClassificationModel

from . import review, team_selectors
from .queue_api import _body_schema
from .selectors import iso_utc, record_to_dict

router = Router(tags=["team"])

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}


def _model_or_404(request: HttpRequest, model_id: int) -> ClassificationModel:
    model = (ClassificationModel.objects.filter(workspace=request.workspace, pk=model_id).first()
             if 0 < model_id <= review.MAX_RECORD_ID else None)
    if model is None:
        raise not_found("Model")
    return model


class AnnotatorOut(Schema):
    user_id: int | None
    api_key_id: int | None
    name: str


class PairOut(Schema):
    a: AnnotatorOut
    b: AnnotatorOut
    shared: int
    observed_agreement: float | None
    kappa: float | None


class ClassAgreementOut(Schema):
    label: str
    agreement: float | None
    ratings: int


class AnnotatorStatsOut(Schema):
    annotator: AnnotatorOut
    labels: int
    records: int
    labels_per_hour: float | None
    hours: float
    agreement_with_consensus: float | None
    compared: int


class OverlapOut(Schema):
    share: float
    annotators: int
    waiting: int


class AgreementOut(Schema):
    model_id: int
    since: str | None
    until: str | None
    units: int
    alpha: float | None
    pairs: list[PairOut]
    per_class: list[ClassAgreementOut]
    annotators: list[AnnotatorStatsOut]
    conflicts_open: int
    overlap: OverlapOut


class RecordOut(Schema):
    id: int
    dataset_id: int
    text: str
    metadata: dict
    label: str | None
    split: str


class GivenLabelOut(Schema):
    label: str
    annotator: AnnotatorOut
    created_at: str
    duration_ms: int | None


class ConflictOut(Schema):
    record: RecordOut
    labels: list[GivenLabelOut]
    votes: dict[str, int]


class ConflictPageOut(Schema):
    data: list[ConflictOut]
    total: int
    offset: int
    limit: int
    has_more: bool


class DecisionOut(Schema):
    record: RecordOut
    label: str
    decided_by: AnnotatorOut
    decided_at: str
    overruled: list[GivenLabelOut]


@router.get("/models/{int:model_id}/agreement", response={200: AgreementOut, **ERRORS}, summary="Annotator agreement")
def agreement(request: HttpRequest, model_id: int, window: str | None = None, since: str | None = None,
              until: str | None = None):
    """Pairwise Cohen's kappa, Krippendorff's alpha (nominal), specific agreement per label, and per annotator:
    labels, labels per hour and agreement with the consensus, over the labels given in the time window
    (`window` preset `24h`, `7d`, `30d` or `all`, or ISO 8601 `since` / `until`; default: all time). Units are
    the records two or more annotators labeled through this model."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    window_ = team_selectors.window_parse(window=window, since=since, until=until)
    return team_selectors.agreement_report(model=model, window=window_)


@router.get("/models/{int:model_id}/review", response={200: ConflictPageOut, **ERRORS}, summary="Records in conflict")
def review_list(request: HttpRequest, model_id: int):
    """Paginated records whose overlap annotators disagreed, oldest first, each with every current label,
    who gave it and when, and the votes per label. Records in conflict have no label until a lead decides."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    page = paginate(request, review.conflicts_for(model=model), lambda record: record)
    page["data"] = [review.conflict_to_dict(c) for c in review.conflicts_with_labels(page["data"])]
    return page


@router.post("/models/{int:model_id}/review/{int:record_id}", response={200: DecisionOut, **ERRORS},
             summary="Decide the final label of a record in conflict",
             openapi_extra=_body_schema({"label": {"type": "string"}}, ["label"]))
def review_decide(request: HttpRequest, model_id: int, record_id: int):
    """The final label: the record's label from now on (training uses it); the annotators' labels stay in the
    history. 409 CONFLICT when the record is not in conflict, or another lead decided it first (the message
    names that decision)."""
    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    body = json_body(request)
    if "label" not in body:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", "label field is required")
    decision = review.review_decide(model=model, record_id=record_id, label=body["label"], user=request.api_key.user,
                                    api_key=request.api_key)
    return {"record": record_to_dict(decision.record), "label": decision.annotation.label,
            "decided_by": review.annotation_to_dict(decision.annotation)["annotator"],
            "decided_at": iso_utc(decision.annotation.created_at),
            "overruled": [review.annotation_to_dict(a) for a in decision.overruled]}
