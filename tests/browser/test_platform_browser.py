"""Log in, create an API key and see it once, and a non-admin cannot reach the admin pages."""
import re

import pytest
from playwright.sync_api import expect

from labelf_studio.workspaces.services import api_key_authenticate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_creates_an_api_key_and_sees_it_once(login, live_server, admin_user):
    page = login(admin_user.username)
    expect(page.locator("h1")).to_contain_text("ws-")
    page.click("text=API keys")
    page.fill("input[name=name]", "Zendesk bridge")
    page.select_option("select[name=role]", "lead")
    page.click("button:has-text('Create key')")
    secret = page.locator("#new-api-key").inner_text().strip()
    assert re.fullmatch(r"lf_[\w-]{20,}", secret)
    assert api_key_authenticate(secret=secret).name == "Zendesk bridge"
    expect(page.locator("#api-key-table")).to_contain_text("Zendesk bridge")
    page.reload()
    expect(page.locator("#new-api-key")).to_have_count(0)
    assert secret not in page.content()
    # Logging out ends the session.
    page.click("button:has-text('Log out')")
    page.goto(f"{live_server.url}/workspace/api-keys/")
    assert "/login/" in page.url


def test_annotator_cannot_reach_admin_pages(login, live_server, annotator_user):
    page = login(annotator_user.username)
    expect(page.locator("nav.mainnav")).not_to_contain_text("API keys")
    for path in ("/workspace/api-keys/", "/workspace/members/", "/workspace/audit/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 403
        expect(page.locator("h1")).to_have_text("Not allowed")
