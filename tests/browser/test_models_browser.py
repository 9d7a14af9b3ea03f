"""A lead describes a model in the browser (label rows edited client-side, pasted labels) and tries it; an admin deploys."""
import pytest
from playwright.sync_api import expect

from models_app.models import ClassificationModel, ModelStatus
from tests.models_app.conftest import banking77_rows, make_ready_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def dataset(workspace, banking77_dir):
    return make_ready_dataset(workspace, banking77_rows(banking77_dir, per_label=6), name="Banking sample")


def test_lead_creates_a_model_from_descriptions_and_tries_it(login, live_server, lead_user, dataset):
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/new/")
    page.fill("input[name=name]", "Contact reason")
    page.select_option("select[name=dataset]", str(dataset.id))

    rows = page.locator("#label-rows .label-row")
    expect(rows).to_have_count(3)
    rows.nth(0).locator("input[name=label_name]").fill("exchange_rate")
    rows.nth(0).locator("textarea").fill("Questions about currency exchange rates")
    rows.nth(1).locator("input[name=label_name]").fill("lost_or_stolen_card")
    rows.nth(1).locator("textarea").fill("The customer lost their card or it was stolen")
    rows.nth(2).locator("input[name=label_name]").fill("to be removed")
    rows.nth(2).locator("[data-row-action=remove]").click()
    expect(rows).to_have_count(2)
    rows.nth(1).locator("[data-row-action=up]").click()  # lost_or_stolen_card first
    expect(rows.nth(0).locator("input[name=label_name]")).to_have_value("lost_or_stolen_card")

    page.click("summary:has-text('Paste labels')")
    page.fill("#pasted-labels", "card_arrival\ntop_up_failed\n")
    page.click("#add-pasted")
    expect(rows).to_have_count(4)
    expect(page.locator("#pasted-labels")).to_have_value("")
    page.click("#add-label")
    expect(rows).to_have_count(5)  # an empty row is ignored on submit
    page.click("button:has-text('Create model')")

    model = ClassificationModel.objects.get()
    page.wait_for_url(f"{live_server.url}/models/{model.id}/")
    assert model.labels == ["lost_or_stolen_card", "exchange_rate", "card_arrival", "top_up_failed"]
    assert model.status == ModelStatus.READY
    expect(page.locator("#model-status")).to_have_text("ready")

    page.fill("#try-it textarea[name=text]", "I think someone stole my card")
    page.click("#try-it button:has-text('Classify')")
    expect(page.locator("#try-result .try-label")).to_have_text("lost_or_stolen_card")
    expect(page.locator("#try-result .bar-row")).to_have_count(4)
    assert page.url == f"{live_server.url}/models/{model.id}/"  # htmx swapped the result in place


def test_admin_deploys_after_confirming(login, live_server, admin_user, dataset):
    from models_app.services import model_create

    model = model_create(workspace=dataset.workspace, dataset=dataset, name="Reasons",
                         labels=[{"name": "exchange_rate", "description": ""}, {"name": "card_arrival", "description": ""}])
    page = login(admin_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#deploy-form button[type=submit]")
    model.refresh_from_db()
    assert model.status == ModelStatus.READY  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deploy-form button[type=submit]")
    expect(page.locator("#model-status")).to_have_text("deployed")
    expect(page.locator("#deployment-events")).to_contain_text(f"deploy version 1 · {admin_user.username}")
