"""Browser pages for datasets (Django test client): upload, progress, records, search, export, delete."""
from __future__ import annotations


import pytest
from django.test import Client

from labeling.models import Dataset, Record
from tests.factories import make_user, make_workspace
from tests.labeling.conftest import CUSTOMER_CSV, named_file

HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def lead(lead_user):
    return _client(lead_user)


@pytest.fixture
def annotator(annotator_user):
    return _client(annotator_user)


@pytest.fixture
def admin(admin_user):
    return _client(admin_user)


def test_list_page_shows_upload_only_to_leads(lead, annotator, ready_dataset):
    page = lead.get("/datasets/").content.decode()
    assert "Customer messages" in page and "data-dropzone" in page and "labelf/datasets.js" in page
    assert "<script>" not in page.replace('<script src=', "")  # no inline script (CSP)
    page = annotator.get("/datasets/").content.decode()
    assert "Customer messages" in page and "data-dropzone" not in page


def test_large_counts_are_grouped_by_thousands(lead, ready_dataset):
    Dataset.objects.filter(pk=ready_dataset.pk).update(record_count=10003)
    assert "<td>10,003</td>" in lead.get("/datasets/").content.decode()
    assert "10,003 records" in lead.get(f"/datasets/{ready_dataset.id}/").content.decode()
    assert "10,003 records" in lead.get("/").content.decode()


def test_annotator_cannot_upload(annotator):
    response = annotator.post("/datasets/upload/", {"name": "x", "file": named_file(CUSTOMER_CSV.encode(), "a.csv")})
    assert response.status_code == 403
    assert not Dataset.objects.exists()


def test_browser_upload_imports_and_redirects(lead, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = lead.post("/datasets/upload/", {"name": "Support inbox", "file": named_file(CUSTOMER_CSV.encode(), "inbox.csv")})
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/datasets/{dataset.id}/"
    assert dataset.status == "ready" and dataset.record_count == 6
    page = lead.get(response["Location"]).content.decode()
    assert "I want to cancel my credit card" in page and "Cancellation" in page


def test_browser_upload_names_the_text_and_label_columns(lead, django_capture_on_commit_callbacks):
    content = b"Message;Category;ticket\nMy parcel is late;shipping;17\nRefund please;;18\n"
    with django_capture_on_commit_callbacks(execute=True):
        response = lead.post("/datasets/upload/", {"name": "Tickets", "file": named_file(content, "tickets.csv"),
                                                   "text_column": "message", "label_column": "Category"})
    assert response.status_code == 302, response.content.decode()[:2000]
    dataset = Dataset.objects.get()
    assert dataset.status == "ready" and dataset.metadata_columns == ["ticket"]
    assert list(dataset.records.order_by("row_index").values_list("text", "label")) == [
        ("My parcel is late", "shipping"), ("Refund please", None)]


def test_browser_upload_with_a_missing_named_column_shows_the_error(lead):
    response = lead.post("/datasets/upload/", {"name": "bad", "file": named_file(b"message\nhello\n", "bad.csv"),
                                               "text_column": "body"})
    assert response.status_code == 400
    assert "the text column &quot;body&quot; is not in the file; found columns: message" in response.content.decode()
    assert not Dataset.objects.exists()


def test_label_bars_keep_long_names_on_one_line_and_link_to_their_records(lead, ready_dataset):
    # Long snake_case names spilled out of the bar's grid cell over the bar and the count.
    long_name = "balance_not_updated_after_cheque_or_cash_deposit_reported_through_mobile_application_channel"
    record = Record.objects.filter(dataset=ready_dataset).order_by("row_index").first()
    Record.objects.filter(pk=record.pk).update(label=long_name)
    page = lead.get(f"/datasets/{ready_dataset.id}/").content.decode()
    assert (f'<a class="bar-label" title="{long_name}: show its records" '
            f'href="/datasets/{ready_dataset.id}/?label={long_name}">{long_name}</a>') in page
    filtered = lead.get(f"/datasets/{ready_dataset.id}/", {"label": long_name}).content.decode()
    assert 'Records <span class="muted">(1)</span>' in filtered


def test_a_file_without_a_text_column_opens_the_column_fields(lead):
    # The error names the columns found; the fields that fix it must be in view, not folded away.
    response = lead.post("/datasets/upload/", {"name": "Tickets", "file": named_file(b"message,category\nhi,a\n", "t.csv")})
    page = response.content.decode()
    assert response.status_code == 400 and "found columns: message, category" in page
    assert '<details open id="column-mapping">' in page
    assert "Columns named differently?" in page and "choose the file again" in page
    # A ";"-separated file without a text column: the columns are named one by one, not as one run-together name.
    response = lead.post("/datasets/upload/", {"name": "Tickets", "file": named_file(b"message;topic;source\nhi;a;chat\n", "t.csv")})
    assert response.status_code == 400 and "found columns: message, topic, source" in response.content.decode()
    page = lead.get("/datasets/").content.decode()
    assert '<details id="column-mapping">' in page  # folded away on a plain visit
    # JSONL has no header; its first record is checked at once, with the same hint.
    response = lead.post("/datasets/upload/", {"name": "J", "file": named_file(b'{"body": "hi"}\n', "t.jsonl")})
    page = response.content.decode()
    assert response.status_code == 400 and "the &quot;text&quot; field is missing" in page
    assert '<details open id="column-mapping">' in page and not Dataset.objects.exists()


def test_browser_upload_with_a_bad_file_shows_the_error(lead):
    response = lead.post("/datasets/upload/", {"name": "bad", "file": named_file(b"message\nhello\n", "bad.csv")})
    assert response.status_code == 400
    assert "a &quot;text&quot; column is required" in response.content.decode()
    assert not Dataset.objects.exists()


def test_browser_upload_over_the_limit_is_413(lead, settings):
    settings.LABELF = {**settings.LABELF, "MAX_UPLOAD_BYTES": 100}
    response = lead.post("/datasets/upload/", {"name": "big", "file": named_file(b"text\n" + b"hello\n" * 50, "big.csv")})
    assert response.status_code == 413 and "the limit is 100 bytes" in response.content.decode()


def test_progress_partial_polls_while_processing_and_stops_after(lead, workspace):
    dataset = Dataset.objects.create(workspace=workspace, name="busy", status="processing", phase="embedding",
                                     progress=0.75, record_count=10, embedded_count=5)
    partial = lead.get(f"/datasets/{dataset.id}/progress/", **HTMX)
    html = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in html
    assert 'hx-trigger="every 1s"' in html and "75%" in html and "5 of 10 records embedded" in html
    assert "HX-Refresh" not in partial
    full = lead.get(f"/datasets/{dataset.id}/progress/").content.decode()
    assert "<html" in full and 'hx-trigger="every 1s"' in full

    Dataset.objects.filter(pk=dataset.pk).update(status="ready", phase="done", progress=1.0)
    finished = lead.get(f"/datasets/{dataset.id}/progress/", **HTMX)
    assert "every 1s" not in finished.content.decode()
    assert finished["HX-Refresh"] == "true"  # the page reloads once to show the records


def test_failed_import_shows_its_error(lead, workspace):
    dataset = Dataset.objects.create(workspace=workspace, name="broken", status="failed", phase="failed",
                                     error="Line 7: text is empty")
    page = lead.get(f"/datasets/{dataset.id}/").content.decode()
    assert "Import failed" in page and "Line 7: text is empty" in page and "every 1s" not in page


def test_record_table_filters(annotator, ready_dataset):
    url = f"/datasets/{ready_dataset.id}/"

    def texts(params):
        html = annotator.get(url, params, **HTMX).content.decode()
        assert "<html" not in html  # htmx gets the table only
        return [r.text for r in Record.objects.filter(dataset=ready_dataset) if r.text in html]

    assert len(texts({})) == 6
    assert texts({"labeled": "no"}) == ["The app crashes every time I log in", "My password reset link does not work"]
    assert texts({"label": "Billing"}) == ["Why was I charged twice this month?", "There is an unknown fee on my invoice"]
    assert texts({"split": "evaluation"}) == ["There is an unknown fee on my invoice"]
    assert texts({"meta_key": "channel", "meta_value": "email"}) == [
        "Please close my account and cancel the subscription", "My password reset link does not work"]
    assert texts({"q": "PASSWORD"}) == ["My password reset link does not work"]
    full = annotator.get(url, {"label": "Billing"}).content.decode()
    assert "<html" in full and 'class="bar-row"' in full  # the page with the label distribution


def test_semantic_search_and_find_similar(annotator, ready_dataset):
    html = annotator.get(f"/datasets/{ready_dataset.id}/", {"semantic": "cancel my card"}, **HTMX).content.decode()
    first_row = html.split("<tbody>")[1].split("</tr>")[0]
    assert "I want to cancel my credit card" in first_row
    record = Record.objects.get(dataset=ready_dataset, row_index=2)
    html = annotator.get(f"/datasets/{ready_dataset.id}/", {"similar_to": record.id}, **HTMX).content.decode()
    first_row = html.split("<tbody>")[1].split("</tr>")[0]
    assert "There is an unknown fee on my invoice" in first_row
    assert f"similar_to={record.id}" in annotator.get(f"/datasets/{ready_dataset.id}/").content.decode()


def test_texts_are_escaped(annotator, ready_dataset):
    Record.objects.filter(dataset=ready_dataset, row_index=0).update(
        text="<script>alert('x')</script>", metadata={"<b>k</b>": "<img src=x onerror=alert(1)>"})
    html = annotator.get(f"/datasets/{ready_dataset.id}/").content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_export_download(lead, annotator, ready_dataset):
    response = lead.get(f"/datasets/{ready_dataset.id}/export/", {"format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0] == "id,text,label,split,channel" and len(body.splitlines()) == 7
    assert annotator.get(f"/datasets/{ready_dataset.id}/export/").status_code == 403


def test_delete_needs_admin(lead, admin, admin_user, ready_dataset, django_capture_on_commit_callbacks):
    assert lead.post(f"/datasets/{ready_dataset.id}/delete/").status_code == 403
    page = admin.get(f"/datasets/{ready_dataset.id}/").content.decode()
    assert "data-confirm=" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"/datasets/{ready_dataset.id}/delete/")
    assert response.status_code == 302 and not Dataset.objects.exists() and not Record.objects.exists()

    # Who deleted what stays in the audit log (with the upload that created it).
    from labelf_studio.workspaces.models import AuditEvent

    deleted = AuditEvent.objects.get(action="dataset.delete")
    assert deleted.actor == admin_user
    assert deleted.target == f"dataset {ready_dataset.id} ({ready_dataset.name})"
    assert deleted.details["records"] == ready_dataset.record_count
    assert AuditEvent.objects.filter(action="dataset.create", target=deleted.target).exists()
    assert "dataset.delete" in admin.get("/workspace/audit/").content.decode()


def test_another_workspace_dataset_is_404(ready_dataset):
    stranger = _client(make_user(make_workspace(), "admin"))
    for url in (f"/datasets/{ready_dataset.id}/", f"/datasets/{ready_dataset.id}/progress/",
                f"/datasets/{ready_dataset.id}/export/"):
        assert stranger.get(url).status_code == 404
    assert stranger.post(f"/datasets/{ready_dataset.id}/delete/").status_code == 404
    assert Dataset.objects.filter(pk=ready_dataset.pk).exists()
