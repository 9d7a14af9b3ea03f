"""Near-duplicate groups through the API and the browser: groups from real vectors, the threshold, exclusion from
the pool and back, labeling a group, roles, a cached and idempotent scan."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.duplicates_services import duplicate_scan_run
from labeling.models import Annotation, Dataset, Record, Recommendation
from models_app.models import DuplicateScan
from tests.conftest import assert_error

TEXTS = [
    "How do I reset my password?",          # 0 ┐ near-duplicates (punctuation)
    "How do I reset my password",           # 1 ┘
    "I want to cancel my subscription",     # 2 ┐ the same text up to case and spacing
    "i want to  cancel my SUBSCRIPTION ",   # 3 │
    "I want to cancel my subscription",     # 4 ┘
    "Why was I charged twice this month?",  # 5
    "The app crashes every time I log in",  # 6
    "Where is my parcel?",                  # 7
]
CSV = "text,label\n" + "\n".join(f'"{text}",' for text in TEXTS) + "\n"


@pytest.fixture
def dataset(lead_api, upload):
    response = upload(lead_api, CSV)
    assert response.status_code == 202, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready", dataset.error
    return dataset


@pytest.fixture
def rows(dataset):
    return {r.row_index: r for r in Record.objects.filter(dataset=dataset)}


def groups_of(body, rows):
    by_id = {r.id: i for i, r in rows.items()}
    return [sorted(by_id[record_id] for record_id in group["record_ids"]) for group in body["data"]]


@pytest.fixture
def scanned(dataset, lead_api, django_capture_on_commit_callbacks):
    """The first call queues the scan and says so; the task runs after its commit (here: eagerly)."""
    with django_capture_on_commit_callbacks(execute=True):
        first = lead_api.get(f"/v2/datasets/{dataset.id}/duplicates")
    assert first.status_code == 200, first.content
    assert first.json()["status"] == "queued" and first.json()["data"] == []
    response = lead_api.get(f"/v2/datasets/{dataset.id}/duplicates")
    assert response.status_code == 200, response.content
    return response.json()


def get_scanned(api, url, params, capture):
    with capture(execute=True):
        api.get(url, params)
    return api.get(url, params).json()


def test_groups_near_and_exact_duplicates_largest_first(dataset, rows, scanned, annotator_api):
    assert scanned["status"] == "succeeded" and scanned["threshold"] == 0.95 and scanned["method"] == "exact"
    assert groups_of(scanned, rows) == [[2, 3, 4], [0, 1]]
    assert scanned["group_count"] == scanned["total"] == 2 and scanned["duplicate_records"] == 3
    first = scanned["data"][0]
    assert first["index"] == 0 and first["size"] == 3 and first["excluded"] == 0
    assert [r["text"] for r in first["records"]] == [TEXTS[2], TEXTS[3], TEXTS[4]]
    assert [r["row_index"] for r in first["records"]] == [2, 3, 4]  # the row numbers the dataset page shows
    # Cached: any role reads the same scan without computing it again.
    again = annotator_api.get(f"/v2/datasets/{dataset.id}/duplicates", {"limit": 1, "offset": 1})
    assert again.status_code == 200 and groups_of(again.json(), rows) == [[0, 1]] and again.json()["has_more"] is False
    assert DuplicateScan.objects.filter(dataset=dataset).count() == 1


def test_the_threshold_is_validated_and_a_strict_one_keeps_only_equal_texts(
        dataset, rows, lead_api, django_capture_on_commit_callbacks):
    for bad in ("0.5", "abc", "1.5", "nan"):
        assert_error(lead_api.get(f"/v2/datasets/{dataset.id}/duplicates", {"threshold": bad}), 400, "INVALID_FIELD")
    strict = get_scanned(lead_api, f"/v2/datasets/{dataset.id}/duplicates", {"threshold": "1.0"},
                         django_capture_on_commit_callbacks)
    assert strict["threshold"] == 1.0 and [2, 3, 4] in groups_of(strict, rows)
    assert [0, 1] not in groups_of(strict, rows)
    rounded = lead_api.get(f"/v2/datasets/{dataset.id}/duplicates", {"threshold": "0.999"}).json()
    assert rounded["threshold"] == 1.0  # two decimals: the same cached scan
    assert DuplicateScan.objects.filter(dataset=dataset).count() == 1


def test_exclude_keeps_one_record_per_group_and_can_be_undone(dataset, rows, scanned, lead_api, model_on):
    model = model_on(dataset)
    Recommendation.objects.create(model=model, record=rows[1], position=1, score=0.5, reason="uncertain")
    # A labeled record is the one kept in its group.
    lead_api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": rows[3].id, "label": "Cancellation"}]})
    response = lead_api.post(f"/v2/datasets/{dataset.id}/duplicates/exclude", {})
    assert response.status_code == 200, response.content
    assert response.json() == {"excluded": 3, "restored": 0, "groups": 2}
    excluded = {i for i, r in rows.items() if Record.objects.get(pk=r.id).excluded}
    assert excluded == {1, 2, 4}
    assert not Recommendation.objects.filter(record=rows[1]).exists()  # out of the queue at once
    listed = lead_api.get(f"/v2/datasets/{dataset.id}/duplicates").json()
    assert [g["excluded"] for g in listed["data"]] == [2, 1]
    undo = lead_api.post(f"/v2/datasets/{dataset.id}/duplicates/exclude", {"exclude": False, "groups": [1]})
    assert undo.json() == {"excluded": 0, "restored": 1, "groups": 1}
    assert not Record.objects.get(pk=rows[1].id).excluded and Record.objects.get(pk=rows[2].id).excluded
    assert lead_api.post(f"/v2/datasets/{dataset.id}/duplicates/exclude", {"exclude": False}).json()["restored"] == 2
    assert not Record.objects.filter(dataset=dataset, excluded=True).exists()


def test_exclude_needs_a_finished_scan_valid_groups_and_a_lead(dataset, scanned, lead_api, annotator_api):
    url = f"/v2/datasets/{dataset.id}/duplicates/exclude"
    assert_error(lead_api.post(url, {"threshold": 0.9}), 409, "CONFLICT")  # never scanned at 0.90
    assert_error(lead_api.post(url, {"groups": [5]}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"groups": "all"}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"exclude": "yes"}), 400, "INVALID_FIELD")
    assert_error(annotator_api.post(url, {}), 403, "FORBIDDEN")
    assert not Record.objects.filter(dataset=dataset, excluded=True).exists()


def test_a_group_is_labeled_through_the_labels_endpoint(dataset, rows, scanned, lead_api, model_on):
    model = model_on(dataset)
    group = scanned["data"][0]["record_ids"]
    response = lead_api.post(f"/v2/models/{model.id}/labels",
                             {"labels": [{"record_id": record_id, "label": "Cancellation"} for record_id in group]})
    assert response.status_code == 200 and response.json()["accepted"] == 3
    assert set(Record.objects.filter(id__in=group).values_list("label", flat=True)) == {"Cancellation"}


def test_scan_is_idempotent_and_waits_for_a_ready_dataset(dataset, lead_api):
    scan = DuplicateScan.objects.create(dataset=dataset, threshold="0.95")
    assert duplicate_scan_run(scan_id=scan.id) == "succeeded"
    groups = DuplicateScan.objects.get(pk=scan.id).groups
    assert duplicate_scan_run(scan_id=scan.id) == "skipped"
    assert DuplicateScan.objects.get(pk=scan.id).groups == groups and len(groups) == 2
    Dataset.objects.filter(pk=dataset.id).update(status="processing")
    assert_error(lead_api.get(f"/v2/datasets/{dataset.id}/duplicates", {"threshold": 0.9}), 409, "DATASET_PROCESSING")


def test_a_failed_scan_is_reported_until_a_lead_retries_it(dataset, lead_api, annotator_api, django_capture_on_commit_callbacks):
    Dataset.objects.filter(pk=dataset.id).update(record_count=dataset.record_count + 1)  # vectors and rows disagree
    failed = get_scanned(lead_api, f"/v2/datasets/{dataset.id}/duplicates", {}, django_capture_on_commit_callbacks)
    assert failed["status"] == "failed" and "expected 9" in failed["error"] and failed["data"] == []
    assert lead_api.get(f"/v2/datasets/{dataset.id}/duplicates").json()["status"] == "failed"  # not retried by reads
    Dataset.objects.filter(pk=dataset.id).update(record_count=dataset.record_count)
    assert_error(annotator_api.post(f"/v2/datasets/{dataset.id}/duplicates/scan", {}), 403, "FORBIDDEN")
    with django_capture_on_commit_callbacks(execute=True):
        retry = lead_api.post(f"/v2/datasets/{dataset.id}/duplicates/scan", {"threshold": 0.95})
    assert retry.status_code == 202 and retry.json()["status"] == "queued"
    retried = lead_api.get(f"/v2/datasets/{dataset.id}/duplicates").json()
    assert retried["status"] == "succeeded" and retried["total"] == 2
    again = lead_api.post(f"/v2/datasets/{dataset.id}/duplicates/scan", {})
    assert again.status_code == 202 and again.json()["status"] == "succeeded"  # up to date: nothing queued


def test_appending_records_makes_the_cached_groups_stale(dataset, rows, scanned, lead_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        appended = lead_api.post(f"/v2/datasets/{dataset.id}/records", {"records": [{"text": "Where is my parcel??"}]})
    assert appended.status_code == 202, appended.content
    assert Dataset.objects.get(pk=dataset.id).status == "ready"
    fresh = get_scanned(lead_api, f"/v2/datasets/{dataset.id}/duplicates", {}, django_capture_on_commit_callbacks)
    assert fresh["status"] == "succeeded" and fresh["total"] == 3
    newest = Record.objects.get(dataset=dataset, row_index=len(TEXTS))
    assert sorted(fresh["data"][-1]["record_ids"]) == sorted([rows[7].id, newest.id])


# --- browser ------------------------------------------------------------------------------------------

@pytest.fixture
def model_on(lead_api):
    from models_app.models import ClassificationModel

    def make(dataset):
        response = lead_api.post("/v2/models", {"name": "Reasons", "dataset_id": dataset.id, "labels": [
            {"name": "Cancellation", "description": "cancel a subscription"},
            {"name": "Access", "description": "logging in and passwords"}]})
        assert response.status_code == 201, response.content
        return ClassificationModel.objects.get(pk=response.json()["id"])

    return make


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_duplicates_page_shows_groups_and_leads_exclude_and_label_groups(
        dataset, rows, lead_user, annotator_user, model_on, django_capture_on_commit_callbacks):
    model = model_on(dataset)
    lead = browser(lead_user)
    detail = lead.get(reverse("dataset_detail", args=[dataset.id])).content.decode()
    assert reverse("dataset_duplicates", args=[dataset.id]) in detail
    with django_capture_on_commit_callbacks(execute=True):
        lead.get(reverse("dataset_duplicates", args=[dataset.id]))
    page = lead.get(reverse("dataset_duplicates", args=[dataset.id]))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="duplicate-group-count">2<' in html
    assert "I want to cancel my subscription" in html and "How do I reset my password" in html
    assert 'id="exclude-all"' in html and f'value="{model.id}:Cancellation"' in html
    assert "<script>" not in html
    response = lead.post(reverse("dataset_duplicates_exclude", args=[dataset.id]), {"threshold": "0.95", "exclude": "1"})
    assert response.status_code == 302
    assert Record.objects.filter(dataset=dataset, excluded=True).count() == 3
    response = lead.post(reverse("dataset_duplicates_label", args=[dataset.id]),
                         {"threshold": "0.95", "group": "1", "choice": f"{model.id}:Access"})
    assert response.status_code == 302
    assert {Record.objects.get(pk=rows[i].id).label for i in (0, 1)} == {"Access"}
    assert Annotation.objects.filter(record__in=[rows[0], rows[1]], user=lead_user, is_current=True).count() == 2
    # Annotators see the groups but not the lead's buttons, and cannot post them.
    viewer = browser(annotator_user)
    html = viewer.get(reverse("dataset_duplicates", args=[dataset.id])).content.decode()
    assert "I want to cancel my subscription" in html and 'id="exclude-all"' not in html
    assert viewer.post(reverse("dataset_duplicates_exclude", args=[dataset.id]), {"exclude": "0"}).status_code == 403
    assert Record.objects.filter(dataset=dataset, excluded=True).count() == 3


def test_duplicates_page_polls_while_the_scan_runs(dataset, lead_user):
    client = browser(lead_user)
    page = client.get(reverse("dataset_duplicates", args=[dataset.id]), {"threshold": "0.9"})  # on_commit not run: queued
    assert b'hx-trigger="every 1s"' in page.content
    duplicate_scan_run(scan_id=DuplicateScan.objects.get(dataset=dataset).id)
    panel = client.get(reverse("dataset_duplicates_progress", args=[dataset.id]), {"threshold": "0.9"}, HTTP_HX_REQUEST="true")
    assert panel["HX-Refresh"] == "true"
