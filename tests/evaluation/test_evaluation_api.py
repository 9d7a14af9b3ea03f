"""GET /v2/models/{id}/versions/{v}/threshold and GET /v2/models/{id}/compare on real data."""
from __future__ import annotations

import pytest

from labeling.models import DatasetStatus
from labeling.services import dataset_create_from_records
from models_app.evaluation_selectors import threshold_answer
from models_app.ml.compare import mcnemar
from models_app.ml.thresholds import threshold_for_target
from models_app.services import model_create
from tests.conftest import assert_error
from tests.evaluation.conftest import CATEGORIES, DESCRIPTIONS, EVALUATION_RECORDS
from tests.evaluation.oracle import evaluation_predictions

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_threshold_for_a_precision_target(world, annotator_api, other_api):
    model = world.model
    curve = model.versions.get(number=2).threshold_curve
    url = f"/v2/models/{model.id}/versions/2/threshold"
    for target in (0.5, 0.9, 0.97):
        body = annotator_api.get(url, {"min_precision": target}).json()
        expected = threshold_for_target(curve, min_precision=target)
        assert {k: body[k] for k in ("threshold", "precision", "coverage", "recall")} == expected
        assert body["precision"] >= target and body["version"] == 2
    # Lower targets keep at least as much coverage.
    low, high = (annotator_api.get(url, {"min_precision": t}).json() for t in (0.5, 0.97))
    assert low["coverage"] >= high["coverage"]
    # Version 1 stored no curve: it is computed from its predictions on the evaluation records.
    first = annotator_api.get(f"/v2/models/{model.id}/versions/1/threshold", {"min_precision": 0.5}).json()
    assert first["threshold"] is not None and "41 evaluation records" in first["curve_source"]

    for bad in ("1.01", "-0.1", "abc", "nan", "inf"):
        assert_error(annotator_api.get(url, {"min_precision": bad}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url), 400, "MISSING_REQUIRED_FIELD")
    assert_error(annotator_api.get(f"/v2/models/{model.id}/versions/99/threshold", {"min_precision": 0.9}), 404, "NOT_FOUND")
    missing = assert_error(annotator_api.get("/v2/models/999999/versions/2/threshold", {"min_precision": 0.9}), 404, "NOT_FOUND")
    foreign = assert_error(other_api.get(url, {"min_precision": 0.9}), 404, "NOT_FOUND")
    assert foreign["message"] == missing["message"]


def test_an_unreachable_target_answers_nulls_not_an_error():
    curve = [{"threshold": 0.0, "precision": 0.8, "recall": 0.8, "f1": 0.8, "coverage": 1.0},
             {"threshold": 0.5, "precision": 0.9, "recall": 0.6, "f1": 0.72, "coverage": 0.66},
             {"threshold": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "coverage": 0.0}]
    assert threshold_answer(curve, min_precision=0.95) == {"threshold": None, "precision": None, "coverage": None, "recall": None}
    assert threshold_answer(None, min_precision=0.5)["threshold"] is None
    assert threshold_answer(curve, min_precision=0.85) == {"threshold": 0.5, "precision": 0.9, "coverage": 0.66, "recall": 0.6}


def test_threshold_endpoint_is_documented_in_the_schema(anonymous_api):
    schema = anonymous_api.get("/v2/openapi.json").json()
    operation = schema["paths"]["/v2/models/{model_id}/versions/{number}/threshold"]["get"]
    parameter = next(p for p in operation["parameters"] if p["name"] == "min_precision")
    assert parameter["in"] == "query" and parameter["required"] is True and parameter["schema"]["maximum"] == 1
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"threshold", "precision", "coverage", "recall"} <= set(answer["properties"])
    compare = schema["paths"]["/v2/models/{model_id}/compare"]["get"]
    assert {p["name"] for p in compare["parameters"]} >= {"a", "b", "other_model"}


def test_compare_two_versions(world, annotator_api, other_api, other_workspace):
    model = world.model
    v1, v2 = model.versions.get(number=1), model.versions.get(number=2)
    response = annotator_api.get(f"/v2/models/{model.id}/compare", {"a": 1, "b": 2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["a"]["version"] == 1 and body["b"]["version"] == 2
    assert body["a"]["metrics"] == v1.metrics and body["b"]["metrics"] == v2.metrics
    assert body["labels"] == CATEGORIES and set(body["per_class"]) == set(CATEGORIES)
    for row in body["per_class"].values():
        assert row["delta"] == pytest.approx(row["f1_b"] - row["f1_a"], abs=1e-6)

    # Recomputed independently: the discordant counts and McNemar's p-value on the 41 shared records.
    p1 = {p["id"]: p for p in evaluation_predictions(v1, world.dataset)}
    p2 = {p["id"]: p for p in evaluation_predictions(v2, world.dataset)}
    right1 = {rid for rid, p in p1.items() if p["predicted"] == p["gold"]}
    right2 = {rid for rid, p in p2.items() if p["predicted"] == p["gold"]}
    counts = body["disagreements"]
    assert counts["a_right_b_wrong"] == len(right1 - right2) and counts["a_wrong_b_right"] == len(right2 - right1)
    assert counts["both_wrong"] == len(set(p1) - right1 - right2)
    assert counts["predictions_differ"] == sum(p1[rid]["predicted"] != p2[rid]["predicted"] for rid in p1)
    assert body["shared"]["evaluated_on"] == EVALUATION_RECORDS
    assert body["shared"]["accuracy_b"] == pytest.approx(len(right2) / EVALUATION_RECORDS, abs=1e-6)
    assert body["p_value"] == mcnemar(len(right1 - right2), len(right2 - right1))["p_value"]
    assert body["mcnemar"]["p_value"] == body["p_value"] and "McNemar" in body["verdict"]

    url = f"/v2/models/{model.id}/compare"
    assert_error(annotator_api.get(url, {"a": 1, "b": 99}), 404, "NOT_FOUND")
    assert_error(annotator_api.get(url, {"a": 99, "b": 1}), 404, "NOT_FOUND")
    assert_error(annotator_api.get(url, {"a": 1}), 400, "MISSING_REQUIRED_FIELD")
    for bad in ("one", "²", "-1", "1.5"):
        assert_error(annotator_api.get(url, {"a": bad, "b": 2}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url, {"a": 1, "b": 2, "other_model": "²"}), 400, "INVALID_FIELD")
    assert_error(annotator_api.get(url, {"a": 1, "b": 2**70}), 404, "NOT_FOUND")
    missing = assert_error(annotator_api.get("/v2/models/999999/compare", {"a": 1, "b": 2}), 404, "NOT_FOUND")
    foreign = assert_error(other_api.get(url, {"a": 1, "b": 2}), 404, "NOT_FOUND")
    assert foreign["message"] == missing["message"]
    # Another workspace's model as other_model is as absent as a missing one.
    stranger_dataset = dataset_create_from_records(workspace=other_workspace, name="theirs", records=[
        {"text": "my card has not arrived"}, {"text": "my top up failed"}])
    stranger_dataset.refresh_from_db()
    stranger = model_create(workspace=other_workspace, dataset=stranger_dataset, name="Theirs",
                            labels=[{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES])
    no_model = assert_error(annotator_api.get(url, {"a": 1, "b": 1, "other_model": 999999}), 404, "NOT_FOUND")
    foreign_model = assert_error(annotator_api.get(url, {"a": 1, "b": 1, "other_model": stranger.id}), 404, "NOT_FOUND")
    assert foreign_model["message"] == no_model["message"]


def test_compare_with_another_model(world, annotator_api):
    model = world.model
    same_labels = model_create(workspace=model.workspace, dataset=world.dataset, name="Same intents, other words",
                               labels=[{"name": c, "description": f"about {c.replace('_', ' ')}"} for c in reversed(CATEGORIES)])
    body = annotator_api.get(f"/v2/models/{model.id}/compare", {"a": 2, "b": 1, "other_model": same_labels.id}).json()
    assert body["b"]["model_id"] == same_labels.id and body["shared"]["evaluated_on"] == EVALUATION_RECORDS
    # Columns are paired by label name, not position (the other model lists its labels in reverse).
    other = {p["id"]: p for p in evaluation_predictions(same_labels.versions.get(number=1), world.dataset)}
    assert body["shared"]["accuracy_b"] == pytest.approx(
        sum(p["predicted"] == p["gold"] for p in other.values()) / EVALUATION_RECORDS, abs=1e-6)

    fewer = model_create(workspace=model.workspace, dataset=world.dataset, name="Three intents",
                         labels=[{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES[:3]])
    error = assert_error(annotator_api.get(f"/v2/models/{model.id}/compare", {"a": 2, "b": 1, "other_model": fewer.id}),
                         400, "INVALID_FIELD")
    assert "different label sets" in error["message"] and "top_up_failed" in error["message"]


def test_compare_without_shared_evaluation_records_answers_zero_counts(workspace, annotator_api, annotator_user):
    dataset = dataset_create_from_records(workspace=workspace, name="no evaluation split", records=[
        {"text": "my card has not arrived yet"}, {"text": "what exchange rate do you use"},
        {"text": "I lost my card"}, {"text": "my top up failed"}])
    dataset.refresh_from_db()
    assert dataset.status == DatasetStatus.READY
    model = model_create(workspace=workspace, dataset=dataset, name="No holdout",
                         labels=[{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES])
    response = annotator_api.get(f"/v2/models/{model.id}/compare", {"a": 1, "b": 1})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["shared"]["evaluated_on"] == 0 and body["p_value"] is None and body["mcnemar"] is None
    assert body["disagreements"] == {"both_wrong": 0, "a_right_b_wrong": 0, "a_wrong_b_right": 0, "predictions_differ": 0}
    assert "No shared evaluation records" in body["verdict"]
    threshold = annotator_api.get(f"/v2/models/{model.id}/versions/1/threshold", {"min_precision": 0.9}).json()
    assert threshold["threshold"] is None
    # The pages say there is nothing to measure instead of failing.
    from django.test import Client

    client = Client()
    client.force_login(annotator_user)
    page = client.get(f"/models/{model.id}/evaluation/")
    assert page.status_code == 200
    content = page.content.decode()
    assert "not measured" in content and "No evaluation records to measure calibration on" in content
    assert "No confusion matrix" in content
    compare = client.get(f"/models/{model.id}/compare/")
    assert compare.status_code == 200 and "No shared evaluation records" in compare.content.decode()
