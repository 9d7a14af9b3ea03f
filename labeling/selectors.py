"""Reads for datasets, records and jobs: lists, filters, label distribution, semantic search, export."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from django.core.files.storage import default_storage
from django.db.models import Count, QuerySet, TextField
from django.db.models.functions import Cast
from django.db.models.fields.json import KeyTextTransform

from .models import Dataset, DatasetStatus, Job, JobKind, JobStatus, Record
from .services import PARSE_SHARE, progress_file_name

EXPORT_CHUNK_ROWS = 2000
# Cells a spreadsheet would run as a formula (CSV injection); the export prefixes them with '.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def workspace_overview(*, workspace) -> dict:
    from models_app.models import ClassificationModel

    return {
        "datasets": Dataset.objects.filter(workspace=workspace)[:10],
        "models": ClassificationModel.objects.filter(workspace=workspace)[:10],
    }


def dataset_list(*, workspace) -> QuerySet[Dataset]:
    return Dataset.objects.filter(workspace=workspace)


def dataset_get(*, workspace, dataset_id: int) -> Dataset | None:
    return Dataset.objects.filter(workspace=workspace, pk=dataset_id).first()


def job_get(*, workspace, job_id: int) -> Job | None:
    return Job.objects.filter(workspace=workspace, pk=job_id).first()


def _published_import_progress(dataset_id: int) -> float | None:
    """The progress an import publishes while its transaction is open (see services._ProgressPublisher)."""
    try:
        with default_storage.open(progress_file_name(dataset_id), "rb") as handle:
            return float(json.loads(handle.read())["progress"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def dataset_progress(dataset: Dataset) -> float:
    if dataset.status == DatasetStatus.PROCESSING and dataset.phase == "parsing":
        published = _published_import_progress(dataset.id)
        if published is not None:
            return round(PARSE_SHARE * published, 4)
    return dataset.progress


def job_progress(job: Job) -> float:
    if job.kind == JobKind.IMPORT and job.status == JobStatus.RUNNING:
        published = _published_import_progress(job.dataset_id)
        if published is not None:
            return published
    return job.progress


def dataset_jobs(*, dataset: Dataset) -> list[Job]:
    """The dataset's newest import and embed jobs (what the progress panel shows)."""
    latest: dict[str, Job] = {}
    for job in Job.objects.filter(dataset=dataset, kind__in=[JobKind.IMPORT, JobKind.EMBED]).order_by("-id")[:10]:
        latest.setdefault(job.kind, job)
    return [latest[kind] for kind in (JobKind.IMPORT, JobKind.EMBED) if kind in latest]


# --- records -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordFilters:
    labeled: bool | None = None
    label: str | None = None
    split: str | None = None
    metadata_key: str | None = None
    metadata_value: str | None = None
    q: str | None = None


def record_list(*, dataset: Dataset, filters: RecordFilters = RecordFilters()) -> QuerySet[Record]:
    records = Record.objects.filter(dataset=dataset)
    if filters.labeled is not None:
        records = records.filter(label__isnull=not filters.labeled)
    if filters.label:
        records = records.filter(label=filters.label)
    if filters.split:
        records = records.filter(split=filters.split)
    if filters.metadata_key and filters.metadata_value is not None:
        # A transform instead of a `metadata__<key>` lookup: the key comes from the user and may contain "__".
        value = Cast(KeyTextTransform(filters.metadata_key, "metadata"), TextField())
        records = records.annotate(_metadata_value=value).filter(_metadata_value=filters.metadata_value)
    if filters.q:
        records = records.filter(text__icontains=filters.q)
    return records.order_by("row_index")


def label_distribution(*, dataset: Dataset) -> dict:
    """Counts per current label (largest first) and the unlabeled count, with bar widths in percent."""
    rows = list(Record.objects.filter(dataset=dataset).values("label").annotate(n=Count("id")).order_by("-n", "label"))
    labeled = [(row["label"], row["n"]) for row in rows if row["label"] is not None]
    unlabeled = sum(row["n"] for row in rows if row["label"] is None)
    top = max([n for _, n in labeled], default=0)
    return {
        "labels": [{"label": label, "count": n, "percent": round(100 * n / top, 1) if top else 0} for label, n in labeled],
        "labeled": sum(n for _, n in labeled),
        "unlabeled": unlabeled,
    }


# --- semantic search and similarity ------------------------------------------------------------

def _dataset_vectors(dataset: Dataset) -> np.ndarray:
    from .embeddings import vectors_load

    return vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)


def _nearest_rows(vectors: np.ndarray, query: np.ndarray, limit: int, exclude_row: int | None = None) -> list[tuple[int, float]]:
    scores = vectors @ query
    if exclude_row is not None:
        scores[exclude_row] = -np.inf
    limit = min(limit, len(scores) - (1 if exclude_row is not None else 0))
    if limit <= 0:
        return []
    # Partition for the largest without negating a million scores first (that copy costs as much as the partition).
    top = np.argpartition(scores, len(scores) - limit)[len(scores) - limit:]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(row), float(scores[row])) for row in top]


def _records_for_rows(dataset: Dataset, rows: list[tuple[int, float]]) -> list[tuple[Record, float]]:
    by_row = {r.row_index: r for r in Record.objects.filter(dataset=dataset, row_index__in=[row for row, _ in rows])}
    return [(by_row[row], score) for row, score in rows if row in by_row]


def dataset_search(*, dataset: Dataset, query: str, limit: int = 10) -> list[tuple[Record, float]]:
    """Records nearest to `query` by cosine similarity of their embeddings, best first. Needs a ready dataset."""
    from .embeddings import embed_texts

    query_vector = embed_texts([query])[0]
    return _records_for_rows(dataset, _nearest_rows(_dataset_vectors(dataset), query_vector, limit))


def records_similar_to(*, dataset: Dataset, record: Record, limit: int = 10) -> list[tuple[Record, float]]:
    """Records nearest to a record of the dataset (the record itself left out), from stored vectors only."""
    vectors = _dataset_vectors(dataset)
    rows = _nearest_rows(vectors, np.array(vectors[record.row_index]), limit, exclude_row=record.row_index)
    return _records_for_rows(dataset, rows)


def texts_similarity(*, texts: Sequence[str], queries: Sequence[str] | None = None) -> np.ndarray:
    """Cosine similarities: texts × texts, or queries × texts."""
    from .embeddings import embed_texts

    text_vectors = embed_texts(list(texts))
    query_vectors = text_vectors if queries is None else embed_texts(list(queries))
    return np.clip(query_vectors @ text_vectors.T, -1.0, 1.0)


# --- export --------------------------------------------------------------------------------------

def _escape_formula(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


class _Line:
    """A file-like sink for csv.writer that hands back each written line."""

    def write(self, value: str) -> str:
        return value


def _cell(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return _escape_formula(value)


def dataset_export_lines(*, dataset: Dataset, fmt: str) -> Iterator[str]:
    """Every record with its current label, as CSV or JSONL lines, streamed from the database in chunks."""
    rows = (Record.objects.filter(dataset=dataset).order_by("row_index")
            .values_list("id", "text", "label", "split", "metadata").iterator(chunk_size=EXPORT_CHUNK_ROWS))
    if fmt == "jsonl":
        for record_id, text, label, split, metadata in rows:
            yield json.dumps({"id": record_id, "text": text, "label": label, "split": split, "metadata": metadata},
                             ensure_ascii=False) + "\n"
        return
    columns = list(dataset.metadata_columns or [])
    writer = csv.writer(_Line())
    yield writer.writerow(["id", "text", "label", "split", *[_escape_formula(c) for c in columns]])
    for record_id, text, label, split, metadata in rows:
        metadata = metadata or {}
        yield writer.writerow([record_id, _cell(text), _cell(label), split, *[_cell(metadata.get(c)) for c in columns]])


# --- API objects ---------------------------------------------------------------------------------

def iso_utc(value) -> str | None:
    if value is None:
        return None
    from datetime import timezone as dt_timezone

    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dataset_to_dict(dataset: Dataset) -> dict:
    return {"id": dataset.id, "name": dataset.name, "status": dataset.status, "record_count": dataset.record_count,
            "progress": dataset_progress(dataset), "error": dataset.error, "created_at": iso_utc(dataset.created_at)}


def record_to_dict(record: Record) -> dict:
    return {"id": record.id, "dataset_id": record.dataset_id, "text": record.text, "metadata": record.metadata or {},
            "label": record.label, "split": record.split}


def job_to_dict(job: Job) -> dict:
    result = dict(job.result or {})
    if job.kind == JobKind.EMBED:
        # The done-chunk set is bookkeeping for idempotency; clients get counts.
        result["chunks_done"] = len(result.get("chunks_done", []))
        result["chunks"] = job.params.get("end_chunk", 0) - job.params.get("first_chunk", 0)
        result["dataset_id"] = job.dataset_id
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job_progress(job), "error": job.error,
            "result": result, "created_at": iso_utc(job.created_at), "finished_at": iso_utc(job.finished_at)}
