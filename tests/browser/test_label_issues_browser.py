"""A lead reviews possible label errors by keyboard, and excludes near-duplicates from the pool, in Chromium."""
from __future__ import annotations

import time

import numpy as np
import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, Record
from labeling.queue import labels_submit
from models_app.label_issue_services import label_issue_scan_run
from models_app.models import LabelIssue, LabelIssueScan
from tests.training.helpers import fresh_caches, make_dataset, normalised, random_setup  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FLIPPED_ROWS = (5, 40, 77, 101)


def eventually(check, timeout: float = 20.0):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "the page's request did not reach the server in time"
        time.sleep(0.1)


def test_lead_accepts_and_dismisses_possible_label_errors_by_keyboard(login, live_server, workspace, lead_user):
    model, truth = random_setup(workspace, n=120)
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index"))
    wrong = {row: model.labels[(model.labels.index(truth[row]) + 1) % len(model.labels)] for row in FLIPPED_ROWS}
    labels_submit(model=model, user=lead_user,
                  labels=[{"record_id": r.id, "label": wrong.get(r.row_index, truth[r.row_index])} for r in records])
    label_issue_scan_run(scan_id=LabelIssueScan.objects.create(model=model).id)
    issues = list(LabelIssue.objects.filter(model=model, status="open").order_by("rank").select_related("record"))
    assert len(issues) >= 2 and {i.record.row_index for i in issues[:2]} <= set(FLIPPED_ROWS)
    first, second = issues[0], issues[1]

    page = login(lead_user.username)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/models/{model.id}/")
    page.click("text=Possible label errors")
    expect(page.locator(f"#issue-{first.id}")).to_have_class("card label-issue current")
    expect(page.locator(f"#issue-{first.id} .suggested")).to_have_text(truth[first.record.row_index])

    page.keyboard.press("a")  # accept the suggestion: relabels the record, no page load
    expect(page.locator(f"#issue-{first.id}")).to_have_attribute("data-status", "accepted")
    expect(page.locator(f"#issue-{second.id}")).to_have_class("card label-issue current")
    eventually(lambda: Record.objects.get(pk=first.record_id).label == first.suggested_label)
    history = list(Annotation.objects.filter(record_id=first.record_id).order_by("created_at", "id")
                   .values_list("label", "is_current"))
    assert history == [(first.given_label, False), (first.suggested_label, True)]

    page.keyboard.press("d")  # dismiss: the label stays
    expect(page.locator(f"#issue-{second.id}")).to_have_attribute("data-status", "dismissed")
    assert Record.objects.get(pk=second.record_id).label == second.given_label
    assert LabelIssue.objects.get(pk=second.id).status == "dismissed"

    if len(issues) > 2:  # choose another label from the list, then Enter
        third = issues[2]
        other = next(label for label in model.labels if label not in (third.given_label, third.suggested_label))
        expect(page.locator(f"#issue-{third.id}")).to_have_class("card label-issue current")
        page.keyboard.press("l")
        page.locator(f"#issue-{third.id} select").select_option(other)
        page.keyboard.press("Enter")
        expect(page.locator(f"#issue-{third.id}")).to_have_attribute("data-status", "accepted")
        eventually(lambda: Record.objects.get(pk=third.record_id).label == other)
    assert errors == []


def test_lead_excludes_near_duplicates_from_the_pool(login, live_server, workspace, lead_user):
    rng = np.random.default_rng(3)
    base = normalised(rng.normal(size=(30, 384)))
    copies = normalised(base[:3] + rng.normal(size=(3, 384)) * 0.005)  # rows 30-32 repeat rows 0-2
    texts = [f"message {i}" for i in range(30)] + ["message 0", "message one", "message two"]
    dataset = make_dataset(workspace, texts=texts, vectors=np.vstack([base, copies]))
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/datasets/{dataset.id}/")
    page.click("#duplicates-link")
    # The scan runs in the background; the progress panel reloads the page when it ends.
    expect(page.locator("#duplicate-group-count")).to_have_text("3", timeout=20_000)
    page.click("#exclude-all")
    expect(page.locator(".messages")).to_contain_text("Excluded 3 duplicate records")
    assert set(Record.objects.filter(dataset=dataset, excluded=True).values_list("row_index", flat=True)) == {30, 31, 32}
    page.click("#include-all")
    expect(page.locator(".messages")).to_contain_text("Put 3 records back")
    assert not Record.objects.filter(dataset=dataset, excluded=True).exists()
