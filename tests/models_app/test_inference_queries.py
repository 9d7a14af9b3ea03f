"""The inference hot path's database work, as served in production (rate limits counted in Redis), and
the shortcuts that keep it small: cached API keys that still stop working the moment they are revoked,
and a quota that one conditional UPDATE keeps exact under concurrent requests."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from labelf_studio import ratelimit
from labelf_studio.workspaces import services as workspace_services
from labelf_studio.workspaces.models import ApiKey, UsagePeriod
from labelf_studio.workspaces.services import api_key_authenticate, api_key_revoke, usage_reserve_texts
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_workspace

# A fresh key on its first request of the period: key lookup, model with its served version, the
# reservation's UPDATE (no row yet), the row's INSERT, the UPDATE again, last_used_at.
MAX_QUERIES_FIRST_REQUEST = 6
# Every request after that: the model with its served version, and the reservation (texts and the
# request counted in one statement). The key comes from the process's cache.
QUERIES_PER_REQUEST = 2


class _AdmitEverything:
    """Stands in for the Redis rate-limit script: admits each request and counts it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, keys, args):
        self.calls += 1
        return [1, self.calls, 0]


@pytest.fixture
def redis_rate_limits(settings, monkeypatch):
    settings.LABELF = {**settings.LABELF, "RATE_LIMIT_BACKEND": "redis"}
    script = _AdmitEverything()
    monkeypatch.setattr(ratelimit, "_redis", lambda: script)
    return script


def infer(api, model_id, texts):
    return api.post(f"/v2/models/{model_id}/inference", {"texts": texts})


def test_inference_queries_are_pinned(redis_rate_limits, workspace, deployed_model, django_assert_max_num_queries,
                                      django_assert_num_queries):
    api = ApiClient(make_key(workspace, "annotator"))
    admitted_before = redis_rate_limits.calls
    with django_assert_max_num_queries(MAX_QUERIES_FIRST_REQUEST):
        assert infer(api, deployed_model["id"], ["warm up"]).status_code == 200
    for texts in (["one text"], ["eight"] * 8, ["another"] * 3):
        with django_assert_num_queries(QUERIES_PER_REQUEST) as captured:
            assert infer(api, deployed_model["id"], texts).status_code == 200
        reservation = captured.captured_queries[-1]["sql"]
        assert "texts_classified" in reservation and "requests" in reservation
    assert redis_rate_limits.calls - admitted_before == 4
    row = UsagePeriod.objects.get(api_key__workspace=workspace, api_key__role="annotator")
    assert (row.requests, row.texts_classified) == (4, 1 + 1 + 8 + 3)


def test_requests_that_classify_nothing_still_count_once(redis_rate_limits, workspace, deployed_model):
    api = ApiClient(make_key(workspace, "annotator"))
    assert infer(api, deployed_model["id"], ["hello"]).status_code == 200
    assert_error(infer(api, deployed_model["id"], []), 400, "EMPTY_TEXTS")
    assert_error(infer(api, 999_999, ["x"]), 404, "NOT_FOUND")
    assert_error(api.get("/v2/no-such-path"), 404, "NOT_FOUND")
    assert api.get("/v2/models").status_code == 200
    row = UsagePeriod.objects.get(api_key__workspace=workspace, api_key__role="annotator")
    assert (row.requests, row.texts_classified) == (5, 1)


def test_a_revoked_key_stops_working_at_once_although_it_was_cached(redis_rate_limits, workspace, deployed_model):
    secret = make_key(workspace, "admin")
    api = ApiClient(secret)
    assert infer(api, deployed_model["id"], ["cache the key"]).status_code == 200
    assert api_key_authenticate(secret=secret) is not None  # served from the cache now
    api_key_revoke(api_key=ApiKey.objects.get(hashed_secret=workspace_services._hash_secret(secret)))
    assert_error(infer(api, deployed_model["id"], ["x"]), 401, "UNAUTHORIZED")
    assert api_key_authenticate(secret=secret) is None


def test_a_revocation_in_another_process_is_seen_through_the_shared_generation(workspace):
    secret = make_key(workspace, "admin")
    assert api_key_authenticate(secret=secret) is not None
    # Another process revokes: the row changes and the shared token is replaced, this process's
    # cache is untouched.
    ApiKey.objects.filter(hashed_secret=workspace_services._hash_secret(secret)).update(revoked_at="2026-01-01T00:00Z")
    assert api_key_authenticate(secret=secret) is not None  # within KEY_CACHE_SECONDS without the token
    from django.core.cache import cache

    cache.set(workspace_services._KEY_GENERATION, "changed elsewhere", timeout=None)
    assert api_key_authenticate(secret=secret) is None


def test_cached_keys_expire(workspace, monkeypatch):
    secret = make_key(workspace, "admin")
    assert api_key_authenticate(secret=secret) is not None
    ApiKey.objects.filter(hashed_secret=workspace_services._hash_secret(secret)).update(revoked_at="2026-01-01T00:00Z")
    later = workspace_services.monotonic() + workspace_services.KEY_CACHE_SECONDS + 1
    monkeypatch.setattr(workspace_services, "monotonic", lambda: later)
    assert api_key_authenticate(secret=secret) is None


def test_a_plan_change_through_the_services_takes_effect_at_once(workspace):
    secret = make_key(workspace, "admin")
    assert api_key_authenticate(secret=secret).workspace.monthly_quota_override is None
    workspace_services.workspace_get_or_create(name=workspace.name, monthly_quota=123)
    assert api_key_authenticate(secret=secret).workspace.monthly_quota == 123


def test_without_the_cache_keys_come_from_the_database(workspace, monkeypatch):
    secret = make_key(workspace, "admin")
    assert api_key_authenticate(secret=secret) is not None

    def unreachable(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(workspace_services.cache, "get", unreachable)
    ApiKey.objects.filter(hashed_secret=workspace_services._hash_secret(secret)).update(revoked_at="2026-01-01T00:00Z")
    assert api_key_authenticate(secret=secret) is None  # nothing cached is trusted


def reserve_from_several_keys_at_once() -> None:
    """Six threads, three keys of one workspace, 3 texts per reservation against a quota of 100."""
    workspace = make_workspace(monthly_quota=100)
    for role in ("admin", "lead", "annotator"):
        make_key(workspace, role)
    keys = list(ApiKey.objects.filter(workspace=workspace).select_related("workspace"))
    granted = []
    errors = []
    start = threading.Barrier(6)

    def client(api_key):
        try:
            start.wait()
            for _ in range(10):
                if usage_reserve_texts(api_key=api_key, count=3):
                    granted.append(3)
        except Exception as exc:  # reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(keys[i % 3],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = UsagePeriod.objects.filter(workspace=workspace)
    used = sum(row.texts_classified for row in rows)
    assert used == sum(granted) == 99  # 33 reservations of 3 fit in 100; never one more
    assert sum(row.requests for row in rows) == len(granted)


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_from_several_keys_never_exceed_the_quota():
    # SQLite here (one writer at a time); tests/system/test_quota_concurrency.py runs it on PostgreSQL.
    reserve_from_several_keys_at_once()
