"""20 annotators label one model for 30 s against gunicorn (2 workers), PostgreSQL and a real worker
(retraining every 20 labels and refilling the queue while they label).

Every acknowledged label is stored exactly once, no record is handed to two annotators, no call
fails, and the counts the labeling page shows match the database.
"""
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from django.test import Client

from labeling.models import Annotation, Record
from labeling.queue import queue_recompute
from models_app.models import ClassificationModel
from tests.factories import make_key, make_user, make_workspace
from tests.system.http_load import annotate
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

ANNOTATORS = 20
SECONDS = 30


def test_twenty_annotators_for_thirty_seconds(start_worker, start_server, fast_job_liveness):
    workspace = make_workspace()
    model, _ = random_setup(workspace, n=5000)
    # Overlap (several annotators on one record, for agreement) is off: here every record is one annotator's.
    ClassificationModel.objects.filter(pk=model.pk).update(overlap_share=0.0)
    model.refresh_from_db()
    queue_recompute(model=model)
    users = [make_user(workspace, "annotator") for _ in range(ANNOTATORS)]
    keys = [make_key(workspace, "annotator", user) for user in users]

    start_worker(beat=True, env=fast_job_liveness)
    server = start_server(workers=2)
    stop_at = time.time() + SECONDS
    with ThreadPoolExecutor(ANNOTATORS) as pool:
        runs = list(pool.map(lambda i: annotate(server.base_url, keys[i], model.id, list(model.labels), stop_at, seed=i),
                             range(ANNOTATORS)))

    failures = [(i, f) for i, run in enumerate(runs) for f in run.failures]
    assert not failures, failures[:5]
    acknowledged = [(users[i].id, record_id, label) for i, run in enumerate(runs) for _, record_id, label in run.acknowledged]
    assert len(acknowledged) >= 200, f"only {len(acknowledged)} labels in {SECONDS} s: the test measured nothing"

    # No record handed to two annotators (leases last 10 minutes; each annotator labels what it holds).
    holders = defaultdict(set)
    for i, run in enumerate(runs):
        for _, record_id in run.handed:
            holders[record_id].add(i)
    shared = {record_id: sorted(h) for record_id, h in holders.items() if len(h) > 1}
    assert not shared, list(shared.items())[:5]

    # Every acknowledged label stored exactly once, as the record's current label, and nothing else stored.
    stored = defaultdict(list)
    for user_id, record_id, label, is_current in Annotation.objects.filter(model=model).values_list(
            "user_id", "record_id", "label", "is_current"):
        stored[(user_id, record_id)].append((label, is_current))
    assert len(stored) == len(acknowledged) == sum(len(v) for v in stored.values())
    for user_id, record_id, label in acknowledged:
        assert stored[(user_id, record_id)] == [(label, True)], (user_id, record_id, label, stored[(user_id, record_id)])
    labels = dict(Record.objects.filter(dataset_id=model.dataset_id, label__isnull=False).values_list("id", "label"))
    assert labels == {record_id: label for _, record_id, label in acknowledged}

    # The counts the labeling page shows (its counter, the counter's JSON, the training panel) match the database.
    in_database = Record.objects.filter(dataset_id=model.dataset_id, label__in=model.labels).count()
    assert in_database == len(acknowledged)
    browser = Client()
    browser.force_login(users[0])
    page = browser.get(f"/models/{model.id}/label/").content.decode()
    assert int(re.search(r'id="count-total">(\d+)<', page).group(1)) == in_database
    assert browser.get(f"/models/{model.id}/label/stats/").json()["labeled_total"] == in_database
    panel = browser.get(f"/models/{model.id}/training/").content.decode()
    assert int(re.search(r"(\d+) labeled records", panel).group(1)) == in_database
