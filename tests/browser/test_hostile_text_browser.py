"""Hostile text is stored and shown inertly: HTML in a record renders as text, and no script runs."""
import pytest
from playwright.sync_api import expect

from labeling.models import Dataset
from labeling.services import dataset_create_from_records

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAYLOAD = "<img src=x onerror=alert(1)>"


def test_record_with_html_renders_as_text_without_a_dialog(login, live_server, workspace, admin_user):
    dataset = dataset_create_from_records(workspace=workspace, name="hostile <b>set</b>", records=[
        {"text": PAYLOAD, "metadata": {"note": "<script>alert(2)</script>"}},
        {"text": "an ordinary message about a card"},
    ])
    assert Dataset.objects.get(pk=dataset.pk).status == "ready"
    dialogs = []
    page = login(admin_user.username)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    expect(page.get_by_text(PAYLOAD, exact=True).first).to_be_visible()
    expect(page.locator("h1")).to_contain_text("hostile <b>set</b>")
    assert page.locator("img[src=x]").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
