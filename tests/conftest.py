"""Shared fixtures. System tests (real PostgreSQL, Redis and Celery worker) live in tests/system."""
from __future__ import annotations

import json
import os

import pytest
from django.test import Client

from tests.factories import make_key, make_user, make_workspace

# The shared data sits beside the checkout (as in CI); BANKING77_DIR points elsewhere, as for bench/.
BANKING77_DIR = os.environ.get("BANKING77_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "banking77"))


class ApiClient:
    """Django's test client with a bearer key and JSON bodies, for /v2 calls."""

    def __init__(self, key: str | None):
        self.client = Client()
        self.key = key

    def _headers(self, extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra)
        return headers

    def get(self, path, params=None, **extra):
        return self.client.get(path, params or {}, **self._headers(extra))

    def delete(self, path, **extra):
        return self.client.delete(path, **self._headers(extra))

    def _send(self, method, path, body, content_type, extra):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return getattr(self.client, method)(path, data=data, content_type=content_type, **self._headers(extra))

    def post(self, path, body=None, content_type="application/json", **extra):
        return self._send("post", path, {} if body is None else body, content_type, extra)

    def patch(self, path, body=None, content_type="application/json", **extra):
        return self._send("patch", path, {} if body is None else body, content_type, extra)

    def upload(self, path, data, **extra):
        return self.client.post(path, data=data, **self._headers(extra))


@pytest.fixture
def workspace(db):
    return make_workspace()


@pytest.fixture
def other_workspace(db):
    return make_workspace()


@pytest.fixture
def admin_user(workspace):
    return make_user(workspace, "admin", username="alice")


@pytest.fixture
def lead_user(workspace):
    return make_user(workspace, "lead", username="lena")


@pytest.fixture
def annotator_user(workspace):
    return make_user(workspace, "annotator", username="anna")


@pytest.fixture
def admin_api(workspace, admin_user):
    return ApiClient(make_key(workspace, "admin", admin_user))


@pytest.fixture
def lead_api(workspace, lead_user):
    return ApiClient(make_key(workspace, "lead", lead_user))


@pytest.fixture
def annotator_api(workspace, annotator_user):
    return ApiClient(make_key(workspace, "annotator", annotator_user))


@pytest.fixture
def other_api(other_workspace):
    return ApiClient(make_key(other_workspace, "admin"))


@pytest.fixture
def anonymous_api(db):
    return ApiClient(None)


def assert_error(response, status: int, error_code: str):
    """Every API error has exactly the contract's body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "message", "error_code", "request_id"}, body
    assert body["status"] == status and body["error_code"] == error_code, body
    assert body["request_id"].startswith("req_") and body["request_id"] == response["X-Request-ID"]
    assert body["message"]
    return body


@pytest.fixture
def banking77_dir():
    path = os.path.abspath(BANKING77_DIR)
    assert os.path.isdir(path), f"Banking77 is expected at {path} (set BANKING77_DIR to use another place)"
    return path


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    """Each test writes uploads, vectors and artifacts under its own folder."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    # FileSystemStorage follows MEDIA_ROOT through Django's setting_changed signal.
    yield
