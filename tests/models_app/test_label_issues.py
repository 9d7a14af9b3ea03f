"""Possible label errors through the API and the browser: scan, ranked queue, accept (relabel, history kept),
dismiss, stale issues, roles, idempotent scans."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Annotation, Record
from models_app.label_issue_services import label_issue_scan_run
from models_app.models import ClassificationModel, LabelIssue, LabelIssueScan, ModelStatus
from tests.conftest import assert_error

# (row of the b77 sample, wrong label): planted errors among otherwise correct labels.
FLIPS = {3: "exchange_rate", 17: "top_up_failed", 30: "card_arrival"}
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def model(created_model):
    return ClassificationModel.objects.get(pk=created_model["id"])


@pytest.fixture
def labeled(model, lead_api, b77_rows):
    """Every record labeled through the API with its Banking77 label, except FLIPS (wrong on purpose)."""
    records = list(Record.objects.filter(dataset_id=model.dataset_id).order_by("row_index"))
    labels = [{"record_id": r.id, "label": FLIPS.get(r.row_index, b77_rows[r.row_index][1])} for r in records]
    response = lead_api.post(f"/v2/models/{model.id}/labels", {"labels": labels})
    assert response.status_code == 200, response.content
    return {r.row_index: r for r in records}


@pytest.fixture
def scanned(model, labeled, lead_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post(f"/v2/models/{model.id}/label-issues/scan")
    assert response.status_code == 202, response.content
    scan = LabelIssueScan.objects.get(pk=response.json()["id"])
    assert scan.status == "succeeded", scan.error
    return scan


def open_issues(api, model, **params):
    response = api.get(f"/v2/models/{model.id}/label-issues", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_scan_flags_the_planted_errors_first_with_the_true_label_suggested(model, labeled, scanned, lead_api, b77_rows):
    body = open_issues(lead_api, model, limit=100)
    assert body["scan"]["status"] == "succeeded" and body["scan"]["result"]["labeled"] == len(b77_rows)
    issues = body["data"]
    assert body["total"] == len(issues) >= 2
    flipped_ids = {labeled[row].id: row for row in FLIPS}
    flagged = [issue for issue in issues if issue["record"]["id"] in flipped_ids]
    assert len(flagged) >= 2, issues
    # A planted error comes first, and the model suggests the label the record really has.
    top = issues[0]
    assert top["record"]["id"] in flipped_ids and top["rank"] == 1
    for issue in flagged:
        row = flipped_ids[issue["record"]["id"]]
        assert issue["given_label"] == FLIPS[row] and issue["suggested_label"] == b77_rows[row][1]
        assert issue["record"]["text"] == b77_rows[row][0]
    assert [i["score"] for i in issues] == sorted((i["score"] for i in issues), reverse=True)
    assert all(0.5 < i["score"] <= 1 for i in flagged)
    # Most of what is flagged is planted (the sample's own labels are right).
    assert len(flagged) / len(issues) >= 0.6


def test_accepting_relabels_the_record_and_keeps_the_old_label_in_history(model, scanned, lead_api, lead_user):
    issue = open_issues(lead_api, model)["data"][0]
    response = lead_api.post(f"/v2/models/{model.id}/label-issues/{issue['id']}", {"action": "accept"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted" and response.json()["resolved_label"] == issue["suggested_label"]
    record = Record.objects.get(pk=issue["record"]["id"])
    assert record.label == issue["suggested_label"]
    history = list(Annotation.objects.filter(record=record).order_by("created_at", "id").values_list("label", "is_current"))
    assert history == [(issue["given_label"], False), (issue["suggested_label"], True)]
    assert Annotation.objects.filter(record=record, is_current=True).get().user == lead_user
    # Gone from the open queue, listed as accepted; accepting again is harmless, dismissing now is a conflict.
    assert issue["id"] not in {i["id"] for i in open_issues(lead_api, model, limit=100)["data"]}
    assert [i["id"] for i in open_issues(lead_api, model, status="accepted")["data"]] == [issue["id"]]
    again = lead_api.post(f"/v2/models/{model.id}/label-issues/{issue['id']}", {"action": "accept"})
    assert again.status_code == 200 and Annotation.objects.filter(record=record).count() == 2
    assert_error(lead_api.post(f"/v2/models/{model.id}/label-issues/{issue['id']}", {"action": "dismiss"}), 409, "CONFLICT")


def test_accept_with_another_label_and_validation(model, scanned, lead_api):
    issue = open_issues(lead_api, model)["data"][0]
    url = f"/v2/models/{model.id}/label-issues/{issue['id']}"
    other = next(label for label in model.labels if label not in (issue["given_label"], issue["suggested_label"]))
    assert_error(lead_api.post(url, {}), 400, "MISSING_REQUIRED_FIELD")
    assert_error(lead_api.post(url, {"action": "relabel"}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"action": "accept", "label": "no such label"}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"action": "accept", "label": issue["given_label"]}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"action": "dismiss", "label": other}), 400, "INVALID_FIELD")
    assert_error(lead_api.post(url, {"action": "accept", "label": ["x"]}), 400, "INVALID_FIELD")
    assert Record.objects.get(pk=issue["record"]["id"]).label == issue["given_label"]  # nothing written so far
    response = lead_api.post(url, {"action": "accept", "label": other})
    assert response.status_code == 200 and response.json()["resolved_label"] == other
    assert Record.objects.get(pk=issue["record"]["id"]).label == other
    assert_error(lead_api.post(f"/v2/models/{model.id}/label-issues/987654321", {"action": "accept"}), 404, "NOT_FOUND")


def test_dismissed_records_are_not_raised_again_and_a_rescan_replaces_open_issues(
        model, scanned, lead_api, django_capture_on_commit_callbacks):
    issues = open_issues(lead_api, model, limit=100)["data"]
    dismissed = issues[0]
    response = lead_api.post(f"/v2/models/{model.id}/label-issues/{dismissed['id']}", {"action": "dismiss"})
    assert response.status_code == 200 and response.json()["status"] == "dismissed"
    assert Record.objects.get(pk=dismissed["record"]["id"]).label == dismissed["given_label"]
    with django_capture_on_commit_callbacks(execute=True):
        rescan = lead_api.post(f"/v2/models/{model.id}/label-issues/scan")
    assert rescan.status_code == 202 and rescan.json()["id"] != scanned.id
    body = open_issues(lead_api, model, limit=100)
    assert body["scan"]["id"] == rescan.json()["id"] and body["scan"]["status"] == "succeeded"
    assert dismissed["record"]["id"] not in {i["record"]["id"] for i in body["data"]}
    assert {i["scan_id"] for i in body["data"]} == {rescan.json()["id"]}
    assert body["total"] == len(issues) - 1
    assert LabelIssue.objects.filter(model=model, status="dismissed").count() == 1  # the review's history stays


def test_an_issue_whose_record_was_relabeled_leaves_the_queue_and_cannot_be_accepted(model, scanned, lead_api):
    issue = open_issues(lead_api, model)["data"][0]
    other = next(label for label in model.labels if label not in (issue["given_label"], issue["suggested_label"]))
    lead_api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": issue["record"]["id"], "label": other}]})
    assert issue["id"] not in {i["id"] for i in open_issues(lead_api, model, limit=100)["data"]}
    assert_error(lead_api.post(f"/v2/models/{model.id}/label-issues/{issue['id']}", {"action": "accept"}), 409, "CONFLICT")
    assert Record.objects.get(pk=issue["record"]["id"]).label == other


def test_a_second_scan_request_returns_the_queued_one_and_the_task_is_idempotent(model, labeled, lead_api):
    first = lead_api.post(f"/v2/models/{model.id}/label-issues/scan")  # on_commit not run: stays queued
    second = lead_api.post(f"/v2/models/{model.id}/label-issues/scan")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and first.json()["status"] == "queued"
    assert label_issue_scan_run(scan_id=first.json()["id"]) == "succeeded"
    count = LabelIssue.objects.filter(model=model).count()
    assert count > 0
    assert label_issue_scan_run(scan_id=first.json()["id"]) == "skipped"
    assert LabelIssue.objects.filter(model=model).count() == count


def test_too_few_labels_is_a_successful_scan_that_says_why(model, lead_api, django_capture_on_commit_callbacks):
    record = Record.objects.filter(dataset_id=model.dataset_id).first()
    lead_api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": record.id, "label": model.labels[0]}]})
    with django_capture_on_commit_callbacks(execute=True):
        scan = lead_api.post(f"/v2/models/{model.id}/label-issues/scan").json()
    body = open_issues(lead_api, model)
    assert body["data"] == [] and body["scan"]["id"] == scan["id"] and body["scan"]["status"] == "succeeded"
    assert "at least" in body["scan"]["result"]["skipped_reason"]


def test_roles_and_archived_models(model, annotator_api, lead_api, admin_api):
    assert_error(annotator_api.post(f"/v2/models/{model.id}/label-issues/scan"), 403, "FORBIDDEN")
    assert_error(annotator_api.get(f"/v2/models/{model.id}/label-issues"), 403, "FORBIDDEN")
    assert_error(annotator_api.post(f"/v2/models/{model.id}/label-issues/1", {"action": "accept"}), 403, "FORBIDDEN")
    assert_error(lead_api.get(f"/v2/models/{model.id}/label-issues", {"status": "everything"}), 400, "INVALID_FIELD")
    assert lead_api.get(f"/v2/models/{model.id}/label-issues").json()["scan"] is None
    ClassificationModel.objects.filter(pk=model.id).update(status=ModelStatus.ARCHIVED)
    assert_error(lead_api.post(f"/v2/models/{model.id}/label-issues/scan"), 409, "MODEL_ARCHIVED")


# --- browser ------------------------------------------------------------------------------------------

def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_review_page_lists_issues_and_htmx_accept_swaps_the_card(model, scanned, lead_user, annotator_user):
    client = browser(lead_user)
    first = LabelIssue.objects.filter(model=model, status="open").order_by("rank").first()
    page = client.get(reverse("label_issues_page", args=[model.id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert first.record.text in html and f'id="issue-{first.id}"' in html and "labelf/label_issues.js" in html
    assert "<script>" not in html  # no inline scripts (CSP)
    assert reverse("label_issues_page", args=[model.id]).encode() in client.get(reverse("model_detail", args=[model.id])).content
    card = client.post(reverse("label_issue_resolve", args=[model.id, first.id]), {"action": "accept", "label": ""}, **HTMX)
    assert card.status_code == 200 and b'data-status="accepted"' in card.content
    assert Record.objects.get(pk=first.record_id).label == first.suggested_label
    # An error shows in the card instead of failing the swap.
    card = client.post(reverse("label_issue_resolve", args=[model.id, first.id]), {"action": "dismiss"}, **HTMX)
    assert card.status_code == 200 and b"data-error" in card.content and b"already accepted" in card.content
    assert browser(annotator_user).get(reverse("label_issues_page", args=[model.id])).status_code == 403
    assert b"Possible label errors" not in browser(annotator_user).get(reverse("model_detail", args=[model.id])).content


def test_a_card_replaced_by_a_newer_scan_says_so_instead_of_doing_nothing(model, scanned, lead_user):
    # A rescan deletes the open issues; the card still on screen posts an id that no longer exists.
    client = browser(lead_user)
    stale = LabelIssue.objects.filter(model=model, status="open").order_by("rank").first()
    LabelIssue.objects.filter(pk=stale.pk).delete()
    card = client.post(reverse("label_issue_resolve", args=[model.id, stale.id]), {"action": "accept"}, **HTMX)
    assert card.status_code == 200  # htmx swaps it
    assert f'id="issue-{stale.id}"'.encode() in card.content and b"no longer open" in card.content
    assert client.post(reverse("label_issue_resolve", args=[model.id, stale.id]), {"action": "accept"}).status_code == 404


def test_the_scan_button_queues_a_scan_and_the_panel_polls_until_it_ends(model, labeled, lead_user):
    client = browser(lead_user)
    response = client.post(reverse("label_issues_scan", args=[model.id]))  # on_commit not run: the scan stays queued
    assert response.status_code == 302
    panel = client.get(reverse("label_issues_progress", args=[model.id]), **HTMX)
    assert b'hx-trigger="every 1s"' in panel.content and "HX-Refresh" not in panel
    label_issue_scan_run(scan_id=LabelIssueScan.objects.get(model=model).id)
    panel = client.get(reverse("label_issues_progress", args=[model.id]), **HTMX)
    assert panel["HX-Refresh"] == "true" and b"every 1s" not in panel.content
