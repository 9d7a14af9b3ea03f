"""A lead works through the review queue by keyboard in Chromium: sees who gave which label, skips one,
decides one, and is told when another lead decided a record first. An annotator gets 403."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import labels_submit, queue_recompute
from labeling.review import review_decide
from tests.factories import make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def conflicts(model, workspace, count: int) -> list[int]:
    """Overlap records two annotators labeled differently, in the order the review page shows them."""
    ann = make_user(workspace, "annotator", username="ann")
    bob = make_user(workspace, "annotator", username="bob")
    targets = sorted(Recommendation.objects.filter(model=model, required_annotations__gt=1)
                     .values_list("record_id", flat=True)[:count])
    for user, label in ((ann, model.labels[0]), (bob, model.labels[2])):
        labels_submit(model=model, labels=[{"record_id": r, "label": label} for r in targets], user=user)
    assert Record.objects.filter(id__in=targets, in_conflict=True).count() == count
    return targets


def shown(page) -> int:
    return int(page.locator("#review-record").get_attribute("data-record-id"))


def test_lead_reviews_conflicts_by_keyboard(login, live_server, workspace, lead_user):
    model, _ = random_setup(workspace, n=200)
    queue_recompute(model=model)
    first, second, third = conflicts(model, workspace, 3)
    other_lead = make_user(workspace, "lead", username="lou")

    page = login(lead_user.username)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/models/{model.id}/")
    page.click("#review-link")
    expect(page.locator("#review")).to_have_attribute("data-ready", "1")
    assert shown(page) == first
    # Every label side by side with who gave it; the buttons count the votes.
    rows = page.locator("#review-record tr.given-label")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("ann")
    expect(rows.nth(0)).to_contain_text(model.labels[0])
    expect(rows.nth(1)).to_contain_text("bob")
    expect(rows.nth(1)).to_contain_text(model.labels[2])
    expect(page.locator(f'#review-buttons button[data-label="{model.labels[0]}"] .votes')).to_have_text("1 vote")
    expect(page.locator(f'#review-buttons button[data-label="{model.labels[1]}"] .votes')).to_be_hidden()
    expect(page.locator("#review-record .review-text")).to_contain_text("<b>&</b>")  # shown as text, not markup

    page.keyboard.press("?")
    expect(page.locator("#review-help")).to_be_visible()
    page.keyboard.press("s")  # skip the first: it stays in conflict
    expect(page.locator("#review-record")).to_have_attribute("data-record-id", str(second))

    page.keyboard.press("2")  # decide the second: labels[1], a label neither annotator gave
    expect(page.locator("#review-record")).to_have_attribute("data-record-id", str(third))
    expect(page.locator("#review-status")).to_contain_text(f"“{model.labels[1]}” is the final label")

    # Meanwhile another lead decides the third record; this lead's key press is told so and moves on.
    review_decide(model=model, record_id=third, label=model.labels[0], user=other_lead)
    page.keyboard.press("3")
    expect(page.locator("#review-status")).to_contain_text("already decided")
    expect(page.locator("#review-status")).to_contain_text("lou")
    expect(page.locator("#review-record")).to_have_attribute("data-empty", "1")

    assert Record.objects.get(pk=first).in_conflict
    decided = Record.objects.get(pk=second)
    assert decided.label == model.labels[1] and not decided.in_conflict
    decision = Annotation.objects.get(record_id=second, adjudicated=True)
    assert decision.user_id == lead_user.id and decision.is_current
    assert sorted(Annotation.objects.filter(record_id=second, adjudicated=False).values_list("label", flat=True)) == \
        sorted([model.labels[0], model.labels[2]])
    assert Record.objects.get(pk=third).label == model.labels[0]  # the other lead's decision stands
    assert Annotation.objects.filter(record_id=third, adjudicated=True).count() == 1
    assert errors == []


def test_team_page_and_an_annotator_shut_out(login, live_server, workspace, lead_user, annotator_user, browser):
    model, _ = random_setup(workspace, n=200)
    queue_recompute(model=model)
    conflicts(model, workspace, 2)
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/")
    page.click("#team-link")
    expect(page.locator("#team-units")).to_have_text("2")
    expect(page.locator("#kappa-matrix")).to_contain_text("ann")
    expect(page.locator("#team-conflicts")).to_have_text("2")
    page.click("text=Last 24 hours")
    expect(page.locator('a[aria-current="true"]')).to_have_text("Last 24 hours")
    page.fill("input[name=overlap_percent]", "20")
    page.fill("input[name=overlap_annotators]", "3")
    page.click("#overlap-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("20% of the queue goes to 3 annotators")
    model.refresh_from_db()
    assert (model.overlap_share, model.overlap_annotators) == (0.2, 3)

    context = browser.new_context()
    other = context.new_page()
    other.goto(f"{live_server.url}/login/")
    other.fill("input[name=username]", annotator_user.username)
    other.fill("input[name=password]", "correct-horse-battery")
    other.click("button[type=submit]")
    other.wait_for_url(f"{live_server.url}/")
    response = other.goto(f"{live_server.url}/models/{model.id}/review/")
    assert response.status == 403
    context.close()


def test_the_labels_given_to_a_record_lead_a_long_label_list(login, live_server, workspace, lead_user):
    labels = tuple(f"reason_{i:03d}_reported_through_the_mobile_application_channel" for i in range(60))
    model, _ = random_setup(workspace, n=200, labels=labels)
    queue_recompute(model=model)
    ann = make_user(workspace, "annotator", username="ann")
    bob = make_user(workspace, "annotator", username="bob")
    target = Recommendation.objects.filter(model=model, required_annotations__gt=1).values_list("record_id", flat=True)[0]
    labels_submit(model=model, labels=[{"record_id": target, "label": labels[57]}], user=ann)
    labels_submit(model=model, labels=[{"record_id": target, "label": labels[41]}], user=bob)
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/review/")
    expect(page.locator("#review")).to_have_attribute("data-ready", "1")
    buttons = page.locator("#review-buttons button")
    boxes = {label: buttons.locator(f"xpath=self::*[@data-label='{label}']").bounding_box()
             for label in (labels[0], labels[41], labels[57])}
    place = {label: (round(box["y"]), box["x"]) for label, box in boxes.items()}  # reading order: row, then column
    assert place[labels[41]] < place[labels[0]] and place[labels[57]] < place[labels[0]]
