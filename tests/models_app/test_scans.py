"""Both background scans (near-duplicates, possible label errors) when the task queue cannot be reached: the
request still answers, and the scan fails at once with a message saying why instead of staying queued for ever."""
from __future__ import annotations

import pytest

from models_app.models import DuplicateScan, LabelIssueScan, ScanStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("labeling.duplicates_tasks.scan_duplicates.delay", refuse)
    monkeypatch.setattr("models_app.label_issue_tasks.scan_label_issues.delay", refuse)


def _assert_failed_for_the_queue(scan):
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and scan.finished_at is not None
    assert "task queue is unreachable" in scan.error


def test_label_issue_scan_fails_readably_when_the_queue_is_down(lead_api, created_model, broker_down,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post(f"/v2/models/{created_model['id']}/label-issues/scan", {})
    assert response.status_code == 202, response.content
    _assert_failed_for_the_queue(LabelIssueScan.objects.get(pk=response.json()["id"]))


def test_duplicate_scan_fails_readably_when_the_queue_is_down(lead_api, ready_dataset, broker_down,
                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_api.post(f"/v2/datasets/{ready_dataset.id}/duplicates/scan", {})
    assert response.status_code in (200, 202), response.content
    _assert_failed_for_the_queue(DuplicateScan.objects.get(dataset=ready_dataset))
