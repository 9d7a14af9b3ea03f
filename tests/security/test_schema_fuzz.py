"""Schema fuzzing with schemathesis against the live /v2/openapi.json.

With a valid key (seeded, at least 1,000 generated cases across all operations), with no key and
with a revoked key: no 5xx, every response conforms to the schema, every 4xx has the contract's
error body. The schema is enumerated at run time, so a new endpoint is fuzzed without edits here.
"""
import os

import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings

from labelf_studio.workspaces.models import ApiKey
from tests.factories import make_key, make_workspace

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MIN_TOTAL_CASES = 1000
# What the contract promises of every response. Left out on purpose: positive/negative data
# acceptance (the API checks ranges such as "1-8 texts" in handlers so it can answer the
# contract's specific codes, e.g. TOO_MANY_TEXTS, that a schema constraint could not produce) and
# the stateful checks (use-after-free, resource availability), which need linked operations.
CONTRACT_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
ERROR_KEYS = {"status", "message", "error_code", "request_id"}


def fuzz(live_server, headers: dict, examples_per_operation: int, check) -> int:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/v2/openapi.json")
    total = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=examples_per_operation, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case):
            nonlocal total
            total += 1
            response = case.call(headers=headers)
            check(case, response)

        run()
    return total


def header(response, name: str) -> str:
    value = {key.lower(): value for key, value in response.headers.items()}[name.lower()]
    return value[0] if isinstance(value, list) else value


def contract_check(case, response):
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == ERROR_KEYS, where
        assert body["status"] == response.status_code and body["request_id"] == header(response, "X-Request-ID"), where
    case.validate_response(response, checks=CONTRACT_CHECKS)


def test_fuzz_every_operation_with_a_valid_key(live_server):
    workspace = make_workspace(rate_limit=10_000_000)
    secret = make_key(workspace, "admin")
    operations = len(list(schemathesis.openapi.from_url(f"{live_server.url}/v2/openapi.json").get_all_operations()))
    per_operation = max(20, -(-MIN_TOTAL_CASES // operations) + 10)
    total = fuzz(live_server, {"Authorization": f"Bearer {secret}"}, per_operation, contract_check)
    assert total >= MIN_TOTAL_CASES


def unauthorized_check(case, response):
    assert response.status_code == 401, f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert set(response.json()) == ERROR_KEYS and response.json()["error_code"] == "UNAUTHORIZED"


def test_fuzz_without_a_key_is_always_401(live_server):
    fuzz(live_server, {"Authorization": ""}, 5, unauthorized_check)


def test_fuzz_with_a_revoked_key_is_always_401(live_server):
    workspace = make_workspace()
    secret = make_key(workspace, "admin")
    ApiKey.objects.filter(workspace=workspace).update(revoked_at=timezone.now())
    fuzz(live_server, {"Authorization": f"Bearer {secret}"}, 5, unauthorized_check)
