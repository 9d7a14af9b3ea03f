"""Predictions of a version on the evaluation records, computed here independently of the selectors."""
from __future__ import annotations

import numpy as np

from labeling.embeddings import vectors_load
from labeling.models import Record
from models_app.inference import head_for_version


def evaluation_predictions(version, dataset) -> list[dict]:
    head = head_for_version(version)
    records = list(Record.objects.filter(dataset=dataset, split="evaluation", label__in=version.labels)
                   .order_by("row_index").values_list("id", "row_index", "label", "text"))
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    proba = head.predict_proba(vectors[[r[1] for r in records]], [r[3] for r in records])
    top = np.asarray(proba).argmax(axis=1)
    return [{"id": r[0], "gold": r[2], "text": r[3], "predicted": head.labels[t]} for r, t in zip(records, top)]
