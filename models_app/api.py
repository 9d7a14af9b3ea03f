"""/v2 models: create, registry, versions, deploy/archive and inference.

Handlers read the JSON body themselves (`json_body`) so that every failure maps to the contract's
exact error codes; writes go through `services`, reads through `selectors`.
"""
from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router

from labelf_studio.api import ApiError, ErrorOut, invalid_field, json_body, not_found, paginate, require_role
from labelf_studio.workspaces.services import usage_reserve_texts
from labeling.models import Dataset

from . import inference, selectors, services
from .models import ModelStatus, ModelType

router = Router(tags=["models"])

MAX_INFERENCE_TEXTS = 8
ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut}


def _body_schema(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_LABEL_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
                 "required": ["name"]}


def _model_or_404(request: HttpRequest, model_id: int):
    model = selectors.model_get(workspace=request.workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise not_found("Model")
    return model


def _required(body: dict, field: str):
    if field not in body:
        raise ApiError(400, "MISSING_REQUIRED_FIELD", f"{field} field is required")
    return body[field]


def _user(request: HttpRequest):
    return request.api_key.user


@router.get("/models", response={200: dict, **ERRORS}, summary="List models")
def models_list(request: HttpRequest):
    return paginate(request, selectors.models_for_workspace(workspace=request.workspace), selectors.model_to_dict)


@router.post("/models", response={201: dict, **ERRORS}, summary="Create a describe-and-classify model",
             openapi_extra=_body_schema({"name": {"type": "string"}, "dataset_id": {"type": "integer"},
                                         "labels": {"type": "array", "items": _LABEL_SCHEMA, "maxItems": services.MAX_LABELS},
                                         "type": {"type": "string", "enum": [ModelType.DESCRIBE_AND_CLASSIFY]}},
                                        ["name", "dataset_id", "labels"]))
def models_create(request: HttpRequest):
    """Version 1 is built in the request from the label descriptions: the model answers `ready` and classifies at once."""
    require_role(request, "lead")
    body = json_body(request)
    name = _required(body, "name")
    dataset_id = _required(body, "dataset_id")
    labels = _required(body, "labels")
    model_type = body.get("type", ModelType.DESCRIBE_AND_CLASSIFY)
    if model_type != ModelType.DESCRIBE_AND_CLASSIFY:
        raise invalid_field("type: only describe-and-classify models are created directly; "
                            "train one (POST /v2/models/{id}/train) for the other types")
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int):
        raise invalid_field("dataset_id: expected an integer")
    services.validate_name(name)
    services.validate_labels(labels)
    dataset = Dataset.objects.filter(pk=dataset_id, workspace=request.workspace).first() if 0 < dataset_id <= services.MAX_ID else None
    if dataset is None:
        raise not_found("Dataset")
    model = services.model_create(workspace=request.workspace, dataset=dataset, name=name, labels=labels,
                                  user=_user(request), api_key=request.api_key)
    return 201, selectors.model_to_dict(selectors.model_get(workspace=request.workspace, model_id=model.id))


@router.get("/models/{int:model_id}", response={200: dict, **ERRORS}, summary="Get a model")
def models_get(request: HttpRequest, model_id: int):
    """`version`, `type`, `metrics` and `training_examples` describe the version the model serves while it is
    deployed (the pinned one, or the newest), otherwise its newest version. `last_trained` is that version's
    creation time, or null for a describe-and-classify version (built from descriptions, not trained)."""
    return selectors.model_to_dict(_model_or_404(request, model_id))


@router.patch("/models/{int:model_id}", response={200: dict, **ERRORS},
              summary="Rename, set the threshold, change the label set, edit descriptions",
              openapi_extra=_body_schema({"name": {"type": "string"},
                                          "confidence_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                                          "labels": {"type": "array", "items": _LABEL_SCHEMA, "minItems": 1,
                                                     "maxItems": services.MAX_LABELS,
                                                     "description": "the full new ordered label set"},
                                          "label_descriptions": {"type": "object", "additionalProperties": {"type": "string"}},
                                          "overlap_share": {"type": "number", "minimum": 0, "maximum": 1},
                                          "overlap_annotators": {"type": "integer", "minimum": 2, "maximum": 5}}))
def models_update(request: HttpRequest, model_id: int):
    """New label descriptions rebuild a describe-and-classify model as a new version (trained models keep their head).
    `labels` is the full new ordered label set: names not in it are removed from the model (records keep their
    labels), new names added; a describe-and-classify model gets a new version, a trained one a retrain request.
    `overlap_share` (0-1) of the queue goes to `overlap_annotators` (2-5) different annotators (labeling/review.py)."""
    from labeling.review import overlap_settings_update, overlap_settings_validate

    require_role(request, "lead")
    model = _model_or_404(request, model_id)
    body = json_body(request)
    for field in ("name", "confidence_threshold", "labels", "label_descriptions", "overlap_share", "overlap_annotators"):
        if field in body and body[field] is None:
            raise invalid_field(f"{field}: must not be null")
    # Validated before anything is written: a bad overlap value leaves the other fields unchanged too.
    overlap_settings_validate(share=body.get("overlap_share"), annotators=body.get("overlap_annotators"))
    model = services.model_update(model=model, name=body.get("name"), confidence_threshold=body.get("confidence_threshold"),
                                  labels=body.get("labels"), label_descriptions=body.get("label_descriptions"),
                                  user=_user(request), api_key=request.api_key)
    overlap_settings_update(model=model, share=body.get("overlap_share"), annotators=body.get("overlap_annotators"),
                            user=_user(request), api_key=request.api_key)
    return selectors.model_to_dict(selectors.model_get(workspace=request.workspace, model_id=model.id))


@router.post("/models/{int:model_id}/deploy", response={200: dict, **ERRORS}, summary="Deploy a model",
             openapi_extra=_body_schema({"version": {"type": "integer", "description": "pin this version; omit to follow the newest"}}))
def models_deploy(request: HttpRequest, model_id: int):
    require_role(request, "admin")
    model = _model_or_404(request, model_id)
    version = json_body(request).get("version")
    model = services.model_deploy(model=model, version=version, user=_user(request), api_key=request.api_key)
    return selectors.model_to_dict(selectors.model_get(workspace=request.workspace, model_id=model.id))


@router.post("/models/{int:model_id}/archive", response={200: dict, **ERRORS}, summary="Archive a model")
def models_archive(request: HttpRequest, model_id: int):
    require_role(request, "admin")
    model = _model_or_404(request, model_id)
    model = services.model_archive(model=model, user=_user(request), api_key=request.api_key)
    return selectors.model_to_dict(selectors.model_get(workspace=request.workspace, model_id=model.id))


@router.get("/models/{int:model_id}/versions", response={200: dict, **ERRORS}, summary="List a model's versions")
def versions_list(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    return paginate(request, selectors.versions_for_model(model=model), selectors.version_to_dict)


@router.get("/models/{int:model_id}/versions/{int:number}", response={200: dict, **ERRORS}, summary="Get one version")
def versions_get(request: HttpRequest, model_id: int, number: int):
    model = _model_or_404(request, model_id)
    version = selectors.version_get(model=model, number=number) if number <= services.MAX_ID else None
    if version is None:
        raise not_found("Version")
    return selectors.version_detail_to_dict(version)


def validate_texts(body: dict) -> list[str]:
    texts = _required(body, "texts")
    if not isinstance(texts, list):
        raise invalid_field("texts: expected a list of strings")
    if not texts:
        raise ApiError(400, "EMPTY_TEXTS", "texts must contain at least one non-empty text")
    if len(texts) > MAX_INFERENCE_TEXTS:
        raise ApiError(400, "TOO_MANY_TEXTS", f"At most {MAX_INFERENCE_TEXTS} texts per request, got {len(texts)}")
    max_chars = settings.LABELF["MAX_TEXT_CHARS"]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise invalid_field(f"texts[{i}]: expected a string")
        if len(text) > max_chars:
            raise invalid_field(f"texts[{i}]: at most {max_chars} characters, got {len(text)}")
    if not any(text.strip() for text in texts):
        raise ApiError(400, "EMPTY_TEXTS", "texts must contain at least one non-empty text")
    return texts


@router.post("/models/{int:model_id}/inference", response={200: dict, **ERRORS}, summary="Classify 1-8 texts",
             openapi_extra=_body_schema({"texts": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                                   "maxItems": MAX_INFERENCE_TEXTS}}, ["texts"]))
def models_inference(request: HttpRequest, model_id: int):
    """Classifies with the deployed version. Texts are counted against the monthly quota. Each text may have up to
    `MAX_TEXT_CHARS` characters; the embedder reads at most its 256-token window (longer texts are truncated)."""
    model = selectors.model_for_inference(workspace=request.workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise not_found("Model")
    if model.status == ModelStatus.ARCHIVED:
        raise ApiError(409, "MODEL_ARCHIVED", "Model is archived")
    # A deployed model keeps serving while a training job marks it `training`: served_version says it is deployed.
    if model.served_version is None:
        raise ApiError(409, "MODEL_NOT_DEPLOYED", "No deployed model found")
    texts = validate_texts(json_body(request))
    if not usage_reserve_texts(api_key=request.api_key, count=len(texts)):
        raise ApiError(403, "QUOTA_EXCEEDED", f"Quota exceeded: the workspace's monthly quota of "
                                              f"{request.workspace.monthly_quota} texts is used up")
    request.usage_recorded = True  # the reservation counted this request too
    version = model.served_version
    predictions = inference.classify(version=version, texts=texts, threshold=model.confidence_threshold)
    # Plain str/float/bool values throughout: serialised directly rather than through ninja's response
    # validation, which cost ~0.6 ms of CPU per request on 8 texts x 77 labels (measured).
    body = {"model_id": model.id, "version": version.number, "predictions": predictions}
    return HttpResponse(json.dumps(body, separators=(",", ":")), content_type="application/json; charset=utf-8")
