"""Browser pages of the platform through Django's test client: login, dashboard, members, keys."""
import re

import pytest
from django.test import Client
from django.urls import reverse

from labelf_studio.workspaces.models import ApiKey, AuditEvent, Membership
from labelf_studio.workspaces.services import api_key_authenticate
from tests.factories import make_user, make_workspace

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_login_and_logout(admin_user):
    client = Client()
    assert client.get("/").status_code == 302
    response = client.post(reverse("login"), {"username": admin_user.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    page = client.get("/")
    assert page.status_code == 200 and admin_user.username.encode() in page.content
    assert client.post(reverse("logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_login_is_throttled_after_repeated_failures(admin_user, settings):
    client = Client()
    for _ in range(settings.LABELF["LOGIN_ATTEMPTS_PER_15_MIN"]):
        assert client.post(reverse("login"), {"username": admin_user.username, "password": "wrong"}).status_code == 400
    response = client.post(reverse("login"), {"username": admin_user.username, "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content


def test_login_redirect_ignores_foreign_next(admin_user):
    response = Client().post(reverse("login") + "?next=//evil.example/", {"username": admin_user.username, "password": PASSWORD})
    assert response["Location"] == reverse("dashboard")


def test_csrf_is_enforced_on_forms(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(reverse("api_keys"), {"name": "x", "role": "admin"}).status_code == 403
    assert not ApiKey.objects.exists()
    page = client.get(reverse("api_keys")).content.decode()
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", page)


def test_switch_workspace_only_between_own_workspaces(admin_user):
    second = make_workspace("Second")
    foreign = make_workspace("Foreign")
    Membership.objects.create(workspace=second, user=admin_user, role="annotator")
    client = logged_in(admin_user)
    client.post(reverse("switch_workspace"), {"workspace_id": second.id})
    assert b"Second" in client.get("/").content and client.session["workspace_id"] == second.id
    client.post(reverse("switch_workspace"), {"workspace_id": foreign.id})
    assert client.session["workspace_id"] == second.id
    # As an annotator in "Second", the admin pages are closed.
    assert client.get(reverse("api_keys")).status_code == 403


def test_admin_creates_a_key_shown_once_and_revokes_it(admin_user, workspace):
    client = logged_in(admin_user)
    response = client.post(reverse("api_keys"), {"name": "CRM integration", "role": "lead"})
    assert response.status_code == 302  # post/redirect/get: a reload cannot create a second key
    page = client.get(response["Location"]).content.decode()
    secret = re.search(r'id="new-api-key">([^<]+)<', page).group(1)
    api_key = ApiKey.objects.get(name="CRM integration")
    assert api_key_authenticate(secret=secret) == api_key and api_key.role == "lead"
    again = client.get(reverse("api_keys")).content.decode()
    assert secret not in again and api_key.prefix in again and workspace.plan in again
    client.post(reverse("api_key_revoke", args=[api_key.id]))
    assert api_key_authenticate(secret=secret) is None
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert "api_key.create" in actions and "api_key.revoke" in actions


def test_admin_adds_members_and_changes_roles(admin_user, workspace):
    client = logged_in(admin_user)
    response = client.post(reverse("members"), {"username": "newbie", "email": "n@example.com", "role": "annotator", "password": "long-enough-pw"})
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="newbie", workspace=workspace)
    assert membership.role == "annotator"
    client.post(reverse("member_update", args=[membership.id]), {"role": "lead"})
    membership.refresh_from_db()
    assert membership.role == "lead"
    assert AuditEvent.objects.filter(action="member.role_change", target="newbie").exists()
    assert Client().login(username="newbie", password="long-enough-pw")
    client.post(reverse("member_update", args=[membership.id]), {"action": "remove"})
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_non_admins_cannot_reach_admin_pages(lead_user, annotator_user, workspace):
    for user in (lead_user, annotator_user):
        client = logged_in(user)
        for name in ("members", "api_keys", "audit_log"):
            assert client.get(reverse(name)).status_code == 403
        assert client.post(reverse("api_keys"), {"name": "x", "role": "admin"}).status_code == 403
    assert not ApiKey.objects.exists()
    assert logged_in(lead_user).get(reverse("usage")).status_code == 200
    assert logged_in(annotator_user).get(reverse("usage")).status_code == 403


def test_admin_cannot_touch_another_workspaces_members(admin_user):
    foreign = make_workspace("Foreign")
    stranger = make_user(foreign, "annotator")
    membership = Membership.objects.get(user=stranger)
    response = logged_in(admin_user).post(reverse("member_update", args=[membership.id]), {"role": "admin"})
    assert response.status_code == 404
    membership.refresh_from_db()
    assert membership.role == "annotator"


def test_pages_send_a_content_security_policy_without_inline_scripts(admin_user):
    response = logged_in(admin_user).get("/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "<script>" not in response.content.decode()
