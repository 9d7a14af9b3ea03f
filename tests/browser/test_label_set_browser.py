"""A lead changes a model's label set on the model page in Chromium: removes a label (after a confirmation that says
how many records carry it), adds one, moves it, saves; the new label is a key on the labeling page at once."""
import time

import pytest
from playwright.sync_api import expect

from labeling.models import Record
from tests.models_app.conftest import banking77_rows, make_ready_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def model(workspace, banking77_dir):
    from models_app.services import model_create

    dataset = make_ready_dataset(workspace, banking77_rows(banking77_dir, per_label=6), name="Banking sample")
    model = model_create(workspace=workspace, dataset=dataset, name="Reasons", labels=[
        {"name": "exchange_rate", "description": "Questions about currency exchange rates"},
        {"name": "card_arrival", "description": "The customer is waiting for a new card to arrive in the post"},
        {"name": "top_up_failed", "description": "Adding money to the account (a top-up) did not work"},
    ])
    # Two records carry the label that will be removed: they must keep it.
    ids = list(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("id", flat=True)[:2])
    Record.objects.filter(id__in=ids).update(label="top_up_failed")
    return model


def test_lead_adds_removes_and_reorders_labels_on_the_model_page(login, live_server, lead_user, model):
    page = login(lead_user.username)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/models/{model.id}/")
    rows = page.locator("#labels-form .label-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("input[name=label_name]")).to_have_attribute("readonly", "")

    # Removing asks first, with the number of records that carry the label; dismissing keeps the row.
    questions = []

    def answer(accept):
        def handler(dialog):
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handler

    page.once("dialog", answer(False))
    rows.nth(2).locator("[data-row-action=remove]").click()
    expect(rows).to_have_count(3)
    page.once("dialog", answer(True))
    rows.nth(2).locator("[data-row-action=remove]").click()
    expect(rows).to_have_count(2)
    assert "“top_up_failed”" in questions[0] and "2 records in the dataset carry this label" in questions[0]
    assert "their labels are kept" in questions[0]

    page.click("#labels-form #add-label")
    expect(rows).to_have_count(3)
    rows.nth(2).locator("input[name=label_name]").fill("lost_or_stolen_card")
    rows.nth(2).locator("textarea[name=label_description]").fill("The customer lost their card or it was stolen")
    rows.nth(2).locator("[data-row-action=up]").click()
    expect(rows.nth(1).locator("input[name=label_name]")).to_have_value("lost_or_stolen_card")
    page.click("#labels-form button:has-text('Save labels')")

    expect(page.locator("body")).to_contain_text("Labels saved; version 2 classifies with them.")
    model.refresh_from_db()
    assert model.labels == ["exchange_rate", "lost_or_stolen_card", "card_arrival"]
    assert model.latest_version.number == 2 and model.latest_version.labels == model.labels
    assert Record.objects.filter(dataset=model.dataset, label="top_up_failed").count() == 2  # kept
    expect(rows).to_have_count(3)
    expect(rows.nth(1).locator("input[name=label_name]")).to_have_value("lost_or_stolen_card")

    # The labeling page offers the new label under its key at once, and no longer the removed one.
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    new_key = page.locator('#label-buttons button[data-label="lost_or_stolen_card"]')
    expect(new_key).to_have_attribute("data-key", "2")
    expect(page.locator('#label-buttons button[data-label="top_up_failed"]')).to_have_count(0)
    record_id = int(page.locator("#label-record").get_attribute("data-record-id"))
    page.keyboard.press("2")
    expect(page.locator("#label-record")).not_to_have_attribute("data-record-id", str(record_id))
    deadline = time.time() + 20  # the page shows the next record before the label request has landed
    while not Record.objects.filter(pk=record_id, label="lost_or_stolen_card").exists():
        assert time.time() < deadline, "the label did not reach the server"
        time.sleep(0.1)
    assert errors == []


def test_lead_sees_a_readable_error_and_nothing_is_saved(login, live_server, lead_user, model):
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/")
    page.click("#labels-form #add-label")
    page.locator("#labels-form .label-row").nth(3).locator("input[name=label_name]").fill("card_arrival")
    page.click("#labels-form button:has-text('Save labels')")
    expect(page.locator("#labels-error")).to_contain_text("Not saved: labels[3].name: duplicate label 'card_arrival'")
    expect(page.locator("#labels-form .label-row")).to_have_count(4)  # what the lead typed is still there
    model.refresh_from_db()
    assert model.labels == ["exchange_rate", "card_arrival", "top_up_failed"] and model.latest_version.number == 1
