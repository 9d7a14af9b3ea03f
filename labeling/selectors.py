"""Reads for datasets, records, jobs and the labeling queue."""
from __future__ import annotations

from .models import Dataset


def workspace_overview(*, workspace) -> dict:
    from models_app.models import ClassificationModel

    return {
        "datasets": Dataset.objects.filter(workspace=workspace)[:10],
        "models": ClassificationModel.objects.filter(workspace=workspace)[:10],
    }
