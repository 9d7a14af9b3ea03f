"""The active-learning loop and a fine-tuned training job through Redis and a real Celery worker,
with PostgreSQL: labels given through the API trigger retraining in the worker, the queue is
re-ranked by the new version, and the deployed model serves each new version as it lands."""
import csv
import os

from labeling.models import Job
from models_app.models import ModelVersion
from tests.conftest import ApiClient
from tests.factories import make_key, make_user, make_workspace
from tests.system.conftest import wait_for

CATEGORIES = {"card_arrival": "The customer is waiting for a card to arrive",
              "exchange_rate": "Questions about currency exchange rates",
              "lost_or_stolen_card": "The card was lost or stolen",
              "top_up_failed": "Adding money to the account did not work"}


def rows(banking77_dir, per_category=30):
    taken = {c: 0 for c in CATEGORIES}
    out = []
    with open(os.path.join(banking77_dir, "train.csv"), newline="") as handle:
        for row in csv.DictReader(handle):
            if taken.get(row["category"], per_category) < per_category:
                taken[row["category"]] += 1
                out.append({"text": row["text"], "metadata": {"gold": row["category"]}})
    return out


def test_labels_retrain_and_fine_tune_in_the_worker(celery_worker, banking77_dir):
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    admin = ApiClient(make_key(workspace, "admin"))
    annotator = ApiClient(make_key(workspace, "annotator", make_user(workspace, "annotator")))

    dataset = lead.post("/v2/datasets", {"name": "intents", "records": rows(banking77_dir)}).json()
    wait_for(lambda: lead.get(f"/v2/datasets/{dataset['id']}").json()["status"] == "ready", timeout=240,
             message="the worker to import and embed")
    created = lead.post("/v2/models", {"name": "intents", "dataset_id": dataset["id"], "type": "describe-and-classify",
                                       "labels": [{"name": k, "description": v} for k, v in CATEGORIES.items()]})
    assert created.status_code == 201, created.content
    model_id = created.json()["id"]
    assert admin.post(f"/v2/models/{model_id}/deploy", {}).json()["status"] == "deployed"

    labeled = 0
    while labeled < 80:
        page = wait_for(lambda: annotator.get(f"/v2/models/{model_id}/recommendations", {"limit": 20}).json()["data"],
                        timeout=180, message="recommendations")
        batch = [{"record_id": item["record"]["id"], "label": item["record"]["metadata"]["gold"]} for item in page]
        answer = annotator.post(f"/v2/models/{model_id}/labels", {"labels": batch})
        assert answer.status_code == 200, answer.content
        labeled = answer.json()["labeled_total"]

    # Every 20 labels queued a retrain: the worker writes active-learning versions into PostgreSQL.
    wait_for(lambda: ModelVersion.objects.filter(model_id=model_id, type="active-learning").exists()
             and not Job.objects.filter(model_id=model_id, kind="train", status__in=["queued", "running"]).exists(),
             timeout=300, message="active-learning versions from the worker")
    failed = list(Job.objects.filter(model_id=model_id, status="failed").values_list("kind", "error"))
    assert not failed, failed
    trained = Job.objects.filter(model_id=model_id, kind="train", status="succeeded").order_by("-id").first()
    assert trained.result["model_id"] == model_id and trained.result["version"] >= 2
    newest = ModelVersion.objects.filter(model_id=model_id).order_by("-number").first()
    recommendations = annotator.get(f"/v2/models/{model_id}/recommendations", {"limit": 5}).json()
    assert recommendations["version"] == newest.number

    job = lead.post(f"/v2/models/{model_id}/train", {"type": "fine-tuned"})
    assert job.status_code == 202, job.content
    job_id = job.json()["id"]
    done = wait_for(lambda: (lambda j: j if j["status"] in ("succeeded", "failed") else None)(lead.get(f"/v2/jobs/{job_id}").json()),
                    timeout=600, message="the fine-tuned job")
    assert done["status"] == "succeeded", done["error"]
    version = ModelVersion.objects.get(model_id=model_id, number=done["result"]["version"])
    assert version.type == "fine-tuned" and version.metrics is not None

    served = admin.post(f"/v2/models/{model_id}/inference", {"texts": ["my card still has not arrived"]}).json()
    assert served["version"] == version.number
    assert served["predictions"][0]["label"] == "card_arrival"
