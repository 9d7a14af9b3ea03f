"""A worker killed with SIGKILL in the middle of a job, then a new worker (with beat, so the stale-job
sweeper runs): the job completes exactly once, and nothing half-written is left or used.

(a) a 200,000-row import: no record of the killed attempt survives and the rerun inserts each row once;
(b) an embedding job: every chunk file is whole (written by rename), right and counted once;
(c) a training job: no version from the killed attempt, exactly one after, its artifact intact, and the
    deployed model answers inference all along (the old version, then the new one).

The kill takes the worker's whole process group, as `kill -9` or the OOM killer would; the pool-process
variant of (a) kills only the prefork child while the main worker survives.
"""
import csv
import io
import os
import re
import threading
import time

import numpy as np
import pytest
from django.core.files.storage import default_storage

from labeling.models import Dataset, Job, Record
from models_app.ml.artifacts import checksum
from models_app.models import ClassificationModel, ModelVersion
from tests.conftest import ApiClient
from tests.factories import make_key, make_workspace
from tests.system.conftest import wait_for
from tests.system.test_worker_pipeline import banking77_rows

ROWS = 200_000


def _job(dataset_id: int, kind: str) -> Job | None:
    return Job.objects.filter(dataset_id=dataset_id, kind=kind).order_by("id").first()


def _finished(job_id: int) -> Job | None:
    return Job.objects.filter(pk=job_id, status__in=["succeeded", "failed"]).first()


def _big_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "channel"])
    for i in range(ROWS):
        writer.writerow([f"message {i} about order {i % 9973}", "email" if i % 2 else "chat"])
    return out.getvalue().encode()


def _published_progress(dataset_id: int) -> float:
    from labeling.selectors import _published_import_progress

    return _published_import_progress(dataset_id) or 0.0


@pytest.mark.parametrize("kill", ["worker", "pool-process"])
def test_import_of_200k_rows_killed_midway_completes_exactly_once(start_worker, fast_job_liveness, kill):
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    upload = io.BytesIO(_big_csv())
    upload.name = "orders.csv"
    # Embedding 200k rows is not what this test is about: one chunk per 100k rows keeps the follow-up small.
    env = {**fast_job_liveness, "LABELF_EMBEDDING_CHUNK_SIZE": "100000"}
    first = start_worker(pool="prefork" if kill == "pool-process" else "solo", env=env)
    response = lead.upload("/v2/datasets", {"name": "orders", "file": upload})
    assert response.status_code == 202, response.content
    dataset_id = response.json()["id"]
    job = wait_for(lambda: _job(dataset_id, "import"), timeout=30, message="the import job")

    # Mid-import: the import published progress (it inserts in 5,000-row batches inside one transaction).
    progress = wait_for(lambda: (lambda p: p if p >= 0.2 else None)(_published_progress(dataset_id)), timeout=120,
                        interval=0.02, message="the import to get a fifth of the way")
    if kill == "pool-process":
        children = first.pool_children()
        assert len(children) == 1, children
        os.kill(children[0], 9)  # the main worker sees its pool process die (reject_on_worker_lost)
    else:
        first.kill()
    assert 0.2 <= progress < 0.9, progress
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 1
    # The killed attempt's transaction never committed: not one of its rows is visible.
    assert Record.objects.filter(dataset_id=dataset_id).count() == 0

    # A new worker with beat (the sweeper). In the pool-process case the first worker lives on: it got the
    # task back at once (reject_on_worker_lost) and its claim refused it while the heartbeat was fresh.
    start_worker(beat=True, env=env)
    done = wait_for(lambda: _finished(job.id), timeout=180, message="the import to finish after the kill")
    assert done.status == "succeeded", done.error
    assert done.attempts == 2  # the killed attempt and the one that finished; never a third
    dataset = Dataset.objects.get(pk=dataset_id)
    records = Record.objects.filter(dataset_id=dataset_id)
    assert dataset.record_count == ROWS == records.count()
    assert records.values("row_index").distinct().count() == ROWS
    assert records.order_by("row_index").last().text == f"message {ROWS - 1} about order {(ROWS - 1) % 9973}"
    assert Job.objects.filter(dataset_id=dataset_id, kind="embed").count() == 1  # the follow-up was made once



def _task_in_progress(worker, task_name: str) -> bool:
    """The worker received a `task_name` task it has not finished (prefetch is 1, so one at a time)."""
    log = worker.log_path.read_text()
    received = len(re.findall(rf"Task {re.escape(task_name)}\[[^]]+\] received", log))
    finished = len(re.findall(rf"Task {re.escape(task_name)}\[[^]]+\] (succeeded|raised|failed)", log))
    return received > finished


def test_embedding_job_killed_midway_leaves_no_half_written_vectors(start_worker, fast_job_liveness, banking77_dir):
    from labeling.embeddings import embed_texts, vector_chunk_name, vectors_load

    chunk, chunks = 400, 4
    env = {**fast_job_liveness, "LABELF_EMBEDDING_CHUNK_SIZE": str(chunk)}
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    first = start_worker(env=env)
    response = lead.post("/v2/datasets", {"name": "tickets", "records": banking77_rows(banking77_dir, chunk * chunks)})
    assert response.status_code == 202, response.content
    dataset_id = response.json()["id"]

    # Killed while embedding a chunk (one chunk is recorded, the next one's task is running).
    embed = wait_for(lambda: (lambda j: j if j and j.result.get("chunks_done")
                              and _task_in_progress(first, "labeling.dataset_embed_chunk") else None)(_job(dataset_id, "embed")),
                     timeout=180, interval=0.02, message="the worker to be embedding its second chunk")
    first.kill()
    embed.refresh_from_db()
    assert embed.status == "running" and 1 <= len(embed.result["chunks_done"]) < chunks

    start_worker(beat=True, env=env)
    dataset = wait_for(lambda: Dataset.objects.filter(pk=dataset_id, status__in=["ready", "failed"]).first(),
                       timeout=180, message="the dataset to be embedded after the kill")
    assert dataset.status == "ready", dataset.error
    embed.refresh_from_db()
    assert embed.status == "succeeded" and embed.attempts == 2
    assert embed.result["chunks_done"] == list(range(chunks)) and dataset.embedded_count == chunk * chunks

    # Only whole chunk files, no temporaries of the cut-off write, and the right vectors in each row.
    directory = vector_chunk_name(dataset_id, 0).rsplit("/", 1)[0]
    assert sorted(default_storage.listdir(directory)[1]) == sorted(f"chunk_{i}.npy" for i in range(chunks))
    assert not list((shared_media_path() / directory).glob(".*"))
    vectors = vectors_load(dataset_id=dataset_id, row_count=chunk * chunks, chunk_size=chunk)
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    # Each chunk holds what embedding its rows afresh gives (the same batches: the int8 model's output
    # depends a little on what shares a batch), up to the float16 rounding of storage.
    texts = list(Record.objects.filter(dataset_id=dataset_id).order_by("row_index").values_list("text", flat=True))
    fresh = np.concatenate([embed_texts(texts[i * chunk:(i + 1) * chunk]) for i in range(chunks)])
    assert np.abs(fresh - vectors).max() < 2e-3


def shared_media_path():
    from django.conf import settings

    from pathlib import Path

    return Path(settings.MEDIA_ROOT)


CATEGORIES = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "card_payment_fee_charged",
              "cash_withdrawal_charge", "pending_transfer", "balance_not_updated_after_bank_transfer"]


def test_training_job_killed_midway_writes_one_whole_version_and_serving_never_stops(start_worker, fast_job_liveness,
                                                                                   banking77_dir):
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    admin = ApiClient(make_key(workspace, "admin"))
    per_category = 60
    rows = [row for row in banking77_rows(banking77_dir, 10_000) if row["metadata"]["category"] in CATEGORIES]
    taken: dict[str, int] = {}
    records = []
    for row in rows:
        if taken.setdefault(row["metadata"]["category"], 0) < per_category:
            taken[row["metadata"]["category"]] += 1
            records.append(row)
    first = start_worker(env=fast_job_liveness)
    dataset_id = lead.post("/v2/datasets", {"name": "intents", "records": records}).json()["id"]
    wait_for(lambda: Dataset.objects.filter(pk=dataset_id, status="ready").exists(), timeout=240,
             message="the worker to import and embed")
    created = lead.post("/v2/models", {"name": "intents", "dataset_id": dataset_id, "type": "describe-and-classify",
                                       "labels": [{"name": c, "description": c.replace("_", " ")} for c in CATEGORIES]})
    assert created.status_code == 201, created.content
    model_id = created.json()["id"]
    ClassificationModel.objects.filter(pk=model_id).update(retrain_every=100_000)  # only the job this test asks for
    assert admin.post(f"/v2/models/{model_id}/deploy", {}).json()["version"] == 1
    labels = [{"record_id": r.id, "label": r.metadata["category"]} for r in Record.objects.filter(dataset_id=dataset_id)]
    for start in range(0, len(labels), 500):
        assert lead.post(f"/v2/models/{model_id}/labels", {"labels": labels[start:start + 500]}).status_code == 200

    served: list[tuple[float, int, int | None]] = []  # (time, status, version) of every inference call
    stop = threading.Event()

    def call_inference():
        from django.db import connection

        client = ApiClient(admin.key)
        try:
            while not stop.is_set():
                answer = client.post(f"/v2/models/{model_id}/inference", {"texts": ["my card has not arrived yet"]})
                served.append((time.time(), answer.status_code, answer.json().get("version")))
                time.sleep(0.1)
        finally:
            connection.close()

    caller = threading.Thread(target=call_inference, daemon=True)
    caller.start()
    try:
        wait_for(lambda: len(served) >= 3, timeout=60, message="inference to answer")
        job_id = lead.post(f"/v2/models/{model_id}/train", {"type": "fine-tuned"}).json()["id"]
        # Killed while training: the job loaded its data (progress 0.1) and is fitting.
        wait_for(lambda: Job.objects.filter(pk=job_id, status="running", progress__gte=0.1).exists(), timeout=120,
                 interval=0.02, message="the training job to start fitting")
        first.kill()
        killed_at = time.time()
        assert not ModelVersion.objects.filter(job_id=job_id).exists()  # nothing of the killed attempt
        assert ClassificationModel.objects.get(pk=model_id).served_version.number == 1

        start_worker(beat=True, env=fast_job_liveness)
        job = wait_for(lambda: _finished(job_id), timeout=300, message="the training job to finish after the kill")
        assert job.status == "succeeded", job.error
        wait_for(lambda: served[-1][2] == job.result["version"], timeout=30, message="the new version to be served")
    finally:
        stop.set()
        caller.join(timeout=30)

    assert job.attempts == 2
    version = ModelVersion.objects.get(job_id=job_id)  # exactly one version from this job
    assert version.number == 2 == job.result["version"] and version.type == "fine-tuned"
    with default_storage.open(version.artifact_path, "rb") as handle:
        assert checksum(handle.read()) == version.checksum
    artifacts = {f"{version.artifact_path.rsplit('/', 1)[0]}/{name}"
                 for name in default_storage.listdir(version.artifact_path.rsplit("/", 1)[0])[1]}
    assert artifacts == set(ModelVersion.objects.filter(model_id=model_id).values_list("artifact_path", flat=True))
    model = ClassificationModel.objects.get(pk=model_id)
    assert model.status == "deployed" and model.served_version_id == version.id

    # Serving never stopped: every call answered, version 1 until the new version landed, then version 2.
    assert all(status == 200 for _, status, _ in served), [s for s in served if s[1] != 200][:5]
    versions = [v for _, _, v in served]
    assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 2
    assert any(at > killed_at and v == 1 for at, _, v in served)  # answered while no worker was training
