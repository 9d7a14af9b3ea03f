"""/v2 datasets, records, export, search, similarity and jobs: contract shapes, roles, isolation."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.http import StreamingHttpResponse

from labeling import selectors
from labeling.embeddings import vectors_chunk_exists
from labeling.models import Dataset, Job, Record
from tests.conftest import assert_error
from tests.labeling.conftest import CUSTOMER_CSV

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_dataset_object_and_list(lead_api, annotator_api, ready_dataset):
    body = annotator_api.get(f"/v2/datasets/{ready_dataset.id}").json()
    assert set(body) == {"id", "name", "status", "record_count", "progress", "error", "created_at"}
    assert (body["status"], body["record_count"], body["progress"], body["error"]) == ("ready", 6, 1.0, None)
    assert ISO_Z.match(body["created_at"])
    page = annotator_api.get("/v2/datasets").json()
    assert (page["total"], page["offset"], page["limit"], page["has_more"]) == (1, 0, 20, False)
    assert page["data"][0]["id"] == ready_dataset.id


def test_create_from_json_records(lead_api, django_capture_on_commit_callbacks):
    records = [{"text": "I want to cancel my card", "label": "Cancellation", "metadata": {"channel": "web"}},
               {"text": "Why was I charged twice?", "split": "evaluation"}]
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post("/v2/datasets", {"name": "From JSON", "records": records})
    assert response.status_code == 202
    assert response.json()["status"] == "processing"
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready" and dataset.record_count == 2
    assert list(Record.objects.filter(dataset=dataset).values_list("label", "split", "metadata")) == [
        ("Cancellation", "pool", {"channel": "web"}), (None, "evaluation", {})]


@pytest.mark.parametrize("body, status, code, fragment", [
    ({"records": [{"text": "x"}]}, 400, "MISSING_REQUIRED_FIELD", "name field is required"),
    ({"name": "n"}, 400, "MISSING_REQUIRED_FIELD", "records field is required"),
    ({"name": "n", "records": []}, 400, "INVALID_FIELD", "at least one record"),
    ({"name": "n", "records": [{"text": "ok"}, {"text": "  "}]}, 400, "INVALID_FIELD", "records[1]: text is empty"),
    ({"name": "n", "records": [{"label": "A"}]}, 400, "INVALID_FIELD", 'records[0]: the "text" field is missing'),
    ({"name": "n", "records": [{"text": "a", "split": "train"}]}, 400, "INVALID_FIELD", "records[0]: split"),
    ({"name": 5, "records": [{"text": "a"}]}, 400, "INVALID_FIELD", "name"),
])
def test_create_from_json_validation(lead_api, body, status, code, fragment):
    assert fragment in assert_error(lead_api.post("/v2/datasets", body), status, code)["message"]
    assert not Dataset.objects.exists()


def test_upload_requires_a_file_and_a_name(lead_api):
    assert_error(lead_api.upload("/v2/datasets", {"name": "no file"}), 400, "MISSING_REQUIRED_FIELD")
    csv_file = io.BytesIO(CUSTOMER_CSV.encode())
    csv_file.name = "a.csv"
    assert_error(lead_api.upload("/v2/datasets", {"file": csv_file}), 400, "MISSING_REQUIRED_FIELD")


def test_annotator_cannot_create_append_export_or_delete(annotator_api, lead_api, ready_dataset):
    csv_file = io.BytesIO(CUSTOMER_CSV.encode())
    csv_file.name = "a.csv"
    assert_error(annotator_api.upload("/v2/datasets", {"name": "x", "file": csv_file}), 403, "FORBIDDEN")
    assert_error(annotator_api.post("/v2/datasets", {"name": "x", "records": [{"text": "a"}]}), 403, "FORBIDDEN")
    assert_error(annotator_api.post(f"/v2/datasets/{ready_dataset.id}/records", {"records": [{"text": "a"}]}), 403, "FORBIDDEN")
    assert_error(annotator_api.get(f"/v2/datasets/{ready_dataset.id}/export"), 403, "FORBIDDEN")
    assert_error(annotator_api.delete(f"/v2/datasets/{ready_dataset.id}"), 403, "FORBIDDEN")
    assert_error(lead_api.delete(f"/v2/datasets/{ready_dataset.id}"), 403, "FORBIDDEN")
    assert Dataset.objects.count() == 1


def test_another_workspace_dataset_is_404_everywhere(other_api, ready_dataset, django_capture_on_commit_callbacks):
    job = Job.objects.filter(dataset=ready_dataset).first()
    base = f"/v2/datasets/{ready_dataset.id}"
    for response in (other_api.get(base), other_api.get(f"{base}/records"), other_api.get(f"{base}/export"),
                     other_api.get(f"{base}/search", {"q": "cancel"}), other_api.delete(base),
                     other_api.post(f"{base}/records", {"records": [{"text": "a"}]}),
                     other_api.get(f"/v2/jobs/{job.id}"), other_api.get("/v2/datasets/999999")):
        assert_error(response, 404, "NOT_FOUND")
    assert other_api.get("/v2/datasets").json()["total"] == 0
    assert Record.objects.filter(dataset=ready_dataset).count() == 6


def test_records_list_filters_and_pagination(annotator_api, ready_dataset):
    url = f"/v2/datasets/{ready_dataset.id}/records"
    page = annotator_api.get(url, {"limit": 4}).json()
    assert (page["total"], len(page["data"]), page["has_more"]) == (6, 4, True)
    first = page["data"][0]
    assert first == {"id": first["id"], "dataset_id": ready_dataset.id, "text": "I want to cancel my credit card",
                     "metadata": {"channel": "web"}, "label": "Cancellation", "split": "pool"}
    assert annotator_api.get(url, {"offset": 4}).json()["data"][-1]["text"] == "My password reset link does not work"
    assert annotator_api.get(url, {"labeled": "true"}).json()["total"] == 4
    assert annotator_api.get(url, {"labeled": "false"}).json()["total"] == 2
    assert [r["label"] for r in annotator_api.get(url, {"label": "Billing"}).json()["data"]] == ["Billing", "Billing"]
    assert annotator_api.get(url, {"split": "evaluation"}).json()["total"] == 1
    assert_error(annotator_api.get(url, {"split": "train"}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url, {"labeled": "maybe"}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url, {"limit": 101}), 400, "INVALID_FIELD")


def test_records_list_query_count_does_not_grow_with_the_page(annotator_api, workspace, django_assert_max_num_queries):
    dataset = Dataset.objects.create(workspace=workspace, name="many", status="ready", record_count=100)
    Record.objects.bulk_create(Record(dataset=dataset, row_index=i, text=f"text {i}", label="A" if i % 2 else None)
                               for i in range(100))
    url = f"/v2/datasets/{dataset.id}/records"
    annotator_api.get(url, {"limit": 1})  # creates this period's rate-limit and usage rows
    with CaptureQueriesContext(connection) as one_record:
        annotator_api.get(url, {"limit": 1})
    own = [q["sql"] for q in one_record.captured_queries if "labeling_" in q["sql"]]
    assert len(own) == 3  # the dataset, the count, the page
    with django_assert_max_num_queries(len(one_record.captured_queries)):
        response = annotator_api.get(url, {"limit": 100, "labeled": "true"})
    assert len(response.json()["data"]) == 50


def test_append_records_embeds_them(lead_api, ready_dataset, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post(f"/v2/datasets/{ready_dataset.id}/records",
                                 {"records": [{"text": "Cancel my membership today", "label": "Cancellation"}]})
    assert response.status_code == 202 and response.json()["status"] == "processing"
    ready_dataset.refresh_from_db()
    assert (ready_dataset.status, ready_dataset.record_count, ready_dataset.embedded_count) == ("ready", 7, 7)
    assert Record.objects.get(dataset=ready_dataset, row_index=6).text == "Cancel my membership today"
    hits = lead_api.get(f"/v2/datasets/{ready_dataset.id}/search", {"q": "cancel membership", "limit": 1}).json()["data"]
    assert hits[0]["text"] == "Cancel my membership today"


def test_writing_while_an_import_runs_is_409(lead_api, workspace):
    dataset = Dataset.objects.create(workspace=workspace, name="busy", status="processing", phase="parsing")
    body = assert_error(lead_api.post(f"/v2/datasets/{dataset.id}/records", {"records": [{"text": "a"}]}), 409,
                        "DATASET_PROCESSING")
    assert "processing" in body["message"]
    assert_error(lead_api.get(f"/v2/datasets/{dataset.id}/search", {"q": "card"}), 409, "DATASET_PROCESSING")


def test_jobs_endpoint(lead_api, ready_dataset):
    for job in Job.objects.filter(dataset=ready_dataset):
        body = lead_api.get(f"/v2/jobs/{job.id}").json()
        assert set(body) == {"id", "kind", "status", "progress", "error", "result", "created_at", "finished_at"}
        assert body["status"] == "succeeded" and body["progress"] == 1.0 and body["error"] is None
        assert ISO_Z.match(body["created_at"]) and ISO_Z.match(body["finished_at"])
        assert body["result"]["dataset_id"] == ready_dataset.id
    assert_error(lead_api.get("/v2/jobs/424242"), 404, "NOT_FOUND")


def test_delete_removes_records_vectors_and_files(admin_api, ready_dataset, django_capture_on_commit_callbacks):
    source = ready_dataset.source_file
    assert default_storage.exists(source) and vectors_chunk_exists(dataset_id=ready_dataset.id, chunk_index=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.delete(f"/v2/datasets/{ready_dataset.id}")
    assert response.status_code == 204
    assert not Dataset.objects.exists() and not Record.objects.exists() and not Job.objects.exists()
    assert not default_storage.exists(source)
    assert not vectors_chunk_exists(dataset_id=ready_dataset.id, chunk_index=0)
    assert_error(admin_api.get(f"/v2/datasets/{ready_dataset.id}"), 404, "NOT_FOUND")
    from labelf_studio.workspaces.models import AuditEvent

    event = AuditEvent.objects.get(action="dataset.delete")
    assert event.actor_key is not None and event.actor_key.role == "admin"


# --- export ---------------------------------------------------------------------------------------

def test_export_csv_streams_current_labels_and_escapes_formulas(lead_api, ready_dataset):
    Record.objects.filter(dataset=ready_dataset, row_index=4).update(label="Technical")
    Record.objects.filter(dataset=ready_dataset, row_index=5).update(text="=HYPERLINK(\"http://evil\")", metadata={"channel": "@SUM(A1)"})
    response = lead_api.get(f"/v2/datasets/{ready_dataset.id}/export", {"format": "csv"})
    assert response.status_code == 200 and isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["id", "text", "label", "split", "channel"]
    assert len(rows) == 7
    assert rows[5][1:4] == ["The app crashes every time I log in", "Technical", "pool"]
    assert rows[6][1] == "'=HYPERLINK(\"http://evil\")" and rows[6][4] == "'@SUM(A1)"


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@x", "\tx", "\rx"])
def test_formula_cells_are_prefixed(value):
    assert selectors._cell(value) == "'" + value
    assert selectors._cell("plain " + value) == "plain " + value


def test_export_jsonl(lead_api, ready_dataset):
    response = lead_api.get(f"/v2/datasets/{ready_dataset.id}/export", {"format": "jsonl"})
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert len(lines) == 6
    assert lines[0]["text"] == "I want to cancel my credit card" and lines[0]["label"] == "Cancellation"
    assert lines[0]["metadata"] == {"channel": "web"} and lines[3]["split"] == "evaluation"
    assert_error(lead_api.get(f"/v2/datasets/{ready_dataset.id}/export", {"format": "xml"}), 400, "INVALID_FIELD")


def test_export_reads_the_database_in_chunks(ready_dataset, monkeypatch):
    seen = {}
    original = type(Record.objects.all()).iterator

    def spy(self, chunk_size=None):
        seen["chunk_size"] = chunk_size
        return original(self, chunk_size=chunk_size)

    monkeypatch.setattr(type(Record.objects.all()), "iterator", spy)
    lines = selectors.dataset_export_lines(dataset=ready_dataset, fmt="csv")
    next(lines)
    assert len(list(lines)) == 6
    assert seen["chunk_size"] == selectors.EXPORT_CHUNK_ROWS


# --- semantic search and similarity ---------------------------------------------------------------------

def test_search_finds_the_cancellation_message(annotator_api, ready_dataset):
    response = annotator_api.get(f"/v2/datasets/{ready_dataset.id}/search", {"q": "cancel my card", "limit": 3})
    assert response.status_code == 200
    hits = response.json()["data"]
    assert len(hits) == 3
    assert hits[0]["text"] == "I want to cancel my credit card"
    assert set(hits[0]) == {"id", "dataset_id", "text", "metadata", "label", "split", "score"}
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert 0.5 < hits[0]["score"] <= 1.0


def test_search_validation(annotator_api, ready_dataset):
    url = f"/v2/datasets/{ready_dataset.id}/search"
    assert_error(annotator_api.get(url), 400, "MISSING_REQUIRED_FIELD")
    assert_error(annotator_api.get(url, {"q": "  "}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url, {"q": "card", "limit": 0}), 400, "INVALID_FIELD")
    assert len(annotator_api.get(url, {"q": "card", "limit": 50}).json()["data"]) == 6


def test_similar_to_a_record(ready_dataset):
    record = Record.objects.get(dataset=ready_dataset, row_index=2)  # "Why was I charged twice this month?"
    hits = selectors.records_similar_to(dataset=ready_dataset, record=record, limit=2)
    assert record.id not in [r.id for r, _ in hits]
    assert hits[0][0].text == "There is an unknown fee on my invoice"


def test_similarity_matrix(annotator_api):
    texts = ["I want to cancel my subscription", "Please close my account", "The weather is lovely today"]
    matrix = annotator_api.post("/v2/similarity", {"texts": texts}).json()["matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(abs(matrix[i][i] - 1.0) < 1e-3 for i in range(3))
    assert matrix[0][1] == matrix[1][0]
    assert matrix[0][1] > matrix[0][2] + 0.2
    queries = annotator_api.post("/v2/similarity", {"texts": texts, "queries": ["cancel my plan"]}).json()["matrix"]
    assert len(queries) == 1 and len(queries[0]) == 3
    assert max(range(3), key=lambda i: queries[0][i]) == 0


@pytest.mark.parametrize("body, code", [
    ({}, "MISSING_REQUIRED_FIELD"),
    ({"queries": ["a"]}, "MISSING_REQUIRED_FIELD"),
    ({"texts": []}, "EMPTY_TEXTS"),
    ({"texts": ["  ", ""]}, "EMPTY_TEXTS"),
    ({"texts": ["a"] * 201}, "TOO_MANY_TEXTS"),
    ({"texts": ["a"], "queries": ["b"] * 201}, "TOO_MANY_TEXTS"),
    ({"texts": ["a"], "queries": []}, "EMPTY_TEXTS"),
    ({"texts": "a"}, "INVALID_FIELD"),
    ({"texts": ["a", 3]}, "INVALID_FIELD"),
])
def test_similarity_validation(annotator_api, body, code):
    assert_error(annotator_api.post("/v2/similarity", body), 400, code)


def test_openapi_documents_the_endpoints(anonymous_api):
    schema = anonymous_api.get("/v2/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v2/datasets", "/v2/datasets/{dataset_id}", "/v2/datasets/{dataset_id}/records",
                 "/v2/datasets/{dataset_id}/export", "/v2/datasets/{dataset_id}/search", "/v2/similarity",
                 "/v2/jobs/{job_id}"):
        assert path in paths, path
    assert {"202", "400", "403", "413"} <= set(paths["/v2/datasets"]["post"]["responses"])
    assert "409" in paths["/v2/datasets/{dataset_id}/records"]["post"]["responses"]
