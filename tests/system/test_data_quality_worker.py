"""Label-error and near-duplicate scans through Redis and a real Celery worker (prefork pool, whose processes
are daemons: cleanlab must not start a process pool there), with PostgreSQL."""
import csv
import os

from django.db import connection

from tests.conftest import ApiClient
from tests.factories import make_key, make_workspace
from tests.system.conftest import wait_for

CATEGORIES = {"card_arrival": "The customer is waiting for a card to arrive",
              "exchange_rate": "Questions about currency exchange rates",
              "lost_or_stolen_card": "The card was lost or stolen",
              "top_up_failed": "Adding money to the account did not work"}
WRONG = {4: "exchange_rate", 25: "top_up_failed", 50: "card_arrival"}  # row -> a wrong label


def rows(banking77_dir, per_category=20):
    taken = {c: 0 for c in CATEGORIES}
    out = []
    with open(os.path.join(banking77_dir, "train.csv"), newline="") as handle:
        for row in csv.DictReader(handle):
            if taken.get(row["category"], per_category) < per_category:
                taken[row["category"]] += 1
                out.append({"text": row["text"], "label": row["category"]})
    for row, label in WRONG.items():
        out[row] = {**out[row], "label": label}
    return out + [{"text": out[0]["text"].upper() + "  "}]  # an exact duplicate of row 0, unlabeled


def test_scans_run_in_a_prefork_worker(start_worker, banking77_dir):
    assert connection.vendor == "postgresql"
    start_worker(pool="prefork")
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    records = rows(banking77_dir)
    dataset = lead.post("/v2/datasets", {"name": "intents", "records": records}).json()
    wait_for(lambda: lead.get(f"/v2/datasets/{dataset['id']}").json()["status"] == "ready", timeout=240,
             message="the worker to import and embed")
    model = lead.post("/v2/models", {"name": "intents", "dataset_id": dataset["id"], "type": "describe-and-classify",
                                     "labels": [{"name": k, "description": v} for k, v in CATEGORIES.items()]}).json()

    scan = lead.post(f"/v2/models/{model['id']}/label-issues/scan")
    assert scan.status_code == 202 and scan.json()["status"] == "queued"
    body = wait_for(lambda: (lambda b: b if b["scan"]["status"] in ("succeeded", "failed") else None)(
        lead.get(f"/v2/models/{model['id']}/label-issues", {"limit": 100}).json()), timeout=180,
        message="the worker to scan the labels")
    assert body["scan"]["status"] == "succeeded", body["scan"]["error"]
    flagged = {issue["record"]["text"]: issue for issue in body["data"]}
    planted = {records[row]["text"] for row in WRONG}
    assert len(planted & set(flagged)) >= 2, sorted(flagged)
    assert body["data"][0]["record"]["text"] in planted

    first = lead.get(f"/v2/datasets/{dataset['id']}/duplicates").json()
    assert first["status"] in ("queued", "running", "succeeded")
    groups = wait_for(lambda: (lambda b: b if b["status"] in ("succeeded", "failed") else None)(
        lead.get(f"/v2/datasets/{dataset['id']}/duplicates").json()), timeout=120,
        message="the worker to group near-duplicates")
    assert groups["status"] == "succeeded", groups["error"]
    texts = [{r["text"] for r in group["records"]} for group in groups["data"]]
    assert {records[0]["text"], records[-1]["text"]} in texts
