"""Reads for models and versions, and the contract's model object."""
from __future__ import annotations

from .models import ClassificationModel


def models_for_workspace(*, workspace):
    return ClassificationModel.objects.filter(workspace=workspace).order_by("-created_at", "-id")


def _iso(value):
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def model_to_dict(model: ClassificationModel) -> dict:
    return {
        "id": model.id, "name": model.name, "type": model.type, "status": model.status,
        "labels": list(model.labels), "metrics": None, "training_examples": 0, "last_trained": None,
        "confidence_threshold": model.confidence_threshold, "version": None, "dataset_id": model.dataset_id,
        "label_descriptions": dict(model.label_descriptions), "created_at": _iso(model.created_at),
    }
