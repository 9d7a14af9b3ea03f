"""/v2 models: create, registry, versions, deploy/archive, inference, errors, isolation, roles and quota."""
from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from labelf_studio.workspaces.models import AuditEvent, UsagePeriod
from labeling.models import Dataset, DatasetStatus, Recommendation, Record
from models_app import inference
from models_app.ml.artifacts import checksum
from models_app.models import ClassificationModel, DeploymentEvent, ModelVersion
from tests.conftest import ApiClient, assert_error
from tests.factories import make_key, make_workspace
from tests.models_app.conftest import LABELS, make_ready_dataset

MODEL_FIELDS = {"id", "name", "type", "status", "labels", "metrics", "training_examples", "last_trained",
                "confidence_threshold", "version", "dataset_id", "label_descriptions", "created_at",
                "overlap_share", "overlap_annotators"}
LABEL_NAMES = [label["name"] for label in LABELS]


def infer(api, model_id, texts):
    return api.post(f"/v2/models/{model_id}/inference", {"texts": texts})


# --- create -----------------------------------------------------------------------------------------

def test_create_answers_a_ready_model_with_version_1_and_its_artifact(lead_api, model_payload, ready_dataset,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = lead_api.post("/v2/models", model_payload)
    # The summary task and the first queue ranking, both queued once the version is committed.
    assert len(callbacks) == 2
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == MODEL_FIELDS
    assert body["status"] == "ready" and body["type"] == "describe-and-classify" and body["version"] == 1
    assert body["labels"] == LABEL_NAMES
    assert body["label_descriptions"]["exchange_rate"] == "Questions about currency exchange rates"
    assert body["dataset_id"] == ready_dataset.id and body["metrics"] is None and body["training_examples"] == 0
    assert body["last_trained"] is None and body["created_at"].endswith("Z")

    version = ModelVersion.objects.get(model_id=body["id"])
    assert version.number == 1 and version.labels == LABEL_NAMES
    assert version.artifact_path == f"artifacts/model_{body['id']}/v1-{version.checksum[:12]}.pkl"
    with default_storage.open(version.artifact_path, "rb") as handle:
        assert checksum(handle.read()) == version.checksum
    # The summary task ran (eagerly in tests) over the whole dataset.
    assert sum(version.summary["distribution"].values()) == ready_dataset.record_count
    assert len(version.summary["sample"]) == 20
    assert AuditEvent.objects.filter(action="model.create").count() == 1
    # The queue is ranked before any annotator asks for it.
    assert Recommendation.objects.filter(model_id=body["id"], version=1).count() == ready_dataset.record_count


def test_create_evaluates_on_labeled_evaluation_records(workspace, lead_api, b77_rows):
    dataset = make_ready_dataset(workspace, b77_rows, evaluation_labels=True)
    response = lead_api.post("/v2/models", {"name": "m", "dataset_id": dataset.id, "labels": LABELS})
    assert response.status_code == 201
    metrics = response.json()["metrics"]
    assert metrics["evaluation"] == "holdout" and metrics["evaluated_on"] == len(b77_rows) // 2
    # Four well-described intents: zero-shot gets most of them right.
    assert metrics["accuracy"] > 0.6
    assert set(metrics["per_class"]) == set(LABEL_NAMES)


def test_create_evaluates_on_imported_pool_labels_when_there_is_no_evaluation_split(workspace, lead_api, b77_rows):
    # A describe-and-classify head never trains on labels, so labels imported with the data measure it honestly.
    dataset = make_ready_dataset(workspace, b77_rows)
    Record.objects.filter(dataset=dataset, row_index__lt=len(b77_rows) // 2).update(label=None)
    for row_index, (_, label) in enumerate(b77_rows):
        if row_index >= len(b77_rows) // 2:
            Record.objects.filter(dataset=dataset, row_index=row_index).update(label=label)
    response = lead_api.post("/v2/models", {"name": "m", "dataset_id": dataset.id, "labels": LABELS})
    assert response.status_code == 201
    metrics = response.json()["metrics"]
    assert metrics["evaluation"] == "holdout" and metrics["evaluated_on"] == len(b77_rows) - len(b77_rows) // 2
    assert metrics["accuracy"] > 0.6


@pytest.mark.parametrize("labels, fragment", [
    ([{"name": "a", "description": ""}, {"name": "a", "description": "x"}], "duplicate"),
    ([{"name": "  ", "description": "x"}], "labels[0].name"),
    ([{"description": "x"}], "labels[0].name"),
    ([], "labels"),
    ("billing", "labels"),
    ([{"name": f"label {i}"} for i in range(1001)], "at most 1000"),
    ([{"name": "a", "description": 5}], "labels[0].description"),
    (["a"], "labels[0]"),
])
def test_create_rejects_bad_label_sets_without_writing(lead_api, model_payload, labels, fragment):
    body = assert_error(lead_api.post("/v2/models", {**model_payload, "labels": labels}), 400, "INVALID_FIELD")
    assert fragment in body["message"]
    assert not ClassificationModel.objects.exists() and not ModelVersion.objects.exists()


@pytest.mark.parametrize("field", ["name", "dataset_id", "labels"])
def test_create_requires_each_field(lead_api, model_payload, field):
    del model_payload[field]
    body = assert_error(lead_api.post("/v2/models", model_payload), 400, "MISSING_REQUIRED_FIELD")
    assert body["message"] == f"{field} field is required"


@pytest.mark.parametrize("change", [{"name": ""}, {"name": 3}, {"dataset_id": "7"}, {"type": "fine-tuned"}])
def test_create_rejects_wrong_types(lead_api, model_payload, change):
    assert_error(lead_api.post("/v2/models", {**model_payload, **change}), 400, "INVALID_FIELD")


def test_create_on_another_workspaces_dataset_is_404(lead_api, other_workspace, model_payload, b77_rows):
    theirs = make_ready_dataset(other_workspace, b77_rows[:5])
    assert_error(lead_api.post("/v2/models", {**model_payload, "dataset_id": theirs.id}), 404, "NOT_FOUND")
    assert_error(lead_api.post("/v2/models", {**model_payload, "dataset_id": 999_999}), 404, "NOT_FOUND")


def test_create_on_a_dataset_still_importing_is_409(lead_api, workspace, model_payload):
    importing = Dataset.objects.create(workspace=workspace, name="importing", status=DatasetStatus.PROCESSING)
    assert_error(lead_api.post("/v2/models", {**model_payload, "dataset_id": importing.id}), 409, "DATASET_PROCESSING")
    assert not ClassificationModel.objects.exists()


def test_annotator_cannot_create(annotator_api, model_payload):
    assert_error(annotator_api.post("/v2/models", model_payload), 403, "FORBIDDEN")


def test_create_with_bad_json_or_no_key(lead_api, anonymous_api, model_payload):
    assert_error(lead_api.post("/v2/models", "{not json"), 400, "MALFORMED_JSON")
    assert_error(lead_api.post("/v2/models", [1, 2]), 400, "INVALID_FIELD")
    assert_error(anonymous_api.post("/v2/models", model_payload), 401, "UNAUTHORIZED")


# --- registry ---------------------------------------------------------------------------------------

def test_list_and_get_return_the_model_object_and_hide_other_workspaces(lead_api, other_api, created_model):
    listed = lead_api.get("/v2/models").json()
    assert listed["total"] == 1 and listed["has_more"] is False and listed["data"] == [created_model]
    assert lead_api.get(f"/v2/models/{created_model['id']}").json() == created_model

    assert other_api.get("/v2/models").json()["total"] == 0
    missing = assert_error(lead_api.get("/v2/models/999999"), 404, "NOT_FOUND")
    theirs = assert_error(other_api.get(f"/v2/models/{created_model['id']}"), 404, "NOT_FOUND")
    assert missing["message"] == theirs["message"]
    for path in ("", "/versions", "/versions/1"):
        assert_error(other_api.get(f"/v2/models/{created_model['id']}{path}"), 404, "NOT_FOUND")
    for path in ("/deploy", "/archive", "/inference"):
        assert_error(other_api.post(f"/v2/models/{created_model['id']}{path}", {"texts": ["x"]}), 404, "NOT_FOUND")
    assert_error(other_api.patch(f"/v2/models/{created_model['id']}", {"name": "x"}), 404, "NOT_FOUND")


def test_list_does_not_query_per_model(lead_api, created_model, model_payload):
    one_model = _count(lead_api, "/v2/models")
    for _ in range(3):
        lead_api.post("/v2/models", model_payload)
    assert _count(lead_api, "/v2/models") == one_model
    assert len(lead_api.get("/v2/models").json()["data"]) == 4


def _count(api, path) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert api.get(path).status_code == 200
    return len(captured.captured_queries)


def test_pagination(lead_api, model_payload, created_model):
    lead_api.post("/v2/models", {**model_payload, "name": "second"})
    page = lead_api.get("/v2/models", {"offset": 1, "limit": 1}).json()
    assert page["total"] == 2 and page["offset"] == 1 and page["limit"] == 1 and page["has_more"] is False
    assert page["data"][0]["id"] == created_model["id"]  # newest first
    assert_error(lead_api.get("/v2/models", {"limit": 101}), 400, "INVALID_FIELD")


# --- patch ------------------------------------------------------------------------------------------

def test_patch_name_and_threshold(lead_api, created_model):
    response = lead_api.patch(f"/v2/models/{created_model['id']}", {"name": "Renamed", "confidence_threshold": 0.8})
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed" and response.json()["confidence_threshold"] == 0.8
    assert response.json()["version"] == 1  # no new version without new descriptions


@pytest.mark.parametrize("body", [{"confidence_threshold": 1.5}, {"confidence_threshold": -0.1},
                                  {"confidence_threshold": "high"}, {"confidence_threshold": None},
                                  {"name": ""}, {"label_descriptions": {"nope": "x"}},
                                  {"label_descriptions": ["x"]}, {"label_descriptions": {"exchange_rate": 3}}])
def test_patch_rejects_bad_values(lead_api, created_model, body):
    assert_error(lead_api.patch(f"/v2/models/{created_model['id']}", body), 400, "INVALID_FIELD")
    assert ClassificationModel.objects.get().name == created_model["name"]


def test_patch_descriptions_rebuilds_a_new_version(lead_api, admin_api, created_model):
    model_id = created_model["id"]
    admin_api.post(f"/v2/models/{model_id}/deploy", {})
    before = infer(admin_api, model_id, ["what rate do you use to convert euros"]).json()
    response = lead_api.patch(f"/v2/models/{model_id}", {"label_descriptions": {"exchange_rate": "Buying a house"}})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2 and body["label_descriptions"]["exchange_rate"] == "Buying a house"
    assert body["label_descriptions"]["card_arrival"] == LABELS[0]["description"]  # others kept
    versions = ModelVersion.objects.filter(model_id=model_id)
    assert versions.count() == 2 and versions[0].checksum != versions[1].checksum
    # Deployed without a pin: the new version is served at once, without a restart.
    after = infer(admin_api, model_id, ["what rate do you use to convert euros"]).json()
    assert before["version"] == 1 and after["version"] == 2
    assert after["predictions"][0]["scores"] != before["predictions"][0]["scores"]


def test_annotator_cannot_patch(annotator_api, created_model):
    assert_error(annotator_api.patch(f"/v2/models/{created_model['id']}", {"name": "x"}), 403, "FORBIDDEN")


# --- versions ---------------------------------------------------------------------------------------

def test_versions_list_and_detail(lead_api, created_model):
    lead_api.patch(f"/v2/models/{created_model['id']}", {"label_descriptions": {"card_arrival": "Where is my card"}})
    page = lead_api.get(f"/v2/models/{created_model['id']}/versions").json()
    assert page["total"] == 2 and [v["version"] for v in page["data"]] == [2, 1]
    assert set(page["data"][0]) == {"version", "type", "created_at", "training_examples", "metrics"}
    detail = lead_api.get(f"/v2/models/{created_model['id']}/versions/1").json()
    assert detail["version"] == 1 and "threshold_curve" in detail and detail["type"] == "describe-and-classify"
    assert_error(lead_api.get(f"/v2/models/{created_model['id']}/versions/9"), 404, "NOT_FOUND")
    assert_error(lead_api.get(f"/v2/models/{created_model['id']}/versions/abc"), 404, "NOT_FOUND")


def test_version_create_numbers_and_serving(created_model, admin_api):
    """The service training jobs call: next number, artifact first, deployed-and-unpinned serves it."""
    from models_app.services import model_deploy, version_create

    model = ClassificationModel.objects.get(pk=created_model["id"])
    head = inference.head_for_version(model.latest_version)
    model_deploy(model=model, version=1)
    v2 = version_create(model=model, head=head, type="active-learning", training_examples=40,
                        metrics={"accuracy": 0.9}, threshold_curve=[{"threshold": 0.5}])
    assert v2.number == 2 and default_storage.exists(v2.artifact_path)
    model.refresh_from_db()
    assert model.served_version.number == 1  # pinned to 1
    model_deploy(model=model)
    version_create(model=model, head=head, type="active-learning", training_examples=60)
    body = admin_api.get(f"/v2/models/{model.id}").json()
    assert body["version"] == 3 and body["type"] == "active-learning" and body["training_examples"] == 60
    assert body["last_trained"] is not None


def test_a_deployed_model_keeps_serving_while_training_and_then_serves_the_new_version(admin_api, deployed_model):
    """Training jobs mark the model `training`; inference must not stop, and the job's version goes live."""
    from models_app.models import ModelStatus
    from models_app.services import version_create

    model = ClassificationModel.objects.get(pk=deployed_model["id"])
    ClassificationModel.objects.filter(pk=model.pk).update(status=ModelStatus.TRAINING)
    assert infer(admin_api, model.id, ["I lost my card"]).json()["version"] == 1
    version_create(model=model, head=inference.head_for_version(model.latest_version), type="active-learning",
                   training_examples=12)
    ClassificationModel.objects.filter(pk=model.pk).update(status=ModelStatus.DEPLOYED)  # the job restores it
    assert infer(admin_api, model.id, ["I lost my card"]).json()["version"] == 2
    assert admin_api.get(f"/v2/models/{model.id}").json()["version"] == 2


# --- deploy and archive -----------------------------------------------------------------------------

def test_deploy_pin_archive_and_redeploy(admin_api, created_model, admin_user):
    model_id = created_model["id"]
    assert_error(infer(admin_api, model_id, ["hi"]), 409, "MODEL_NOT_DEPLOYED")
    assert infer(admin_api, model_id, ["hi"]).json()["message"] == "No deployed model found"

    deployed = admin_api.post(f"/v2/models/{model_id}/deploy", {})
    assert deployed.status_code == 200 and deployed.json()["status"] == "deployed" and deployed.json()["version"] == 1
    assert infer(admin_api, model_id, ["hi"]).status_code == 200

    assert_error(admin_api.post(f"/v2/models/{model_id}/deploy", {"version": 7}), 404, "NOT_FOUND")
    assert_error(admin_api.post(f"/v2/models/{model_id}/deploy", {"version": "1"}), 400, "INVALID_FIELD")
    assert admin_api.post(f"/v2/models/{model_id}/deploy", {"version": 1}).json()["version"] == 1

    archived = admin_api.post(f"/v2/models/{model_id}/archive")
    assert archived.json()["status"] == "archived"
    body = assert_error(infer(admin_api, model_id, ["hi"]), 409, "MODEL_ARCHIVED")
    assert body["message"] == "Model is archived"

    assert admin_api.post(f"/v2/models/{model_id}/deploy", {}).json()["status"] == "deployed"
    assert infer(admin_api, model_id, ["hi"]).status_code == 200

    events = list(DeploymentEvent.objects.filter(model_id=model_id).order_by("id").values_list("action", "version", "pinned"))
    assert events == [("deploy", 1, False), ("deploy", 1, True), ("archive", None, False), ("deploy", 1, False)]
    assert DeploymentEvent.objects.filter(user=admin_user).count() == 4
    assert DeploymentEvent.objects.exclude(api_key=None).count() == 4
    assert AuditEvent.objects.filter(action__in=["model.deploy", "model.archive"]).count() == 4


def test_lead_and_annotator_cannot_deploy_or_archive(lead_api, annotator_api, created_model):
    for api in (lead_api, annotator_api):
        assert_error(api.post(f"/v2/models/{created_model['id']}/deploy", {}), 403, "FORBIDDEN")
        assert_error(api.post(f"/v2/models/{created_model['id']}/archive"), 403, "FORBIDDEN")
    assert not DeploymentEvent.objects.exists()


# --- inference --------------------------------------------------------------------------------------

def test_inference_answers_in_order_with_scores_summing_to_one(annotator_api, deployed_model):
    texts = ["I lost my card yesterday", "my top up did not go through", "what is the euro to dollar rate",
             "when will my new card arrive"]
    response = infer(annotator_api, deployed_model["id"], texts)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_id"] == deployed_model["id"] and body["version"] == 1
    assert [p["label"] for p in body["predictions"]] == ["lost_or_stolen_card", "top_up_failed", "exchange_rate",
                                                         "card_arrival"]
    for prediction in body["predictions"]:
        assert set(prediction["scores"]) == set(LABEL_NAMES)
        assert abs(sum(prediction["scores"].values()) - 1.0) < 1e-9
        assert prediction["confidence"] == max(prediction["scores"].values())
        assert prediction["above_threshold"] == (prediction["confidence"] >= 0.5)
        assert all(round(score, 6) == score for score in prediction["scores"].values())
    assert response["X-RateLimit-Limit"] and response["X-RateLimit-Remaining"]


def test_inference_is_deterministic_and_uses_the_threshold(admin_api, deployed_model):
    texts = ["I lost my card", "hello there"]
    first = infer(admin_api, deployed_model["id"], texts).json()
    inference.clear_cache()  # a fresh load from the artifact gives the same answer
    assert infer(admin_api, deployed_model["id"], texts).json() == first
    admin_api.patch(f"/v2/models/{deployed_model['id']}", {"confidence_threshold": 1.0})
    assert not any(p["above_threshold"] for p in infer(admin_api, deployed_model["id"], texts).json()["predictions"])


def test_inference_counts_texts_and_enforces_the_quota(db, b77_rows):
    workspace = make_workspace(monthly_quota=5)
    api = ApiClient(make_key(workspace, "admin"))
    dataset = make_ready_dataset(workspace, b77_rows[:10])
    model_id = api.post("/v2/models", {"name": "q", "dataset_id": dataset.id, "labels": LABELS}).json()["id"]
    api.post(f"/v2/models/{model_id}/deploy", {})
    assert infer(api, model_id, ["a", "b", "c"]).status_code == 200
    body = assert_error(infer(api, model_id, ["a", "b", "c"]), 403, "QUOTA_EXCEEDED")
    assert body["message"].startswith("Quota exceeded: ")
    assert infer(api, model_id, ["a", "b"]).status_code == 200
    assert sum(UsagePeriod.objects.filter(workspace=workspace).values_list("texts_classified", flat=True)) == 5


@pytest.mark.parametrize("body, status, code", [
    ({}, 400, "MISSING_REQUIRED_FIELD"),
    ({"texts": "hello"}, 400, "INVALID_FIELD"),
    ({"texts": {"a": 1}}, 400, "INVALID_FIELD"),
    ({"texts": ["ok", 5]}, 400, "INVALID_FIELD"),
    ({"texts": ["ok", None]}, 400, "INVALID_FIELD"),
    ({"texts": [["nested"]]}, 400, "INVALID_FIELD"),
    ({"texts": []}, 400, "EMPTY_TEXTS"),
    ({"texts": ["", "   ", "\n"]}, 400, "EMPTY_TEXTS"),
    ({"texts": ["x"] * 9}, 400, "TOO_MANY_TEXTS"),
    ({"texts": ["x" * 10_001]}, 400, "INVALID_FIELD"),
    ([1], 400, "INVALID_FIELD"),
    ("null", 400, "MISSING_REQUIRED_FIELD"),
])
def test_inference_bad_input(admin_api, deployed_model, body, status, code):
    response = admin_api.post(f"/v2/models/{deployed_model['id']}/inference", body)
    error = assert_error(response, status, code)
    if code == "MISSING_REQUIRED_FIELD":
        assert error["message"] == "texts field is required"
    if code == "INVALID_FIELD" and isinstance(body, dict):
        assert "texts" in error["message"]
    assert not UsagePeriod.objects.filter(texts_classified__gt=0).exists()


def test_ids_beyond_the_integer_range_are_404_not_500(admin_api, deployed_model, model_payload):
    huge = 2**70
    for path in (f"/v2/models/{huge}", f"/v2/models/{huge}/versions", f"/v2/models/{deployed_model['id']}/versions/{huge}"):
        assert_error(admin_api.get(path), 404, "NOT_FOUND")
    assert_error(infer(admin_api, huge, ["x"]), 404, "NOT_FOUND")
    assert_error(admin_api.post(f"/v2/models/{deployed_model['id']}/deploy", {"version": huge}), 404, "NOT_FOUND")
    assert_error(admin_api.post(f"/v2/models/{deployed_model['id']}/deploy", {"version": -1}), 404, "NOT_FOUND")
    assert_error(admin_api.post("/v2/models", {**model_payload, "dataset_id": huge}), 404, "NOT_FOUND")
    assert_error(admin_api.post("/v2/models", {**model_payload, "dataset_id": -3}), 404, "NOT_FOUND")


def test_nul_characters_in_names_are_invalid(admin_api, deployed_model, model_payload):
    assert_error(admin_api.post("/v2/models", {**model_payload, "name": "a\x00b"}), 400, "INVALID_FIELD")
    labels = [{"name": "a\x00", "description": ""}]
    assert_error(admin_api.post("/v2/models", {**model_payload, "labels": labels}), 400, "INVALID_FIELD")
    patch = {"label_descriptions": {"exchange_rate": "\x00"}}
    assert_error(admin_api.patch(f"/v2/models/{deployed_model['id']}", patch), 400, "INVALID_FIELD")


def test_inference_edge_texts_never_fail(admin_api, deployed_model):
    texts = ["", "ünïcödé ✓ 😀", "x" * 10_000, "<script>alert(1)</script>", "\x00\x01", "a\nb\tc", "0", " "]
    response = infer(admin_api, deployed_model["id"], texts)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 8


def test_inference_on_unknown_ids_and_methods(admin_api, deployed_model):
    assert_error(infer(admin_api, 999_999, ["x"]), 404, "NOT_FOUND")
    assert_error(admin_api.get(f"/v2/models/{deployed_model['id']}/inference"), 405, "METHOD_NOT_ALLOWED")
    assert_error(admin_api.post(f"/v2/models/{deployed_model['id']}/inference", "{\"texts\": [", ), 400, "MALFORMED_JSON")
    response = admin_api.post(f"/v2/models/{deployed_model['id']}/inference", "texts=a", content_type="text/plain")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_inference_with_a_tampered_artifact_is_a_clean_500(admin_api, deployed_model):
    version = ModelVersion.objects.get(model_id=deployed_model["id"])
    inference.clear_cache()
    with open(default_storage.path(version.artifact_path), "ab") as handle:
        handle.write(b"tampered")
    body = assert_error(infer(admin_api, deployed_model["id"], ["hi"]), 500, "INTERNAL_ERROR")
    assert "Traceback" not in body["message"]


# Rate limit 9 (database backend, with savepoints), model + served version 1, quota reservation with the
# request's count 1 (one conditional UPDATE); the key is cached. Production's path (Redis rate limits) is
# pinned in test_inference_queries.py.
INFERENCE_QUERIES = 11


def test_inference_query_count_is_pinned(admin_api, deployed_model, django_assert_num_queries):
    """Nothing per text, and one query of our own: the model with its served version, then the cached head."""
    infer(admin_api, deployed_model["id"], ["warm up the caches"])
    for texts in (["one text"], ["eight"] * 8):
        with django_assert_num_queries(INFERENCE_QUERIES) as captured:
            assert infer(admin_api, deployed_model["id"], texts).status_code == 200
        ours = [q["sql"] for q in captured.captured_queries if "models_app_" in q["sql"]]
        assert len(ours) == 1, ours
