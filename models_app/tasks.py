"""Background work for model versions (training tasks live in training_tasks.py)."""
from __future__ import annotations

import numpy as np
from celery import shared_task

from labelf_studio.celery import FollowUpTask

# Sample predictions shown on the model page.
SAMPLE_SIZE = 20
# Rows scored per step when counting predicted labels, so a large dataset never needs a
# (rows x labels) probability matrix at once.
SCORING_BATCH = 50_000


@shared_task(base=FollowUpTask, acks_late=True, time_limit=1800, soft_time_limit=1700)
def version_summarise(version_id: int) -> None:
    """Predicted label counts over the version's whole dataset plus a few sample predictions.

    Idempotent: a version that already has its summary (or no longer exists) is left alone.
    """
    from labeling.embeddings import vectors_load
    from labeling.models import DatasetStatus, Record

    from .inference import head_for_version
    from .models import ModelVersion

    version = ModelVersion.objects.select_related("model__dataset").filter(pk=version_id).first()
    if version is None or version.summary is not None:
        return
    dataset = version.model.dataset
    if dataset.status != DatasetStatus.READY or dataset.record_count == 0:
        return
    head = head_for_version(version)
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    records = Record.objects.filter(dataset=dataset).order_by("row_index")

    def texts_of(rows) -> list[str]:
        # Heads with text features read the raw texts beside the vectors.
        return list(records.filter(row_index__in=[int(r) for r in rows]).values_list("text", flat=True))

    counts = np.zeros(len(head.labels), dtype=np.int64)
    for start in range(0, len(vectors), SCORING_BATCH):
        rows = range(start, min(start + SCORING_BATCH, len(vectors)))
        texts = list(records.filter(row_index__gte=rows.start, row_index__lt=rows.stop).values_list("text", flat=True))
        predicted = head.predict_proba(vectors[rows.start:rows.stop], texts=texts).argmax(axis=1)
        counts += np.bincount(predicted, minlength=len(head.labels))
    rng = np.random.default_rng(version.id)
    rows = np.sort(rng.choice(len(vectors), min(SAMPLE_SIZE, len(vectors)), replace=False))
    proba = head.predict_proba(vectors[rows], texts=texts_of(rows))
    sample = [{"row_index": int(row), "label": head.labels[int(p.argmax())], "confidence": round(float(p.max()), 4)}
              for row, p in zip(rows, proba)]
    summary = {"rows": int(len(vectors)),
               "distribution": {label: int(count) for label, count in zip(head.labels, counts)},
               "sample": sample}
    ModelVersion.objects.filter(pk=version_id, summary__isnull=True).update(summary=summary)
