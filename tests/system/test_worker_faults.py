"""A worker killed with SIGKILL in the middle of a job, then a new worker (with beat, so the stale-job
sweeper runs): the job completes exactly once, and nothing half-written is left or used.

(a) a 200,000-row import: no record of the killed attempt survives and the rerun inserts each row once;
(b) an embedding job: every chunk file is whole (written by rename), right and counted once;
(c) a training job: no version from the killed attempt, exactly one after, its artifact intact, and the
    deployed model answers inference all along (the old version, then the new one).

The kill takes the worker's whole process group, as `kill -9` or the OOM killer would; (a) first kills
only the prefork pool process while the main worker survives, then every worker process.
"""
import csv
import io
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from django.core.files.storage import default_storage

from labeling.models import Dataset, Job, Record
from labeling.services import progress_file_name
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
    # The file an import in progress writes (its rows are invisible until its transaction commits).
    from labeling.selectors import _published_import_progress

    return _published_import_progress(dataset_id) or 0.0


def _mid_import(dataset_id: int, job_id: int, attempt: int, *, or_later: bool = False) -> float | None:
    """The import's progress once attempt `attempt` (or, with `or_later`, any later one) has published at least
    a fifth (else None)."""
    job = Job.objects.get(pk=job_id)
    name = progress_file_name(dataset_id)
    right_attempt = job.attempts >= attempt if or_later else job.attempts == attempt
    if job.status != "running" or not right_attempt or not default_storage.exists(name):
        return None
    if default_storage.get_modified_time(name) <= job.started_at:  # still the killed attempt's file
        return None
    progress = _published_progress(dataset_id)
    return progress if progress >= 0.2 else None


def test_import_of_200k_rows_killed_twice_midway_completes_exactly_once(start_worker, fast_job_liveness):
    """Killed twice: first only the prefork pool process (the main worker lives on and gets the task back
    at once through reject_on_worker_lost; the claim refuses it while the heartbeat is fresh), then, on the
    second attempt, every worker process. A third worker finishes it."""
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    upload = io.BytesIO(_big_csv())
    upload.name = "orders.csv"
    # Embedding 200k rows is not what this test is about: one chunk per 100k rows keeps the follow-up small.
    # A heartbeat stale after 12 s rather than 4: a new pool process on a loaded machine can take several
    # seconds to receive the redelivered task, and step 1 is about a *fresh* heartbeat refusing it.
    env = {**fast_job_liveness, "LABELF_JOB_STALE_SECONDS": "12", "LABELF_EMBEDDING_CHUNK_SIZE": "100000"}
    first = start_worker(pool="prefork", env=env)
    response = lead.upload("/v2/datasets", {"name": "orders", "file": upload})
    assert response.status_code == 202, response.content
    dataset_id = response.json()["id"]
    job = wait_for(lambda: _job(dataset_id, "import"), timeout=30, message="the import job")

    # 1. Mid-import (it inserts in 5,000-row batches inside one transaction), the pool process dies.
    wait_for(lambda: _mid_import(dataset_id, job.id, attempt=1), timeout=120, interval=0.02,
             message="the first attempt to get a fifth of the way")
    children = first.pool_children()
    assert len(children) == 1, children
    os.kill(children[0], 9)
    assert Record.objects.filter(dataset_id=dataset_id).count() == 0  # its transaction never committed
    # The redelivered task found a live heartbeat and left the job alone: still the first attempt. On a very
    # loaded machine the new pool process can take longer than JOB_STALE_SECONDS to receive it; the heartbeat
    # is stale by then and the claim rightly takes the job over as attempt 2. Either way the job is never run
    # by two attempts at once, which is what the rest of the test holds it to.
    wait_for(lambda: first.log_path.read_text().count("Task labeling.dataset_import[") >= 3, timeout=30,
             message="the task to come back to the surviving worker")
    assert Job.objects.get(pk=job.id).attempts in (1, 2)

    # 2. A worker with beat: the sweeper re-queues the job once its heartbeat is stale; mid-way through
    # that second attempt every worker is killed. (On a loaded machine a heartbeat can miss the test's 4 s and
    # the sweeper takes the job over once more: any attempt after the first will do.)
    second = start_worker(beat=True, env=env)
    wait_for(lambda: _mid_import(dataset_id, job.id, attempt=2, or_later=True), timeout=180, interval=0.02,
             message="a later attempt to get a fifth of the way")
    killed_attempt = Job.objects.get(pk=job.id).attempts
    first.kill()
    second.kill()
    assert Record.objects.filter(dataset_id=dataset_id).count() == 0

    # 3. A new worker finishes it, exactly once.
    start_worker(beat=True, env=env)
    done = wait_for(lambda: _finished(job.id), timeout=180, message="the import to finish after the kills")
    assert done.status == "succeeded", done.error
    assert done.attempts >= killed_attempt + 1  # the killed attempts, then the one that finished
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

    chunk, chunks = 250, 4
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
    assert not list(Path(default_storage.path(directory)).glob(".*"))
    vectors = vectors_load(dataset_id=dataset_id, row_count=chunk * chunks, chunk_size=chunk)
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    # Each chunk holds what embedding its rows afresh gives (the same batches: the int8 model's output
    # depends a little on what shares a batch), up to the float16 rounding of storage.
    texts = list(Record.objects.filter(dataset_id=dataset_id).order_by("row_index").values_list("text", flat=True))
    fresh = np.concatenate([embed_texts(texts[i * chunk:(i + 1) * chunk]) for i in range(chunks)])
    assert np.abs(fresh - vectors).max() < 2e-3


CATEGORIES = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "card_payment_fee_charged",
              "cash_withdrawal_charge", "pending_transfer", "balance_not_updated_after_bank_transfer"]


def test_training_job_killed_midway_writes_one_whole_version_and_serving_never_stops(start_worker, fast_job_liveness,
                                                                                   banking77_dir):
    workspace = make_workspace()
    lead = ApiClient(make_key(workspace, "lead"))
    admin = ApiClient(make_key(workspace, "admin"))
    per_category = 40
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
