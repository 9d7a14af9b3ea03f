"""The contract's Conventions, Errors and Rate-limit rules, for every kind of /v2 request."""
import json

import pytest
from django.test import Client
from django.utils import timezone

from labelf_studio.workspaces.models import ApiKey
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_workspace

pytestmark = pytest.mark.django_db


def test_list_models_with_a_key_answers_an_empty_page(admin_api):
    response = admin_api.get("/v2/models")
    assert response.status_code == 200
    assert response.json() == {"data": [], "total": 0, "offset": 0, "limit": 20, "has_more": False}
    assert response["X-Request-ID"].startswith("req_") and len(response["X-Request-ID"]) >= 12
    assert int(response["X-RateLimit-Limit"]) == 100_000
    assert int(response["X-RateLimit-Remaining"]) < 100_000
    assert int(response["X-RateLimit-Reset"]) > 0


def test_client_sent_request_id_is_not_trusted(admin_api):
    response = admin_api.get("/v2/models", HTTP_X_REQUEST_ID="req_attacker")
    assert response["X-Request-ID"] != "req_attacker"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer not-a-key", "Bearer lf_unknownkey000000000000"])
def test_missing_malformed_or_unknown_keys_are_unauthorized(db, header):
    client = Client()
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    assert_error(client.get("/v2/models", **extra), 401, "UNAUTHORIZED")


def test_revoked_key_is_unauthorized(workspace):
    secret = make_key(workspace, "admin")
    api_key = ApiKey.objects.get(workspace=workspace)
    api_key.revoked_at = timezone.now()
    api_key.save()
    assert_error(ApiClient(secret).get("/v2/models"), 401, "UNAUTHORIZED")


def test_keys_are_stored_only_as_hash_and_prefix(workspace):
    secret = make_key(workspace, "admin")
    api_key = ApiKey.objects.get(workspace=workspace)
    assert secret not in {api_key.prefix, api_key.hashed_secret}
    assert secret.startswith(api_key.prefix) and len(api_key.prefix) <= 10
    assert len(api_key.hashed_secret) == 64


def test_unknown_path_and_method(admin_api):
    assert_error(admin_api.get("/v2/no-such-thing"), 404, "NOT_FOUND")
    assert_error(admin_api.get("/v2/models/999999/nope"), 404, "NOT_FOUND")
    assert_error(admin_api.delete("/v2/models"), 405, "METHOD_NOT_ALLOWED")


def test_malformed_json_wrong_content_type_and_oversize_body(admin_api, settings):
    assert_error(admin_api.post("/v2/models", "{not json"), 400, "MALFORMED_JSON")
    assert_error(admin_api.post("/v2/models", "[" * 100_000 + "]" * 100_000), 400, "MALFORMED_JSON")
    assert_error(admin_api.post("/v2/models", "name=x", content_type="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(admin_api.post("/v2/models", "name=x", content_type="application/x-www-form-urlencoded"),
                 415, "UNSUPPORTED_MEDIA_TYPE")
    settings.LABELF = {**settings.LABELF, "MAX_REQUEST_BYTES": 1000}
    assert_error(admin_api.post("/v2/models", json.dumps({"name": "x" * 2000})), 413, "PAYLOAD_TOO_LARGE")


def test_pagination_parameters_are_validated(admin_api):
    for query in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"offset": -1}):
        assert_error(admin_api.get("/v2/models", query), 400, "INVALID_FIELD")
    page = admin_api.get("/v2/models", {"offset": 5, "limit": 100}).json()
    assert page["offset"] == 5 and page["limit"] == 100 and page["has_more"] is False


def test_openapi_schema_and_docs_are_served_without_a_key(db):
    client = Client()
    schema = client.get("/v2/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/v2/models" in paths
    docs = client.get("/v2/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    # The docs page loads its scripts from our own static files, never a CDN.
    assert b"cdn." not in docs.content


def test_rate_limit_answers_429_with_retry_after(db):
    # 6 requests/minute: the burst rule admits 2x the sustained rate for 10 s, i.e. 2 per 10 s.
    workspace = make_workspace(rate_limit=6)
    api = ApiClient(make_key(workspace, "admin"))
    remaining = [int(api.get("/v2/models")["X-RateLimit-Remaining"]) for _ in range(2)]
    assert remaining == [5, 4]
    response = api.get("/v2/models")
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert 1 <= int(response["Retry-After"]) <= 10
    assert response["X-RateLimit-Remaining"] == "4"


def test_minute_and_burst_windows(db):
    from labelf_studio.ratelimit import check_rate_limit

    workspace = make_workspace(rate_limit=60)
    start = 1_800_000_000  # a minute boundary
    admitted = 0
    remaining_seen = []
    for second in range(60):  # 5 requests every second for a whole minute
        for _ in range(5):
            decision = check_rate_limit(workspace.id, 60, now=start + second + 0.5)
            if decision.allowed:
                admitted += 1
                remaining_seen.append(decision.remaining)
            else:
                assert decision.retry_after >= 1
        # never more than 2x the sustained rate (20) within any aligned 10 s window
    assert admitted == 60
    assert remaining_seen == sorted(remaining_seen, reverse=True)  # never goes up within the window
    first_window = [check_rate_limit(workspace.id, 60, now=start + 60.5).allowed for _ in range(25)]
    assert sum(first_window) == 20  # the burst cap: 2 x 60/min over 10 s


def test_errors_from_unhandled_exceptions_are_the_contract_body(admin_api, monkeypatch):
    from models_app import selectors

    def explode(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(selectors, "models_for_workspace", explode)
    response = admin_api.get("/v2/models")
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret internal detail" not in body["message"] and "Traceback" not in response.content.decode()


def test_every_schema_operation_rejects_a_missing_key(db):
    """Enumerates the schema, so a new endpoint without auth fails this test."""
    client = Client()
    schema = client.get("/v2/openapi.json").json()
    for path, operations in schema["paths"].items():
        concrete = path.replace("{", "").replace("}", "")
        concrete = "/".join("1" if part.endswith("_id") or part in {"id", "v", "version"} else part
                            for part in concrete.split("/"))
        for method in operations:
            response = getattr(client, method)(concrete, content_type="application/json") if method != "get" else client.get(concrete)
            assert_error(response, 401, "UNAUTHORIZED")


def test_an_exception_django_turned_into_an_html_page_still_gets_the_contract_body(admin_api, monkeypatch):
    """A plain Django view under /v2 that raises: Django renders a 500 page before our middleware
    sees it; the client must still get the JSON error body."""
    from labelf_studio import api as api_module

    real = api_module.ApiConventionsMiddleware._handle

    def handle_with_failing_view(self, request):
        from django.http import HttpResponseServerError

        self.get_response = lambda request: HttpResponseServerError("<h1>Server Error (500)</h1>")
        return real(self, request)

    monkeypatch.setattr(api_module.ApiConventionsMiddleware, "_handle", handle_with_failing_view)
    body = assert_error(admin_api.get("/v2/models"), 500, "INTERNAL_ERROR")
    assert "<h1>" not in body["message"]
