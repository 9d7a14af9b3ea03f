"""Tenant isolation matrix: workspace A asking for workspace B's objects gets exactly what a
non-existent id gets, through every /v2 operation in the schema and every browser page that takes
an id, and nothing of B changes. The schema and the URL conf are enumerated at run time, so a new
endpoint or page without the check fails this test."""
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from labeling.models import Annotation, Dataset, Job, Record
from labelf_studio.workspaces.models import ApiKey, Membership
from models_app.models import ClassificationModel, DuplicateScan, LabelIssue, LabelIssueScan, ModelVersion
from tests.conftest import ApiClient
from tests.factories import make_key, make_user, make_workspace

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit work (imports, training) runs

MISSING = 987654321
TEXTS = ["my card has not arrived", "where is my new card", "card still not delivered", "how long does card delivery take",
         "I sent money but it did not arrive", "my transfer is pending", "transfer to my friend failed", "bank transfer missing"]

# A plausible body for every operation that takes one, so the request reaches the object lookup.
# An operation missing here fails the test: say what a new endpoint's body looks like.
SAMPLE_BODIES = {
    ("post", "/v2/datasets"): None,  # no id in the path: checked through the body-id cases below
    ("post", "/v2/datasets/{dataset_id}/records"): {"records": [{"text": "hello"}]},
    ("post", "/v2/similarity"): None,
    ("post", "/v2/models"): None,
    ("patch", "/v2/models/{model_id}"): {"name": "renamed", "confidence_threshold": 0.9},
    ("post", "/v2/models/{model_id}/deploy"): {},
    ("post", "/v2/models/{model_id}/archive"): {},
    ("post", "/v2/models/{model_id}/inference"): {"texts": ["card not arrived"]},
    ("post", "/v2/models/{model_id}/labels"): {"labels": [{"record_id": 1, "label": "card"}]},
    ("post", "/v2/models/{model_id}/train"): {"type": "active-learning"},
    ("post", "/v2/models/{model_id}/review/{record_id}"): {"label": "card"},
    ("post", "/v2/models/{model_id}/label-issues/scan"): {},
    ("post", "/v2/models/{model_id}/label-issues/{issue_id}"): {"action": "dismiss"},
    ("post", "/v2/datasets/{dataset_id}/duplicates/scan"): {},
    ("post", "/v2/datasets/{dataset_id}/duplicates/exclude"): {},
}


@pytest.fixture
def world_b():
    workspace = make_workspace("B")
    lead = ApiClient(make_key(workspace, "lead"))
    admin = ApiClient(make_key(workspace, "admin"))
    records = [{"text": text, "label": "card" if i < 4 else "transfer"} for i, text in enumerate(TEXTS)]
    dataset = lead.post("/v2/datasets", {"name": "b-data", "records": records}).json()
    assert Dataset.objects.get(pk=dataset["id"]).status == "ready"
    model = lead.post("/v2/models", {"name": "b-model", "dataset_id": dataset["id"], "type": "describe-and-classify",
                                     "labels": [{"name": "card", "description": "card delivery"},
                                                {"name": "transfer", "description": "money transfers"}]})
    assert model.status_code == 201, model.content
    model = model.json()
    admin.post(f"/v2/models/{model['id']}/deploy", {})
    job = lead.post(f"/v2/models/{model['id']}/train", {"type": "active-learning"})
    assert job.status_code == 202, job.content
    record = Record.objects.filter(dataset_id=dataset["id"]).first()
    # A possible label error of B's model, so the review endpoints and pages are tried with a real foreign id.
    issue = LabelIssue.objects.create(model_id=model["id"], scan=LabelIssueScan.objects.create(model_id=model["id"]),
                                      record=record, rank=1, given_label="card", suggested_label="transfer", score=0.9)
    return {"workspace": workspace, "dataset_id": dataset["id"], "model_id": model["id"], "job_id": job.json()["id"],
            "record_id": record.id, "number": 1, "version": 1, "issue_id": issue.id}


def snapshot(workspace):
    return {
        "datasets": sorted(Dataset.objects.filter(workspace=workspace).values_list("id", "name", "status", "record_count")),
        "records": sorted(Record.objects.filter(dataset__workspace=workspace).values_list("id", "text", "label", "split")),
        "annotations": Annotation.objects.filter(record__dataset__workspace=workspace).count(),
        "models": sorted(ClassificationModel.objects.filter(workspace=workspace).values_list(
            "id", "name", "status", "type", "confidence_threshold", "pinned_version")),
        "versions": ModelVersion.objects.filter(model__workspace=workspace).count(),
        "jobs": Job.objects.filter(workspace=workspace).count(),
        "members": sorted(Membership.objects.filter(workspace=workspace).values_list("id", "role")),
        "keys": sorted(ApiKey.objects.filter(workspace=workspace).values_list("id", "revoked_at")),
        "excluded": Record.objects.filter(dataset__workspace=workspace, excluded=True).count(),
        "label_issues": sorted(LabelIssue.objects.filter(model__workspace=workspace).values_list("id", "status")),
        "scans": (LabelIssueScan.objects.filter(model__workspace=workspace).count(),
                  DuplicateScan.objects.filter(dataset__workspace=workspace).count()),
    }


def fill(path: str, values: dict) -> str:
    def replace(match):
        name = match.group(1)
        assert name in values, f"no id to try for path parameter {name} in {path}: extend world_b"
        return str(values[name])

    return re.sub(r"\{(\w+)\}", replace, path)


def outcome(response):
    body = response.json() if response["Content-Type"].startswith("application/json") else {}
    return response.status_code, body.get("error_code") if isinstance(body, dict) else None


def test_every_api_operation_answers_foreign_ids_like_missing_ones(world_b):
    workspace_a = make_workspace("A")
    api = ApiClient(make_key(workspace_a, "admin"))
    before = snapshot(world_b["workspace"])
    schema = Client().get("/v2/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        for method in operations:
            body = SAMPLE_BODIES.get((method, path), {}) if method in ("post", "patch", "put") else None
            assert body is None or (method, path) in SAMPLE_BODIES or "{" not in path, \
                f"add a sample body for {method.upper()} {path} to SAMPLE_BODIES"
            if "{" not in path:
                continue
            missing = {name: MISSING for name in re.findall(r"\{(\w+)\}", path)}
            foreign_url, missing_url = fill(path, world_b), fill(path, missing)
            if method == "get":
                foreign, absent = api.get(foreign_url), api.get(missing_url)
            elif method == "delete":
                foreign, absent = api.delete(foreign_url), api.delete(missing_url)
            else:
                foreign = getattr(api, method)(foreign_url, body)
                absent = getattr(api, method)(missing_url, body)
            assert outcome(foreign) == outcome(absent), f"{method.upper()} {path}: {outcome(foreign)} vs {outcome(absent)}"
            assert outcome(absent) == (404, "NOT_FOUND"), f"{method.upper()} {path} with a missing id: {outcome(absent)}"
            checked += 1
    assert checked >= 10
    assert snapshot(world_b["workspace"]) == before


def test_ids_inside_bodies_are_scoped_too(world_b):
    workspace_a = make_workspace("A")
    api = ApiClient(make_key(workspace_a, "admin"))
    before = snapshot(world_b["workspace"])
    labels = [{"name": "card", "description": ""}, {"name": "transfer", "description": ""}]
    foreign = api.post("/v2/models", {"name": "x", "dataset_id": world_b["dataset_id"], "labels": labels})
    absent = api.post("/v2/models", {"name": "x", "dataset_id": MISSING, "labels": labels})
    assert outcome(foreign) == outcome(absent) == (404, "NOT_FOUND")
    # A's own model, B's record.
    own = api.post("/v2/datasets", {"name": "a-data", "records": [{"text": t} for t in TEXTS]}).json()
    model = api.post("/v2/models", {"name": "a", "dataset_id": own["id"], "labels": labels}).json()
    foreign = api.post(f"/v2/models/{model['id']}/labels", {"labels": [{"record_id": world_b["record_id"], "label": "card"}]})
    absent = api.post(f"/v2/models/{model['id']}/labels", {"labels": [{"record_id": MISSING, "label": "card"}]})
    assert outcome(foreign) == outcome(absent) == (404, "NOT_FOUND")
    assert snapshot(world_b["workspace"]) == before


def _id_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if route.startswith(("django-admin", "v2/")):
                continue
            yield from _id_patterns(pattern, route)
        elif isinstance(pattern, URLPattern) and "<int:" in route:
            yield route


def test_every_browser_page_with_an_id_hides_other_workspaces(world_b):
    workspace_a = make_workspace("A")
    user = make_user(workspace_a, "admin", username="admin-a")
    client = Client()
    client.force_login(user)
    b_member = make_user(world_b["workspace"], "annotator", username="member-b")
    values = {**world_b, "membership_id": Membership.objects.get(user=b_member).id,
              "key_id": ApiKey.objects.filter(workspace=world_b["workspace"]).first().id}
    before = snapshot(world_b["workspace"])
    routes = sorted(set(_id_patterns()))
    assert routes, "no page takes an id?"
    for route in routes:
        names = re.findall(r"<int:(\w+)>", route)
        for name in names:
            assert name in values, f"no id to try for {name} in /{route}: extend the test"
        foreign = "/" + re.sub(r"<int:(\w+)>", lambda m: str(values[m.group(1)]), route)
        absent = "/" + re.sub(r"<int:(\w+)>", str(MISSING), route)
        for method in ("get", "post"):
            got_foreign = getattr(client, method)(foreign)
            got_absent = getattr(client, method)(absent)
            assert got_foreign.status_code == got_absent.status_code, f"{method.upper()} {foreign}: {got_foreign.status_code} vs {got_absent.status_code}"
            assert got_foreign.status_code in (404, 405), f"{method.upper()} {foreign}: {got_foreign.status_code}"
    assert snapshot(world_b["workspace"]) == before
