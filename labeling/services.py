"""Writes for datasets: create from an upload, a path or JSON records, import, embed, append, delete.

The request side only stores the file (after checking its header) and creates the dataset and its
import `Job`; `dataset_import_run` (a Celery task) then parses the file in one streaming pass and
inserts every record inside one transaction, so a bad row anywhere leaves nothing behind. The same
transaction creates the `embed` job; `dataset_embed_chunk` then embeds one chunk of rows per task,
so several workers share a large dataset, and the last chunk makes the dataset `ready`.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import get_valid_filename

from .importers import (DatasetParser, ImportFileError, check_not_binary, detect_format, validate_column_mapping,
                        validate_record)
from .models import Dataset, DatasetStatus, Job, JobKind, JobStatus, Record

logger = logging.getLogger("labelf.import")

INSERT_BATCH_ROWS = 5000
# How often the import publishes its progress while its transaction is open.
PROGRESS_EVERY_SECONDS = 1.0
# The dataset's progress bar: parsing and inserting fills the first half, embedding the second.
PARSE_SHARE = 0.5
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)

ProgressCallback = Callable[[int, int], None]  # (done, total)


def max_text_chars() -> int:
    return settings.LABELF["MAX_TEXT_CHARS"]


def max_line_bytes() -> int:
    # A line holds one text (up to 4 bytes per character in UTF-8) plus its other columns.
    return settings.LABELF.get("MAX_LINE_BYTES", max(1024 * 1024, max_text_chars() * 4 + 64 * 1024))


# --- storage names -------------------------------------------------------------------------------

def _upload_name(*, workspace_id: int, client_name: str) -> str:
    """A storage name we choose: the client's name only contributes a sanitised base name."""
    base = get_valid_filename(os.path.basename(client_name.replace("\\", "/"))) or "upload"
    stem, ext = os.path.splitext(base)
    return f"uploads/workspace_{workspace_id}/{uuid.uuid4().hex}-{stem[:60]}{ext[:10].lower()}"


def progress_file_name(dataset_id: int) -> str:
    return f"progress/dataset_{dataset_id}.json"


class _ProgressPublisher:
    """Publishes the progress of an import whose database transaction is still open.

    Rows written inside the import's transaction are invisible to other connections (and SQLite
    allows one writer), so the progress goes to a small file in storage that the dataset and job
    selectors read while the import is parsing.
    """

    def __init__(self, dataset_id: int, total_bytes: int, callback: ProgressCallback | None):
        self.name = progress_file_name(dataset_id)
        self.total = max(total_bytes, 1)
        self.callback = callback
        self.last_published = 0.0

    def __call__(self, done_bytes: int) -> None:
        if self.callback is not None:
            self.callback(done_bytes, self.total)
        now = time.monotonic()
        if now - self.last_published < PROGRESS_EVERY_SECONDS:
            return
        self.last_published = now
        fraction = min(done_bytes / self.total, 1.0)
        default_storage.delete(self.name)
        default_storage.save(self.name, ContentFile(json.dumps({"progress": round(fraction, 4)}).encode()))

    def discard(self) -> None:
        default_storage.delete(self.name)


# --- creating datasets ---------------------------------------------------------------------------

def _check_file_head(stream: BinaryIO, fmt: str, columns: dict[str, str] | None = None) -> None:
    """File-level problems (empty, binary, bad header) answer at once instead of after a queue wait."""
    check_not_binary(stream.read(8192))
    stream.seek(0)
    parser = DatasetParser(stream, fmt, max_text_chars=max_text_chars(), max_line_bytes=max_line_bytes(),
                           columns=columns)
    parser.read_header()
    if fmt == "jsonl":
        # JSONL has no header: its first record shows at once whether the text key is there, instead of a
        # dataset that fails in the background after the queue wait.
        next(iter(parser), None)
    stream.seek(0)


def _queue_import(job: Job) -> None:
    from . import tasks

    try:
        tasks.dataset_import.delay(job.id)
    except Exception:  # the broker is down: say so instead of leaving a dataset queued forever
        logger.exception("could not queue import job %s", job.id)
        _import_failed(job_id=job.id, message="Could not queue the import: the task queue is unreachable; upload again later")


def _dataset_start_import(*, workspace, name: str, storage_name: str, fmt: str, user=None,
                          queue_import: bool = True, columns: dict[str, str] | None = None) -> Dataset:
    from labelf_studio.workspaces.services import audit_record

    with transaction.atomic():
        dataset = Dataset.objects.create(
            workspace=workspace, name=name, status=DatasetStatus.PROCESSING, phase="queued",
            source_file=storage_name, source_format=fmt, created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        job = Job.objects.create(
            workspace=workspace, kind=JobKind.IMPORT, dataset=dataset, created_by=dataset.created_by,
            params={"path": storage_name, "format": fmt, "first_row": 0, "columns": columns or {}},
        )
        if queue_import:
            transaction.on_commit(lambda: _queue_import(job))
        audit_record(workspace=workspace, action="dataset.create", target=f"dataset {dataset.id} ({dataset.name})",
                     actor=user, details={"format": fmt})
    return dataset


def dataset_create_from_upload(*, workspace, name: str, uploaded_file, user=None,
                               columns: dict[str, str] | None = None) -> Dataset:
    """Stores an uploaded CSV/JSONL file and queues its import. Raises ImportFileError for file-level problems.

    `columns` names the source column holding the text, label or split ({"text": "Body", "label": "Category"})
    when the file does not call them so.
    """
    limit = settings.LABELF["MAX_UPLOAD_BYTES"]
    if uploaded_file.size > limit:
        raise UploadTooLarge(f"The file is {uploaded_file.size} bytes; the limit is {limit} bytes")
    fmt = detect_format(uploaded_file.name or "")
    columns = validate_column_mapping(columns)
    uploaded_file.seek(0)
    _check_file_head(uploaded_file.file, fmt, columns)
    storage_name = default_storage.save(
        _upload_name(workspace_id=workspace.id, client_name=uploaded_file.name or "upload"), uploaded_file
    )
    return _dataset_start_import(workspace=workspace, name=name, storage_name=storage_name, fmt=fmt, user=user,
                                 columns=columns)


def dataset_create_from_path(*, workspace, name: str, path, user=None, queue_import: bool = True) -> Dataset:
    """Copies a local CSV/JSONL file into storage and queues its import (seed_demo, import_dataset).

    `queue_import=False` leaves the import job queued for the caller to run (`import_dataset` runs it in-process).
    """
    path = Path(path)
    fmt = detect_format(path.name)
    with path.open("rb") as stream:
        _check_file_head(stream, fmt)
        storage_name = default_storage.save(_upload_name(workspace_id=workspace.id, client_name=path.name), File(stream))
    return _dataset_start_import(workspace=workspace, name=name, storage_name=storage_name, fmt=fmt, user=user,
                                 queue_import=queue_import)


def _records_to_jsonl(records: object, *, field: str = "records") -> bytes:
    """Validates JSON records (the API's bodies) at once and serialises them for the import task."""
    if not isinstance(records, list):
        raise ImportFileError(f"{field}: expected a list of objects")
    if not records:
        raise ImportFileError(f"{field}: expected at least one record")
    lines = []
    for position, item in enumerate(records):
        row = validate_record(item, f"{field}[{position}]", max_text_chars=max_text_chars())
        lines.append(json.dumps({"text": row.text, "label": row.label, "split": row.split, "metadata": row.metadata},
                                ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def dataset_create_from_records(*, workspace, name: str, records: object, user=None) -> Dataset:
    payload = _records_to_jsonl(records)
    storage_name = default_storage.save(_upload_name(workspace_id=workspace.id, client_name="records.jsonl"),
                                        ContentFile(payload))
    return _dataset_start_import(workspace=workspace, name=name, storage_name=storage_name, fmt="jsonl", user=user)


class DatasetBusy(Exception):
    """The dataset is importing or embedding; writes must wait."""


class UploadTooLarge(Exception):
    pass


def dataset_records_append(*, dataset: Dataset, records: object, user=None) -> Dataset:
    """Appends records through the same import and embedding path. Raises DatasetBusy while a job runs."""
    payload = _records_to_jsonl(records)
    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if locked.status == DatasetStatus.PROCESSING:
            raise DatasetBusy("The dataset is still processing an import; retry when it is ready")
        if locked.status == DatasetStatus.FAILED:
            raise DatasetBusy("The dataset's import failed; upload it again")
        storage_name = default_storage.save(
            _upload_name(workspace_id=locked.workspace_id, client_name="records.jsonl"), ContentFile(payload))
        locked.status = DatasetStatus.PROCESSING
        locked.phase = "queued"
        locked.progress = 0.0
        locked.error = None
        locked.save(update_fields=["status", "phase", "progress", "error"])
        job = Job.objects.create(
            workspace_id=locked.workspace_id, kind=JobKind.IMPORT, dataset=locked,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            params={"path": storage_name, "format": "jsonl", "first_row": locked.record_count, "append": True},
        )
        transaction.on_commit(lambda: _queue_import(job))
    return locked


# --- the import task -----------------------------------------------------------------------------

class _RecordWriter:
    """Inserts import rows in batches: COPY on PostgreSQL, one executemany per batch elsewhere.

    `bulk_create` spends ~70 µs of CPU per row building model instances and preparing each value
    (70 s per million rows on a 2-core machine); writing the columns directly takes a few µs. The
    columns come from the model, and fields an import does not set get their prepared defaults.
    """

    GIVEN = ("dataset_id", "row_index", "text", "metadata", "label", "split")

    def __init__(self, dataset_id: int):
        fields = [f for f in Record._meta.concrete_fields if not f.primary_key]
        by_attname = {f.attname: f for f in fields}
        others = [f for f in fields if f.attname not in self.GIVEN]
        self.columns = [by_attname[name].column for name in self.GIVEN] + [f.column for f in others]
        self.defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in others)
        self.dataset_id = dataset_id
        self.table = Record._meta.db_table
        self.use_copy = connection.vendor == "postgresql"

    def row(self, row_index: int, row) -> tuple:
        return (self.dataset_id, row_index, row.text, json.dumps(row.metadata, ensure_ascii=False), row.label,
                row.split, *self.defaults)

    def write(self, rows: list[tuple]) -> None:
        columns = ", ".join(f'"{c}"' for c in self.columns)
        with connection.cursor() as cursor:
            if self.use_copy:
                with cursor.cursor.copy(f'COPY "{self.table}" ({columns}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                placeholders = ", ".join(["%s"] * len(self.columns))
                cursor.executemany(f'INSERT INTO "{self.table}" ({columns}) VALUES ({placeholders})', rows)


def _insert_rows(*, dataset: Dataset, parser: DatasetParser, first_row: int, publish: _ProgressPublisher) -> int:
    writer = _RecordWriter(dataset.id)
    row_index = first_row
    batch: list[tuple] = []
    for row in parser:
        batch.append(writer.row(row_index, row))
        row_index += 1
        if len(batch) >= INSERT_BATCH_ROWS:
            writer.write(batch)
            batch = []
            publish(parser.bytes_read)
    if batch:
        writer.write(batch)
    return row_index - first_row


def _import_failed(*, job_id: int, message: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        # A duplicate delivery that lost the race to a successful run must not undo it.
        if job is None or job.status in FINISHED:
            return
        job.status, job.error, job.finished_at = JobStatus.FAILED, message, now
        job.save(update_fields=["status", "error", "finished_at"])
        dataset = Dataset.objects.select_for_update().get(pk=job.dataset_id)
        if job.params.get("append"):
            # The records already there are intact: the dataset stays usable and says what failed.
            dataset.status, dataset.phase, dataset.progress = DatasetStatus.READY, "done", 1.0
            dataset.error = f"Appending records failed: {message}"
        else:
            dataset.status, dataset.phase, dataset.error = DatasetStatus.FAILED, "failed", message
        dataset.save(update_fields=["status", "phase", "progress", "error"])


def dataset_import_run(*, job_id: int, on_progress: ProgressCallback | None = None) -> Job | None:
    """Parses and inserts one import job's file, all or nothing; returns the embed job it created.

    Safe to run twice: a finished job does nothing, one a live worker is running does nothing (the
    claim), and an interrupted one committed nothing, so its rerun starts clean.
    """
    from .job_maintenance import job_claim

    job = Job.objects.select_related("dataset").filter(pk=job_id, kind=JobKind.IMPORT).first()
    if job is None or job.status in FINISHED or not job_claim(job_id=job.pk):
        return None
    dataset = job.dataset
    Dataset.objects.filter(pk=dataset.pk).update(phase="parsing")
    path, fmt, first_row = job.params["path"], job.params["format"], int(job.params.get("first_row", 0))
    publish = _ProgressPublisher(dataset.id, default_storage.size(path), on_progress)
    try:
        with default_storage.open(path, "rb") as stream:
            check_not_binary(stream.read(8192))
            stream.seek(0)
            parser = DatasetParser(stream, fmt, max_text_chars=max_text_chars(), max_line_bytes=max_line_bytes(),
                                   columns=job.params.get("columns"))
            with transaction.atomic():
                inserted = _insert_rows(dataset=dataset, parser=parser, first_row=first_row, publish=publish)
                if inserted == 0:
                    raise ImportFileError("The file has no records (only a header or blank lines)")
                embed_job = _import_succeeded(job=job, dataset=dataset, parser=parser, first_row=first_row,
                                              inserted=inserted)
    except ImportFileError as exc:
        _import_failed(job_id=job.id, message=str(exc))
        return None
    except Exception:
        logger.exception("import job %s failed", job.id)
        _import_failed(job_id=job.id, message="The import failed on an internal error; try again or contact an admin")
        return None
    finally:
        publish.discard()
    return embed_job


def _import_succeeded(*, job: Job, dataset: Dataset, parser: DatasetParser, first_row: int, inserted: int) -> Job:
    total = first_row + inserted
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    columns = list(dataset.metadata_columns or [])
    columns += [c for c in parser.metadata_columns if c not in columns]
    if not dataset.vector_chunk_size:
        dataset.vector_chunk_size = settings.LABELF["EMBEDDING_CHUNK_SIZE"]
    dataset.record_count = total
    dataset.metadata_columns = columns
    dataset.phase = "embedding"
    dataset.progress = PARSE_SHARE
    dataset.save(update_fields=["record_count", "metadata_columns", "vector_chunk_size", "phase", "progress"])
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=1.0, finished_at=now,
                                         result={"dataset_id": dataset.id, "records": inserted, "record_count": total})
    chunk_size = dataset.vector_chunk_size
    return Job.objects.create(
        workspace_id=dataset.workspace_id, kind=JobKind.EMBED, dataset=dataset, created_by_id=job.created_by_id,
        params={"first_row": first_row, "row_count": total, "chunk_size": chunk_size,
                "first_chunk": first_row // chunk_size, "end_chunk": -(-total // chunk_size)},
        result={"chunks_done": []},
    )


# --- the embedding tasks -------------------------------------------------------------------------

def embed_job_chunks(job: Job) -> list[int]:
    return list(range(job.params["first_chunk"], job.params["end_chunk"]))


def _chunk_rows(job: Job, chunk_index: int) -> tuple[int, int]:
    size = job.params["chunk_size"]
    return chunk_index * size, min((chunk_index + 1) * size, job.params["row_count"])


def _embed_failed(*, job_id: int, message: str) -> None:
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in FINISHED:
            return
        job.status, job.error, job.finished_at = JobStatus.FAILED, message, timezone.now()
        job.save(update_fields=["status", "error", "finished_at"])
        Dataset.objects.filter(pk=job.dataset_id).update(status=DatasetStatus.FAILED, phase="failed", error=message)


def dataset_embed_chunk(*, job_id: int, chunk_index: int) -> None:
    """Embeds rows [i*size, (i+1)*size) of the job's dataset and records chunk i as done.

    Idempotent: a chunk already recorded does nothing; a chunk embedded twice (a redelivered task)
    writes the same vectors to the same file, and the set of done chunks counts it once.
    """
    from .embeddings import get_embedder, vectors_cache_clear, vectors_remove_partial_writes, vectors_write_chunk
    from .job_maintenance import heartbeat_stamp, job_claimed

    job = Job.objects.select_related("dataset").filter(pk=job_id, kind=JobKind.EMBED).first()
    if job is None or job.status in FINISHED or chunk_index in job.result.get("chunks_done", []):
        return
    if chunk_index not in embed_job_chunks(job):
        raise ValueError(f"chunk {chunk_index} is not part of embed job {job_id}")
    # Chunks of one job run side by side on several workers, so there is no exclusive claim: the first
    # chunk (or the first after the sweeper re-queued the job) starts it; every running chunk beats.
    now = timezone.now()
    stamp = heartbeat_stamp(job.pk, now)
    started = Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, attempts=F("attempts") + 1, heartbeat_at=stamp)
    if not started and stamp is not None:
        Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(heartbeat_at=stamp)
    job_claimed(job.pk)
    start, end = _chunk_rows(job, chunk_index)
    texts = list(Record.objects.filter(dataset_id=job.dataset_id, row_index__gte=start, row_index__lt=end)
                 .order_by("row_index").values_list("text", flat=True))
    if len(texts) != end - start:
        _embed_failed(job_id=job.id, message=f"Records {start}-{end - 1} are missing; import the dataset again")
        return
    try:
        vectors = get_embedder().embed(texts)
        vectors_write_chunk(dataset_id=job.dataset_id, chunk_index=chunk_index, vectors=vectors)
    except Exception:
        logger.exception("embedding chunk %s of job %s failed", chunk_index, job.id)
        _embed_failed(job_id=job.id, message="Embedding failed on an internal error; try again or contact an admin")
        return
    finished = _embed_chunk_done(job_id=job.id, chunk_index=chunk_index)
    if finished:
        vectors_cache_clear(job.dataset_id)
        vectors_remove_partial_writes(dataset_id=job.dataset_id)  # temporaries of chunk writes a killed worker cut off


def _embed_chunk_done(*, job_id: int, chunk_index: int) -> bool:
    """Adds the chunk to the job's done set; the last one makes the dataset ready. Returns True then."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in FINISHED:
            return False
        done = set(job.result.get("chunks_done", [])) | {chunk_index}
        chunks = embed_job_chunks(job)
        embedded = job.params["first_chunk"] * job.params["chunk_size"] + sum(
            end - start for start, end in (_chunk_rows(job, c) for c in done))
        job.result = {**job.result, "chunks_done": sorted(done), "embedded": embedded}
        job.progress = len(done) / len(chunks)
        update = {"embedded_count": embedded, "progress": PARSE_SHARE + (1 - PARSE_SHARE) * job.progress}
        finished = len(done) == len(chunks)
        if finished:
            job.status, job.finished_at = JobStatus.SUCCEEDED, timezone.now()
            update.update(status=DatasetStatus.READY, phase="done", progress=1.0, error=None)
        job.save(update_fields=["result", "progress", "status", "finished_at"])
        Dataset.objects.filter(pk=job.dataset_id).update(**update)
    return finished


# --- deleting ------------------------------------------------------------------------------------

def dataset_delete(*, dataset: Dataset, actor=None, actor_key=None) -> None:
    """Deletes the dataset, its records (and everything hanging off them), its vectors and files."""
    from labelf_studio.workspaces.services import audit_record

    from .embeddings import vectors_cache_clear, vectors_delete

    dataset_id = dataset.id
    files = set(Job.objects.filter(dataset_id=dataset_id, kind=JobKind.IMPORT).values_list("params__path", flat=True))
    files.add(dataset.source_file)
    with transaction.atomic():
        # The models built on the dataset go with it: the audit log names them.
        models = list(dataset.models.values_list("id", "name"))
        audit_record(workspace=dataset.workspace, action="dataset.delete", target=f"dataset {dataset_id} ({dataset.name})",
                     actor=actor, actor_key=actor_key,
                     details={"records": dataset.record_count, "models": [f"model {i} ({n})" for i, n in models]})
        _delete_records(dataset_id=dataset_id)
        dataset.delete()

        def remove_files():
            vectors_delete(dataset_id=dataset_id)
            vectors_cache_clear(dataset_id)
            for name in [*files, progress_file_name(dataset_id)]:
                if name:
                    default_storage.delete(name)

        transaction.on_commit(remove_files)


def _delete_records(*, dataset_id: int) -> None:
    # The ORM's cascade would load every record (a million) into memory to find what hangs off
    # them; delete the dependent rows and the records with one statement per table instead.
    record_table = Record._meta.db_table
    with connection.cursor() as cursor:
        for relation in Record._meta.related_objects:
            related = relation.related_model._meta
            column = related.get_field(relation.field.name).column
            records = f'(SELECT "id" FROM "{record_table}" WHERE "dataset_id" = %s)'
            if relation.on_delete is models.CASCADE:
                cursor.execute(f'DELETE FROM "{related.db_table}" WHERE "{column}" IN {records}', [dataset_id])
            elif relation.on_delete is models.SET_NULL:
                cursor.execute(f'UPDATE "{related.db_table}" SET "{column}" = NULL WHERE "{column}" IN {records}', [dataset_id])
        cursor.execute(f'DELETE FROM "{record_table}" WHERE "dataset_id" = %s', [dataset_id])

