"""GET /v2/models/{id}/agreement on labels stored as annotations: the published Krippendorff example and
scikit-learn's kappa end to end, time windows, labels per hour, agreement with the consensus."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from labeling.models import Annotation, Record
from tests.conftest import assert_error
from tests.factories import make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)
from tests.unit.test_agreement import KRIPPENDORFF_C

pytestmark = pytest.mark.django_db

LABELS = ("one", "two", "three", "four", "five")


@pytest.fixture
def model(workspace):
    model, _ = random_setup(workspace, n=40, labels=LABELS)
    return model


def store(model, user, labels_by_record: dict[int, str], *, when=None, duration_ms=None, adjudicated=False):
    """Annotations as the labeling services leave them (created_at set afterwards: it is auto_now_add)."""
    created = Annotation.objects.bulk_create([
        Annotation(record_id=record_id, model=model, user=user, label=label, duration_ms=duration_ms,
                   adjudicated=adjudicated) for record_id, label in labels_by_record.items()])
    if when is not None:
        Annotation.objects.filter(id__in=[a.id for a in created]).update(created_at=when)
    return created


def agreement(api, model, **params):
    response = api.get(f"/v2/models/{model.id}/agreement", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_alpha_of_the_published_example_through_the_api(model, workspace, lead_api):
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index").values_list("id", flat=True))
    for coder, values in KRIPPENDORFF_C.items():
        user = make_user(workspace, "annotator", username=f"coder-{coder}")
        store(model, user, {records[unit]: LABELS[v - 1] for unit, v in enumerate(values) if v is not None})
    body = agreement(lead_api, model)
    assert body["alpha"] == pytest.approx(0.743, abs=5e-4)
    assert body["units"] == 11  # the twelfth unit has a single value: not pairable
    assert [a["annotator"]["name"] for a in body["annotators"]] == ["coder-A", "coder-B", "coder-C", "coder-D"]
    assert [a["labels"] for a in body["annotators"]] == [9, 11, 10, 11]
    # Every pair's kappa is scikit-learn's over the units both coded.
    pairs = {(p["a"]["name"], p["b"]["name"]): p for p in body["pairs"]}
    assert len(pairs) == 6
    for (a, b), pair in pairs.items():
        va, vb = KRIPPENDORFF_C[a[-1]], KRIPPENDORFF_C[b[-1]]
        shared = [(x, y) for x, y in zip(va, vb) if x is not None and y is not None]
        assert pair["shared"] == len(shared)
        assert pair["kappa"] == pytest.approx(cohen_kappa_score([x for x, _ in shared], [y for _, y in shared]), abs=1e-4)
    per_class = {c["label"]: c for c in body["per_class"]}
    assert list(per_class) == list(LABELS)
    assert per_class["three"]["agreement"] == pytest.approx(8 / 10, abs=1e-4)  # o_33 / n_3 in the paper's matrix
    assert per_class["five"]["agreement"] == 1.0


def test_random_team_kappa_matches_scikit_learn(model, workspace, lead_api):
    rng = np.random.default_rng(7)
    records = list(Record.objects.filter(dataset=model.dataset).values_list("id", flat=True))
    truth = rng.integers(0, 5, size=len(records))
    given = {}
    for name, accuracy in (("ann", 0.9), ("bob", 0.6), ("cy", 0.3)):
        user = make_user(workspace, "annotator", username=name)
        labels = np.where(rng.random(len(records)) < accuracy, truth, rng.integers(0, 5, size=len(records)))
        given[name] = [LABELS[v] for v in labels]
        store(model, user, dict(zip(records, given[name])))
    body = agreement(lead_api, model)
    for pair in body["pairs"]:
        expected = cohen_kappa_score(given[pair["a"]["name"]], given[pair["b"]["name"]])
        assert pair["kappa"] == pytest.approx(expected, abs=1e-4) and pair["shared"] == len(records)
    kappas = {(p["a"]["name"], p["b"]["name"]): p["kappa"] for p in body["pairs"]}
    assert kappas[("ann", "bob")] > kappas[("ann", "cy")]  # the careless annotator agrees least
    scores = {a["annotator"]["name"]: a["agreement_with_consensus"] for a in body["annotators"]}
    assert scores["ann"] > scores["cy"]


def test_consensus_is_the_leads_decision_and_labels_per_hour_come_from_durations(model, workspace, lead_api, lead_user):
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index").values_list("id", flat=True))[:4]
    ann, bob = (make_user(workspace, "annotator", username=name) for name in ("ann", "bob"))
    store(model, ann, {r: "one" for r in records}, duration_ms=6000)  # 4 labels in 24 s: 600 per hour
    store(model, bob, {records[0]: "one", records[1]: "one", records[2]: "two", records[3]: "two"}, duration_ms=12000)
    store(model, lead_user, {records[2]: "two"}, adjudicated=True)  # the lead sided with bob on record 3
    body = agreement(lead_api, model)
    by_name = {a["annotator"]["name"]: a for a in body["annotators"]}
    assert lead_user.username not in by_name  # a decision is not an annotator's opinion
    assert by_name["ann"]["labels_per_hour"] == pytest.approx(600) and by_name["bob"]["labels_per_hour"] == pytest.approx(300)
    # Consensus: records 1, 2 agreed; 3 decided "two"; 4 has no majority and no decision.
    assert by_name["ann"]["compared"] == 3 and by_name["ann"]["agreement_with_consensus"] == pytest.approx(2 / 3, abs=1e-4)
    assert by_name["bob"]["compared"] == 3 and by_name["bob"]["agreement_with_consensus"] == 1.0


def test_the_time_window(model, workspace, lead_api):
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index").values_list("id", flat=True))
    ann, bob = (make_user(workspace, "annotator", username=name) for name in ("ann", "bob"))
    now = timezone.now()
    old = now - timedelta(days=10)
    store(model, ann, {r: "one" for r in records[:5]}, when=old)
    store(model, bob, {r: "one" for r in records[:5]}, when=old)
    store(model, ann, {r: "two" for r in records[5:8]}, when=now - timedelta(hours=2))
    store(model, bob, {r: "three" for r in records[5:8]}, when=now - timedelta(hours=1))
    everything = agreement(lead_api, model)
    assert everything["units"] == 8 and everything["since"] is None
    week = agreement(lead_api, model, window="7d")
    assert week["units"] == 3 and week["since"].endswith("Z")
    assert week["pairs"][0]["observed_agreement"] == 0.0
    assert [a["labels"] for a in week["annotators"]] == [3, 3]
    day = (now - timedelta(days=10)).date().isoformat()
    explicit = agreement(lead_api, model, since=day, until=day)  # a date means the whole day
    assert explicit["units"] == 5 and explicit["pairs"][0]["observed_agreement"] == 1.0
    assert agreement(lead_api, model, window="24h")["units"] == 3
    assert agreement(lead_api, model, since=(now - timedelta(minutes=90)).isoformat())["units"] == 0


@pytest.mark.parametrize("params", [{"window": "3w"}, {"since": "yesterday"}, {"until": "2026-13-40"},
                                    {"since": "2026-03-02", "until": "2026-03-01"}, {"since": "9999-12-31T23:59:59-14:00"},
                                    {"until": "9999-12-31"}])
def test_bad_windows_are_400(model, lead_api, params):
    assert_error(lead_api.get(f"/v2/models/{model.id}/agreement", params), 400, "INVALID_FIELD")


def test_no_labels_no_numbers(model, lead_api):
    body = agreement(lead_api, model)
    assert body["alpha"] is None and body["units"] == 0 and body["pairs"] == [] and body["annotators"] == []
    assert body["overlap"] == {"share": 0.1, "annotators": 2, "waiting": 0} and body["conflicts_open"] == 0
