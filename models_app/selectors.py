"""Reads for models and versions, and the contract's model and version objects."""
from __future__ import annotations

import functools

from django.db import connections
from django.db.models import QuerySet

from .models import ClassificationModel, DeploymentEvent, ModelType, ModelVersion


def _iso(value):
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def models_for_workspace(*, workspace) -> QuerySet[ClassificationModel]:
    return (ClassificationModel.objects.filter(workspace=workspace)
            .select_related("latest_version", "served_version").order_by("-created_at", "-id"))


def model_get(*, workspace, model_id: int) -> ClassificationModel | None:
    """The workspace's model, or None: another workspace's model is as absent as a missing one."""
    return models_for_workspace(workspace=workspace).filter(pk=model_id).first()


def _loaded_fields(meta, wanted: set[str]) -> tuple:
    # `from_db` takes the values in the model's field order.
    return tuple(field for field in meta.concrete_fields if field.attname in wanted)


# Plain columns only (no from_db_value converters to apply): what the handler and the head cache need.
_MODEL_FIELDS = _loaded_fields(ClassificationModel._meta, {"id", "workspace_id", "status", "confidence_threshold"})
_VERSION_FIELDS = _loaded_fields(ModelVersion._meta, {"id", "model_id", "number", "artifact_path", "checksum"})


@functools.cache
def _inference_sql(vendor: str) -> str:
    quote = connections["default"].ops.quote_name
    model, version = ClassificationModel._meta, ModelVersion._meta

    def columns(alias, fields):
        return ", ".join(f"{alias}.{quote(field.column)}" for field in fields)

    return (f"SELECT {columns('m', _MODEL_FIELDS)}, {columns('v', _VERSION_FIELDS)} "
            f"FROM {quote(model.db_table)} m LEFT OUTER JOIN {quote(version.db_table)} v "
            f"ON v.{quote(version.pk.column)} = m.{quote(model.get_field('served_version').column)} "
            f"WHERE m.{quote(model.pk.column)} = %s AND m.{quote(model.get_field('workspace').column)} = %s")


def model_for_inference(*, workspace, model_id: int) -> ClassificationModel | None:
    """One query: the model's status and threshold with the served version's artifact location.

    Every inference request runs this, so the SQL is built once per process and the row becomes
    model instances directly (`from_db`, the ORM's own constructor for loaded rows): the queryset
    equivalent spent ~1.2 ms of CPU compiling and instantiating, several times the query itself."""
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute(_inference_sql(connection.vendor), [model_id, workspace.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_MODEL_FIELDS)
    model = ClassificationModel.from_db("default", [f.attname for f in _MODEL_FIELDS], row[:split])
    served = None
    if row[split] is not None:
        served = ModelVersion.from_db("default", [f.attname for f in _VERSION_FIELDS], row[split:])
    model.served_version = served
    return model


def shown_version(model: ClassificationModel) -> ModelVersion | None:
    """The version a model object describes: the served one while deployed, otherwise the newest."""
    if model.served_version_id:
        return model.served_version
    return model.latest_version


def model_to_dict(model: ClassificationModel) -> dict:
    """The contract's model object. `version`, `type`, `metrics` and `training_examples` describe
    `shown_version`; `last_trained` is that version's creation time unless it is describe-and-classify
    (which is built from descriptions, not trained)."""
    version = shown_version(model)
    trained = version is not None and version.type != ModelType.DESCRIBE_AND_CLASSIFY
    return {
        "id": model.id, "name": model.name, "type": model.type, "status": model.status,
        "labels": list(model.labels), "metrics": version.metrics if version else None,
        "training_examples": version.training_examples if version else 0,
        "last_trained": _iso(version.created_at) if trained else None,
        "confidence_threshold": model.confidence_threshold, "version": version.number if version else None,
        "dataset_id": model.dataset_id, "label_descriptions": dict(model.label_descriptions),
        "created_at": _iso(model.created_at),
        "overlap_share": model.overlap_share, "overlap_annotators": model.overlap_annotators,
    }


def versions_for_model(*, model: ClassificationModel) -> QuerySet[ModelVersion]:
    return model.versions.order_by("-number")


def version_get(*, model: ClassificationModel, number: int) -> ModelVersion | None:
    return model.versions.filter(number=number).first()


def version_to_dict(version: ModelVersion) -> dict:
    return {"version": version.number, "type": version.type, "created_at": _iso(version.created_at),
            "training_examples": version.training_examples, "metrics": version.metrics}


def version_detail_to_dict(version: ModelVersion) -> dict:
    return {**version_to_dict(version), "labels": list(version.labels), "threshold_curve": version.threshold_curve,
            "checksum": version.checksum, "details": version.details}


def deployment_events(*, model: ClassificationModel, limit: int = 50) -> QuerySet[DeploymentEvent]:
    return model.deployment_events.select_related("user", "api_key")[:limit]


def model_page(*, model: ClassificationModel) -> dict:
    """Everything the model page shows, in a fixed number of queries."""
    from labeling.models import Record

    version = shown_version(model)
    summary = version.summary if version else None
    labels = []
    total = sum(summary["distribution"].values()) if summary else 0
    # Bars are scaled to the most predicted label: with 77 labels, shares of the total are all slivers.
    largest = max(summary["distribution"].values(), default=0) if summary else 0
    for label in model.labels:
        count = summary["distribution"].get(label, 0) if summary else None
        labels.append({"name": label, "description": model.label_descriptions.get(label, ""), "predicted": count,
                       "share": (count / total) if summary and total else 0.0,
                       "bar": (count / largest) if summary and largest else 0.0})
    sample = []
    if summary:
        texts = dict(Record.objects.filter(dataset_id=model.dataset_id, row_index__in=[s["row_index"] for s in summary["sample"]])
                     .values_list("row_index", "text"))
        sample = [{**row, "text": texts.get(row["row_index"], "")} for row in summary["sample"]]
    metrics = version.metrics if version else None
    # Labels the evaluation records carry come first; the others have no support (their zeros say nothing).
    per_class = sorted((metrics.get("per_class") or {}).items(), key=lambda item: (bool(item[1].get("no_support")), item[0])) \
        if metrics else []
    unsupported = sum(1 for _, row in per_class if row.get("no_support"))
    return {
        "model": model, "object": model_to_dict(model), "version": version, "labels": labels, "summary": summary,
        "sample": sample, "metrics": metrics, "per_class": per_class, "unsupported_labels": unsupported,
        "versions": list(versions_for_model(model=model).defer("threshold_curve", "details", "summary")),
        "events": list(deployment_events(model=model)),
    }
