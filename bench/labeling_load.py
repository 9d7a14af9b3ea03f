"""Labeling under load: 10 annotators drawing from one model's queue and labeling, as in production.

Setup: a fresh PostgreSQL database (labelf_bench_label on postgres://postgres@127.0.0.1:5432), migrations, a
workspace, 10 annotator users each with an API key, a ready dataset of 100,000 records inserted directly
(synthetic texts, random unit vectors: this measures the queue, not the classifier), a model with 10 labels
and a describe-and-classify version 1. The real queue recompute runs once on the 100k pool (timed and reported);
its `QUEUE_SIZE` (500) rows would run dry in seconds with no worker recomputing them, so the bench then
replaces them with a ranked queue of 20,000 rows inserted directly (drawing is a bounded index scan from
the head either way). Then gunicorn with 2 sync workers
(labelf_studio.settings.production, Redis for rate-limit counters) on loopback.

Load: 10 threads, one per annotator key, each looping for `--seconds`:
  GET /v2/models/{id}/recommendations?limit=1   -> the record leased to this annotator
  POST /v2/models/{id}/labels                   -> a label for it, with duration_ms
Every 20 labels the label call also requests a retrain (absorbed by the one queued train job: no Celery
worker runs here, so it stays queued; this keeps the model-row lock on the measured path).

Figures: server time per request from gunicorn's access log (%(D)s, microseconds, i.e. time inside the
server) p50/p99 per endpoint, client round trips p50/p99, throughput; records handed to two annotators
(must be 0); labels acknowledged vs annotations and labeled records in the database afterwards (lost must be 0).
Target: p99 server time <= 50 ms on both endpoints.

    .venv/bin/python bench/labeling_load.py [--seconds 30] [--annotators 10]

Writes bench/results/labeling_load.json. The machine (2 cores) may be shared: the load average at the start
is recorded with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project and `bench.serving`

from bench.serving import percentile, wait_until_up  # noqa: E402
PYTHON = str(ROOT / ".venv" / "bin" / "python")
DB_NAME = "labelf_bench_label"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/13"
CACHE = ROOT / "bench" / ".cache" / "labeling_load"
RECORDS = 100_000
QUEUE_ROWS = 20_000
LABELS = [f"intent_{i}" for i in range(10)]
CHUNK = 4096


def server_env() -> dict:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.production", "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "SECURE_SSL_REDIRECT": "false", "DATABASE_URL": DATABASE_URL, "DB_CONN_MAX_AGE": "60", "REDIS_URL": REDIS_URL,
        "MEDIA_ROOT": str(CACHE / "media"), "ALLOWED_HOSTS": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1",
    })
    return env


# --- setup (a child process with the production settings) ------------------------------------------------

def setup_data(annotators: int) -> None:
    import django

    django.setup()
    import numpy as np
    from django.core.management import call_command

    from labelf_studio.workspaces.models import Plan
    from labelf_studio.workspaces.services import api_key_create, membership_set, workspace_get_or_create
    from labeling.embeddings import vectors_write_chunk
    from labeling.models import Dataset, DatasetStatus, Record, Recommendation
    from models_app.ml.zero_shot import ZeroShotHead
    from models_app.models import ClassificationModel, ModelType
    from models_app.services import version_create
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    workspace, _ = workspace_get_or_create(name="bench", plan=Plan.ENTERPRISE, rate_limit=10_000_000,
                                           monthly_quota=1_000_000_000)
    keys = []
    for i in range(annotators):
        user = get_user_model().objects.create_user(username=f"annotator{i}", password="bench-password-123")
        membership_set(workspace=workspace, user=user, role="annotator")
        _, secret = api_key_create(workspace=workspace, role="annotator", user=user, name=f"annotator {i}")
        keys.append(secret)
    dataset = Dataset.objects.create(workspace=workspace, name="synthetic 100k", status=DatasetStatus.READY,
                                     record_count=RECORDS, progress=1.0, phase="done", embedded_count=RECORDS,
                                     vector_chunk_size=CHUNK)
    for start in range(0, RECORDS, 10_000):
        Record.objects.bulk_create([Record(dataset=dataset, row_index=i, text=f"synthetic customer message number {i}",
                                           metadata={"channel": "email"}) for i in range(start, min(RECORDS, start + 10_000))],
                                   batch_size=5_000)
    rng = np.random.default_rng(0)
    for index, start in enumerate(range(0, RECORDS, CHUNK)):
        block = rng.normal(size=(min(CHUNK, RECORDS - start), 384)).astype(np.float32)
        vectors_write_chunk(dataset_id=dataset.id, chunk_index=index, vectors=block / np.linalg.norm(block, axis=1, keepdims=True))
    model = ClassificationModel.objects.create(workspace=workspace, dataset=dataset, name="bench intents", labels=LABELS,
                                               label_descriptions={label: "" for label in LABELS})
    label_vectors = rng.normal(size=(len(LABELS), 384)).astype(np.float32)
    head = ZeroShotHead(labels=LABELS, label_vectors=label_vectors / np.linalg.norm(label_vectors, axis=1, keepdims=True),
                        temperature=0.05, details={})
    version = version_create(model=model, head=head, type=ModelType.DESCRIBE_AND_CLASSIFY, training_examples=0)
    # The real recompute on the 100k pool (ranks with version 1, writes QUEUE_SIZE rows), timed for the report;
    # then the longer synthetic queue replaces it for the load.
    from labeling.queue import queue_recompute

    started = time.perf_counter()
    stats = queue_recompute(model=model, version=version)
    recompute_seconds = time.perf_counter() - started
    Recommendation.objects.filter(model=model).delete()
    record_ids = list(Record.objects.filter(dataset=dataset).order_by("?").values_list("id", flat=True)[:QUEUE_ROWS])
    reasons = ["uncertain"] * 6 + ["diverse"] * 2 + ["rare-class", "evaluation"]
    Recommendation.objects.bulk_create([
        Recommendation(model=model, record_id=record_id, position=i + 1, score=1.0 - i / QUEUE_ROWS,
                       reason=reasons[i % len(reasons)], predicted_label=LABELS[i % len(LABELS)], confidence=0.4,
                       version=version.number)
        for i, record_id in enumerate(record_ids)], batch_size=5_000)
    print(json.dumps({"keys": keys, "model_id": model.id, "dataset_id": dataset.id,
                      "queue_recompute": {"pool": stats.pool_size, "written": stats.written,
                                          "seconds": round(recompute_seconds, 2)}}))


def count_results(model_id: int) -> None:
    import django

    django.setup()
    from labeling.models import Annotation, Record

    from models_app.models import ClassificationModel

    model = ClassificationModel.objects.get(pk=model_id)
    print(json.dumps({
        "annotations": Annotation.objects.filter(model=model).count(),
        "current_annotations": Annotation.objects.filter(model=model, is_current=True).count(),
        "labeled_records": Record.objects.filter(dataset_id=model.dataset_id, label__isnull=False).count(),
    }))


def child(flag: str, *extra: str) -> dict:
    out = subprocess.run([PYTHON, __file__, flag, *extra], env=server_env(), cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare_database(annotators: int) -> dict:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {DB_NAME}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {DB_NAME}"], check=True)
    subprocess.run(["redis-cli", "-n", REDIS_URL.rsplit("/", 1)[1], "FLUSHDB"], check=True, capture_output=True)
    return child("--setup", "--annotators", str(annotators))


# --- the load -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, access_log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "labelf_studio.wsgi", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "--timeout", "120", "--access-logfile", str(access_log),
         "--access-logformat", "%(m)s %(U)s %(s)s %(D)s"],
        env=server_env(), cwd=ROOT, start_new_session=True)


def run_load(base: str, keys: list[str], model_id: int, seconds: float) -> dict:
    import requests

    handed: dict[int, set[int]] = defaultdict(set)  # record id -> annotators it was handed to
    acknowledged = [0] * len(keys)
    client_ms: dict[str, list[float]] = {"recommendations": [], "labels": []}
    errors: list[str] = []
    empty_draws = [0] * len(keys)
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def annotator(slot: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {keys[slot]}"
        rng = random.Random(slot)
        local = {"recommendations": [], "labels": []}
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = session.get(f"{base}/v2/models/{model_id}/recommendations", params={"limit": 1}, timeout=30)
                local["recommendations"].append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"recommendations {response.status_code}: {response.text[:200]}")
                data = response.json()["data"]
                if not data:
                    empty_draws[slot] += 1
                    continue
                record_id = data[0]["record"]["id"]
                with lock:
                    handed[record_id].add(slot)
                body = {"labels": [{"record_id": record_id, "label": rng.choice(LABELS), "duration_ms": rng.randint(800, 9000)}]}
                start = time.perf_counter()
                response = session.post(f"{base}/v2/models/{model_id}/labels", json=body, timeout=30)
                local["labels"].append((time.perf_counter() - start) * 1000)
                if response.status_code != 200 or response.json().get("accepted") != 1:
                    raise RuntimeError(f"labels {response.status_code}: {response.text[:200]}")
                acknowledged[slot] += 1
        except Exception as exc:  # recorded, and the run reports it
            errors.append(repr(exc))
        with lock:
            for name, values in local.items():
                client_ms[name].extend(values)

    started = time.perf_counter()
    threads = [threading.Thread(target=annotator, args=(slot,)) for slot in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "handed": handed, "acknowledged": sum(acknowledged), "per_annotator": acknowledged,
            "client_ms": client_ms, "errors": errors, "empty_draws": sum(empty_draws)}


def server_times(access_log: Path, model_id: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"recommendations": [], "labels": []}
    for line in access_log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[2] != "200":
            continue
        method, path, _, micros = parts
        if method == "GET" and path == f"/v2/models/{model_id}/recommendations":
            times["recommendations"].append(int(micros) / 1000)
        elif method == "POST" and path == f"/v2/models/{model_id}/labels":
            times["labels"].append(int(micros) / 1000)
    return times


def summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": round(statistics.median(values), 2), "p99_ms": round(percentile(values, 99), 2),
            "mean_ms": round(statistics.mean(values), 2), "max_ms": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--annotators", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup-seconds", type=float, default=3)
    args = parser.parse_args()
    if args.setup:
        setup_data(args.annotators)
        return
    if args.count is not None:
        count_results(args.count)
        return

    load_at_start = os.getloadavg()
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"setting up {RECORDS:,} records, {args.annotators} annotators and a {QUEUE_ROWS:,}-row queue...", flush=True)
    setup = prepare_database(args.annotators)
    port = free_port()
    access_log = CACHE / "access.log"
    access_log.unlink(missing_ok=True)
    server = start_server(port, access_log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, setup["keys"][0], setup["model_id"])
        print(f"warming up for {args.warmup_seconds:.0f} s...", flush=True)
        warm = run_load(base, setup["keys"], setup["model_id"], args.warmup_seconds)
        warm_lines = len(access_log.read_text().splitlines())
        print(f"measuring {args.annotators} annotators for {args.seconds:.0f} s...", flush=True)
        load = run_load(base, setup["keys"], setup["model_id"], args.seconds)
        time.sleep(1.0)  # the access log is written after each response
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lines = access_log.read_text().splitlines()[warm_lines:]
    measured_log = CACHE / "access.measured.log"
    measured_log.write_text("\n".join(lines) + "\n")
    served = server_times(measured_log, setup["model_id"])
    counted = child("--count", str(setup["model_id"]))

    handed = {**warm["handed"]}
    for record_id, slots in load["handed"].items():
        handed.setdefault(record_id, set()).update(slots)
    duplicates = sum(1 for slots in handed.values() if len(slots) > 1)
    acknowledged = warm["acknowledged"] + load["acknowledged"]
    results = {
        "what": f"{args.annotators} concurrent annotators, fetch-next (limit=1) then submit-label, over HTTP",
        "setup": {"records": RECORDS, "queue_rows": QUEUE_ROWS, "labels": len(LABELS), "annotators": args.annotators,
                  "server": "gunicorn, 2 sync workers, labelf_studio.settings.production, PostgreSQL 15, Redis",
                  "seconds": args.seconds, "warmup_seconds": args.warmup_seconds},
        "server_time": {"recommendations": summary(served["recommendations"]), "labels": summary(served["labels"])},
        "client_round_trip": {"recommendations": summary(load["client_ms"]["recommendations"]),
                              "labels": summary(load["client_ms"]["labels"])},
        "queue_recompute_100k_pool": setup["queue_recompute"],
        "labels_per_second": round(load["acknowledged"] / load["elapsed"], 1),
        "records_handed_to_two_annotators": duplicates,
        "labels_acknowledged": acknowledged,
        "annotations_in_database": counted["annotations"],
        "labeled_records_in_database": counted["labeled_records"],
        "labels_lost": acknowledged - counted["annotations"],
        "empty_draws": warm["empty_draws"] + load["empty_draws"],
        "errors": warm["errors"] + load["errors"],
        "target": {"p99_server_ms": 50},
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
                    "python": platform.python_version()},
    }
    results["meets_target"] = (max(results["server_time"]["recommendations"].get("p99_ms", 1e9),
                                   results["server_time"]["labels"].get("p99_ms", 1e9)) <= 50
                               and duplicates == 0 and results["labels_lost"] == 0 and not results["errors"])
    out = ROOT / "bench" / "results" / "labeling_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
