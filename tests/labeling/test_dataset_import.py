"""Imports through /v2/datasets: every bad input gets a clear error and nothing is half-imported."""
from __future__ import annotations

import numpy as np
import pytest
from django.core.files.storage import default_storage

from labeling import services
from labeling.embeddings import embed_texts, vectors_chunk_exists, vectors_load, vectors_write_chunk
from labeling.models import Dataset, Job, Record
from tests.conftest import assert_error
from tests.labeling.conftest import CUSTOMER_CSV, bad_file, named_file


def _failed(response) -> Dataset:
    """An upload accepted at once whose import then failed: no records, no vectors, job failed too."""
    assert response.status_code == 202, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "failed"
    assert dataset.record_count == 0
    assert not Record.objects.filter(dataset=dataset).exists()
    assert not vectors_chunk_exists(dataset_id=dataset.id, chunk_index=0)
    job = Job.objects.get(dataset=dataset, kind="import")
    assert job.status == "failed" and job.error == dataset.error
    assert not Job.objects.filter(dataset=dataset, kind="embed").exists()
    return dataset


# --- file-level problems answer 400 INVALID_FILE at once and create nothing -------------------------

@pytest.mark.parametrize("filename, expected", [
    ("missing_text_column.csv", '"text" column is required'),
    ("empty.csv", "empty"),
    ("zip_renamed.csv", "ZIP archive"),
    ("nul_bytes.csv", "NUL"),
    ("duplicate_columns.csv", 'duplicate column name "label"'),
])
def test_file_level_problems_are_rejected_at_once(lead_api, upload, filename, expected):
    body = assert_error(upload(lead_api, bad_file(filename), filename), 400, "INVALID_FILE")
    assert expected in body["message"]
    assert not Dataset.objects.exists() and not Record.objects.exists()


def test_a_jsonl_file_without_its_text_key_is_rejected_at_once(lead_api, upload):
    body = assert_error(upload(lead_api, b'{"body": "hello"}\n{"body": "again"}\n', "m.jsonl"), 400, "INVALID_FILE")
    assert 'Line 1: the "text" field is missing' in body["message"]
    assert not Dataset.objects.exists()


def test_unsupported_extension_is_rejected(lead_api, upload):
    body = assert_error(upload(lead_api, CUSTOMER_CSV, "data.xlsx"), 400, "INVALID_FILE")
    assert ".csv, .tsv or .jsonl" in body["message"]


# --- row-level problems fail the dataset with the line in the error ---------------------------------

@pytest.mark.parametrize("filename, expected", [
    ("empty_text.csv", "Line 4: text is empty"),
    ("invalid_utf8.csv", "Line 3: invalid UTF-8 at byte offset"),
    ("not_json.jsonl", "Line 3 is not valid JSON"),
    ("jsonl_not_object.jsonl", "Line 2: expected a JSON object"),
    ("ragged.csv", "Line 3 has 2 fields; the header has 3"),
    ("unterminated_quote.csv", "Line 2"),
    ("bad_split.csv", 'Line 2: split is "training"'),
    ("header_only.csv", "no records"),
])
def test_bad_rows_fail_the_whole_import(lead_api, upload, filename, expected):
    dataset = _failed(upload(lead_api, bad_file(filename), filename))
    assert expected in dataset.error
    # The API shows the same error on the dataset and on its job.
    shown = lead_api.get(f"/v2/datasets/{dataset.id}").json()
    assert shown["status"] == "failed" and expected in shown["error"]
    job = Job.objects.get(dataset=dataset, kind="import")
    assert lead_api.get(f"/v2/jobs/{job.id}").json()["error"] == dataset.error


def test_invalid_utf8_offset_points_at_the_bad_byte(lead_api, upload):
    content = bad_file("invalid_utf8.csv")
    bad_byte = content.index(b"\xff")
    assert f"byte offset {bad_byte};" in _failed(upload(lead_api, content)).error


def test_a_bad_row_after_several_insert_batches_leaves_no_record(lead_api, upload):
    rows = "".join(f"message number {i} about my card,,web\n" for i in range(2 * services.INSERT_BATCH_ROWS + 10))
    dataset = _failed(upload(lead_api, "text,label,channel\n" + rows + "the last row is ragged\n"))
    assert f"Line {2 * services.INSERT_BATCH_ROWS + 12} has 1 fields" in dataset.error


def test_a_50_mb_single_line_fails_with_bounded_reading(lead_api, upload):
    content = b"text\nshort first message\n" + b"a" * (50 * 1024 * 1024) + b"\n"
    dataset = _failed(upload(lead_api, content))
    assert "Line 3 is longer than" in dataset.error


def test_text_over_the_character_limit_is_rejected(lead_api, upload, settings):
    settings.LABELF = {**settings.LABELF, "MAX_TEXT_CHARS": 50}
    dataset = _failed(upload(lead_api, "text\nshort\n" + "x" * 51 + "\n"))
    assert "Line 3: text has 51 characters; the limit is 50" in dataset.error


def test_upload_over_the_size_limit_is_413(lead_api, upload, settings):
    settings.LABELF = {**settings.LABELF, "MAX_UPLOAD_BYTES": 2048}
    assert_error(upload(lead_api, "text\n" + "I lost my card\n" * 500), 413, "PAYLOAD_TOO_LARGE")
    assert not Dataset.objects.exists()


# --- good files ---------------------------------------------------------------------------------------

def test_csv_import_keeps_columns_and_embeds(lead_api, upload):
    response = upload(lead_api, "\ufeff" + CUSTOMER_CSV)  # a UTF-8 BOM is accepted
    assert response.status_code == 202
    assert response.json()["status"] == "processing" and response.json()["record_count"] == 0
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert (dataset.status, dataset.record_count, dataset.progress, dataset.embedded_count) == ("ready", 6, 1.0, 6)
    assert dataset.metadata_columns == ["channel"]
    first = Record.objects.get(dataset=dataset, row_index=0)
    assert (first.text, first.label, first.split, first.metadata) == ("I want to cancel my credit card", "Cancellation", "pool", {"channel": "web"})
    assert Record.objects.get(dataset=dataset, row_index=3).split == "evaluation"
    assert Record.objects.get(dataset=dataset, row_index=4).label is None
    jobs = {job.kind: job for job in Job.objects.filter(dataset=dataset)}
    assert jobs["import"].status == jobs["embed"].status == "succeeded"
    vectors = vectors_load(dataset_id=dataset.id, row_count=6, chunk_size=dataset.vector_chunk_size)
    expected = embed_texts(list(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("text", flat=True)))
    assert np.allclose(vectors, expected, atol=2e-3)


@pytest.mark.parametrize("delimiter, filename", [(";", "export.csv"), ("\t", "export.tsv"), ("|", "export.csv")])
def test_spreadsheet_exports_with_other_delimiters_import(lead_api, upload, delimiter, filename):
    # Spreadsheets in many locales export ";"-separated CSV; the header line decides the delimiter.
    content = delimiter.join(["Text", "Label", "customer_id"]) + "\n" + \
        delimiter.join(['"Where is my parcel, it is late"', "Shipping", "17"]) + "\n" + \
        delimiter.join(["Refund please", "", "18"]) + "\n"
    response = upload(lead_api, "\ufeff" + content, filename)
    assert response.status_code == 202, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready" and dataset.metadata_columns == ["customer_id"]
    rows = list(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("text", "label", "metadata"))
    assert rows == [("Where is my parcel, it is late", "Shipping", {"customer_id": "17"}),
                    ("Refund please", None, {"customer_id": "18"})]


def _upload_with_columns(lead_api, content: bytes, filename: str, django_capture_on_commit_callbacks, **columns):
    with django_capture_on_commit_callbacks(execute=True):
        return lead_api.upload("/v2/datasets", {"name": "mapped", "file": named_file(content, filename), **columns})


def test_upload_names_the_text_and_label_columns(lead_api, django_capture_on_commit_callbacks):
    csv_content = b"Body,Category,label\nWhere is my parcel,shipping,x\nRefund please,,y\n"
    response = _upload_with_columns(lead_api, csv_content, "a.csv", django_capture_on_commit_callbacks,
                                    text_column="body", label_column="category")
    # A column called "label" while another one is chosen as the label: ambiguous, refused at once.
    body = assert_error(response, 400, "INVALID_FILE")
    assert 'column "label" and the chosen label column "category"' in body["message"]

    response = _upload_with_columns(lead_api, csv_content.replace(b",label", b",note"), "a.csv",
                                    django_capture_on_commit_callbacks, text_column="Body", label_column="Category")
    assert response.status_code == 202, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready" and dataset.metadata_columns == ["note"]
    assert list(dataset.records.order_by("row_index").values_list("text", "label", "metadata")) == [
        ("Where is my parcel", "shipping", {"note": "x"}), ("Refund please", None, {"note": "y"})]

    jsonl = b'{"body": "Card blocked", "intent": "card", "id": 1}\n{"body": "Hello"}\n'
    response = _upload_with_columns(lead_api, jsonl, "b.jsonl", django_capture_on_commit_callbacks,
                                    text_column="body", label_column="intent")
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready", dataset.error
    assert list(dataset.records.order_by("row_index").values_list("text", "label", "metadata")) == [
        ("Card blocked", "card", {"id": 1}), ("Hello", None, {})]


@pytest.mark.parametrize("columns, expected", [
    ({"text_column": "body"}, 'the text column "body" is not in the file; found columns: text, label'),
    ({"text_column": "text", "label_column": "TEXT"}, "must be different columns"),
])
def test_upload_with_bad_column_names_is_refused_at_once(lead_api, django_capture_on_commit_callbacks, columns, expected):
    response = _upload_with_columns(lead_api, b"text,label\nhi,a\n", "a.csv", django_capture_on_commit_callbacks, **columns)
    assert expected in assert_error(response, 400, "INVALID_FILE")["message"]
    assert not Dataset.objects.exists()


def test_jsonl_import_merges_metadata(lead_api, upload):
    content = ('{"text": "I lost my card", "label": "Card", "metadata": {"channel": "app"}, "customer": 17}\n'
               "\n"
               '{"text": "Where is my refund?", "split": "evaluation"}\n')
    response = upload(lead_api, content, "messages.jsonl")
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready" and dataset.record_count == 2
    assert Record.objects.get(dataset=dataset, row_index=0).metadata == {"channel": "app", "customer": 17}
    assert dataset.metadata_columns == ["channel", "customer"]


def test_client_file_name_never_chooses_the_storage_path(lead_api, upload):
    response = upload(lead_api, CUSTOMER_CSV, "../../../etc/cron.d/evil.csv")
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.source_file.startswith(f"uploads/workspace_{dataset.workspace_id}/")
    assert ".." not in dataset.source_file and dataset.source_file.endswith("-evil.csv")
    assert default_storage.exists(dataset.source_file)


def test_import_job_twice_does_not_duplicate(lead_api, upload):
    dataset = Dataset.objects.get(pk=upload(lead_api, CUSTOMER_CSV).json()["id"])
    job = Job.objects.get(dataset=dataset, kind="import")
    assert services.dataset_import_run(job_id=job.id) is None
    assert Record.objects.filter(dataset=dataset).count() == 6


# --- chunked embedding is idempotent ------------------------------------------------------------------

def test_embedding_a_chunk_twice_counts_it_once(workspace, settings):
    settings.LABELF = {**settings.LABELF, "EMBEDDING_CHUNK_SIZE": 4}
    # No on-commit callbacks run here, so nothing is queued: the test drives the tasks itself.
    records = [{"text": f"message {i} about cancelling my card"} for i in range(10)]
    dataset = services.dataset_create_from_records(workspace=workspace, name="chunks", records=records)
    import_job = Job.objects.get(dataset=dataset, kind="import")
    embed_job = services.dataset_import_run(job_id=import_job.id)
    assert services.embed_job_chunks(embed_job) == [0, 1, 2]

    services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=1)
    services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=1)
    dataset.refresh_from_db()
    assert dataset.embedded_count == 4 and dataset.status == "processing"

    # A redelivered task after a crash between writing and recording: same vectors, counted once.
    texts = [r["text"] for r in records[:4]]
    vectors_write_chunk(dataset_id=dataset.id, chunk_index=0, vectors=embed_texts(texts))
    services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=0)
    services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=0)
    dataset.refresh_from_db()
    assert dataset.embedded_count == 8

    services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=2)
    dataset.refresh_from_db()
    embed_job.refresh_from_db()
    assert (dataset.status, dataset.embedded_count, dataset.progress) == ("ready", 10, 1.0)
    assert embed_job.status == "succeeded" and embed_job.result["chunks_done"] == [0, 1, 2]
    vectors = vectors_load(dataset_id=dataset.id, row_count=10, chunk_size=4)
    texts = [r["text"] for r in records]
    for start in (0, 4, 8):  # each chunk holds its own rows, embedded as one batch
        assert np.allclose(vectors[start:start + 4], embed_texts(texts[start:start + 4]), atol=2e-3)


# --- progress and failures after the upload ------------------------------------------------------------

def test_progress_published_while_the_import_transaction_is_open(lead_api, workspace):
    dataset = Dataset.objects.create(workspace=workspace, name="big", status="processing", phase="parsing")
    job = Job.objects.create(workspace=workspace, kind="import", status="running", dataset=dataset)
    publish = services._ProgressPublisher(dataset.id, total_bytes=1000, callback=None)
    publish(400)
    assert lead_api.get(f"/v2/jobs/{job.id}").json()["progress"] == 0.4
    assert lead_api.get(f"/v2/datasets/{dataset.id}").json()["progress"] == 0.2  # parsing is the first half
    publish.discard()
    assert lead_api.get(f"/v2/jobs/{job.id}").json()["progress"] == 0.0


def test_embedding_failure_fails_the_dataset(lead_api, upload, monkeypatch):
    import labeling.embeddings

    class Broken:
        def embed(self, texts, batch_size=64):
            raise RuntimeError("model file is corrupt")

    monkeypatch.setattr(labeling.embeddings, "get_embedder", lambda: Broken())
    dataset = Dataset.objects.get(pk=upload(lead_api, CUSTOMER_CSV).json()["id"])
    assert dataset.status == "failed" and "Embedding failed" in dataset.error
    assert "corrupt" not in dataset.error  # internals stay in the logs
    assert Job.objects.get(dataset=dataset, kind="embed").status == "failed"


def test_broker_down_fails_the_dataset_instead_of_leaving_it_queued(lead_api, upload, monkeypatch):
    from labeling import tasks

    def refuse(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.dataset_import, "delay", refuse)
    dataset = Dataset.objects.get(pk=upload(lead_api, CUSTOMER_CSV).json()["id"])
    assert dataset.status == "failed" and "Could not queue the import" in dataset.error
    assert not Record.objects.filter(dataset=dataset).exists()
