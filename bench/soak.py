"""Soak (issue 7): the production processes under paced mixed traffic for a while; does anything fail, slow down or grow?

Setup: a fresh PostgreSQL database (labelf_soak), Redis db 14, gunicorn with the production settings file
(labelf_studio/gunicorn.conf.py: 2 gthread workers x 1 thread, preload, embedder warm-up), a Celery worker (prefork,
2 processes) and beat, all with labelf_studio.settings.production, as docker-compose runs them. The Banking77 train
set (10,003 texts, 77 categories, each record's category kept as metadata) is imported and embedded through the API
by the worker; a describe-and-classify model on it is deployed, and 100 records are labeled and trained on once (so
GET /v2/jobs/{id} has a job from the start).

Load, over HTTP, `--clients` (16) threads, each with its own API key (an annotator user of its own) on a workspace of
plan `enterprise` with a rate limit of 10,000,000 requests/min (so 429s should not appear), paced to `--rate`
(50) requests/s in total: each client owns every clients-th slot of the schedule, sleeps until its slot is due and,
when the server falls behind, sends back to back to catch up (slots more than 2 s overdue are dropped and counted).
The achieved rate is what the figures report. Each slot is one request drawn from the mix:
  - 40% inference: POST /v2/models/{id}/inference with 1-8 Banking77 texts;
  - 15% recommendations: GET /v2/models/{id}/recommendations?limit=1 (the record is kept in hand);
  - 15% labels: POST /v2/models/{id}/labels, the record in hand with its Banking77 category (with none in hand: a
    relabel of one the client labeled before, same label); every 20 new labels the worker retrains the model;
  - 30% lists, evenly: GET /v2/models, /v2/datasets, /v2/datasets/{id}/records?limit=20&offset=<random>,
    /v2/models/{id}/versions, /v2/jobs/{id} (a random known job).
Background realism, on by default (not in the issue's list; not counted in the rate): every `--import-every` (120) s
a 300-row CSV dataset is uploaded and imported + embedded by the worker, every `--train-every` (180) s a fine-tuned
training job is requested; 0 turns either off.

The first `--warmup` (60) s run the same load but are left out of the figures: the rate and latency are measured over
the `--minutes` (10) after it, and each process's RSS "start" is read when the warm-up ends. Errors count the whole
run, warm-up included.

Figures: achieved requests/s; errors: every answer outside 2xx other than 429 (client exceptions included) plus every
failed job (target 0), and 429s apart; latency per endpoint over the measured window (p50, p95, p99 of 2xx calls) and
per minute, with the drift between the first and the last whole minute; resident memory (RSS) of each process
(gunicorn master and each worker, celery main and each pool process, beat) at the start and end of the measured
window, growth % and the <= 20% target per process, plus the per-service sums every 10 s; jobs by kind and status.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 50] [--clients 16]

Writes bench/results/soak.json (with `targets`) and prints a summary table. The machine (2 cores) may be shared:
its load average is recorded.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import percentile  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
DB_NAME = "labelf_soak"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"
CACHE = ROOT / "bench" / ".cache" / "soak"
BANKING77 = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
SAMPLE_SECONDS = 10


def server_env() -> dict:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.production", "SECRET_KEY": "soak-only-secret-key-" + "x" * 40,
        "SECURE_SSL_REDIRECT": "false", "DATABASE_URL": DATABASE_URL, "DB_CONN_MAX_AGE": "60", "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL, "MEDIA_ROOT": str(CACHE / "media"), "LABELF_VAR_DIR": str(CACHE / "var"),
        "LABELF_MODEL_CACHE": str(ROOT / "var" / "models"), "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1",
    })
    return env


def setup_workspace(clients: int) -> None:
    """In a child process with the production settings: migrate, one workspace, keys."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from labelf_studio.workspaces.models import Plan
    from labelf_studio.workspaces.services import api_key_create, membership_set, workspace_get_or_create

    call_command("migrate", verbosity=0)
    workspace, _ = workspace_get_or_create(name="soak", plan=Plan.ENTERPRISE, rate_limit=10_000_000,
                                           monthly_quota=1_000_000_000)
    keys = {}
    for role in ("lead", "admin"):
        user = get_user_model().objects.create_user(username=f"soak-{role}", password="soak-password-123")
        membership_set(workspace=workspace, user=user, role=role)
        keys[role] = api_key_create(workspace=workspace, role=role, user=user, name=role)[1]
    keys["clients"] = []
    for i in range(clients):
        user = get_user_model().objects.create_user(username=f"soak-client{i}", password="soak-password-123")
        membership_set(workspace=workspace, user=user, role="annotator")
        keys["clients"].append(api_key_create(workspace=workspace, role="annotator", user=user, name=f"client{i}")[1])
    print(json.dumps(keys))


def count_jobs() -> None:
    import django

    django.setup()
    from django.db.models import Count

    from labeling.models import Job

    rows = Job.objects.values("kind", "status").annotate(n=Count("id")).order_by("kind", "status")
    failed = list(Job.objects.filter(status="failed").values_list("kind", "error")[:20])
    print(json.dumps({"by_kind_status": [dict(r) for r in rows], "failed": failed,
                      "unfinished": Job.objects.filter(status__in=["queued", "running"]).count()}))


def child(flag: str, *extra: str) -> dict:
    out = subprocess.run([PYTHON, __file__, flag, *extra], env=server_env(), cwd=ROOT, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- processes ----------------------------------------------------------------------------------------------

def start(command: list[str], log: Path, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, env={**server_env(), **(extra_env or {})}, cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    found = [pid]
    for parent in found:
        path = Path(f"/proc/{parent}/task/{parent}/children")
        if path.exists():
            found.extend(int(p) for p in path.read_text().split())
    return found


def rss_per_process(pid: int) -> dict[int, float]:
    """MB of resident memory of the process and each of its descendants."""
    found = {}
    for each in descendants(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[each] = round(int(line.split()[1]) / 1024, 1)
        except FileNotFoundError:
            pass
    return found


def rss_mb(pid: int) -> float:
    return round(sum(rss_per_process(pid).values()), 1)


# --- load -------------------------------------------------------------------------------------------------------

MIX = {"inference": 40, "recommendations": 15, "labels": 15, "list": 30}
LISTS = ["list_models", "list_datasets", "list_records", "list_versions", "get_job"]


class Calls:
    """Every HTTP call (time, endpoint, status, ms) and the body of every non-2xx answer, from every load thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, int, float]] = []
        self.errors: list[tuple[float, str, int, object]] = []

    def add(self, started: float, endpoint: str, status: int, ms: float, body=None) -> None:
        with self.lock:
            self.calls.append((started, endpoint, status, ms))
            if not 200 <= status < 300:
                self.errors.append((started, endpoint, status, body))


def timed(calls: Calls, session, method: str, endpoint: str, url: str, **kwargs):
    import requests

    started = time.time()
    try:
        response = session.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as exc:  # status 0: counted as a non-429 error
        calls.add(started, endpoint, 0, (time.time() - started) * 1000, repr(exc))
        return None
    calls.add(started, endpoint, response.status_code, (time.time() - started) * 1000,
              None if response.ok else response.text[:300])
    return response if response.ok else None


class Shared:
    """What the clients pick list targets from: the datasets' sizes and the job ids seen so far."""

    def __init__(self, dataset_id: int, records: int, job_ids: list[int]):
        self.lock = threading.Lock()
        self.dataset_id = dataset_id
        self.records = records
        self.job_ids = list(job_ids)


def mixed_client(calls: Calls, shared: Shared, base: str, key: str, model_id: int, texts: list[str], stop_at: float,
                 interval: float, phase: float, seed: int, stats: dict):
    """One client with its own key (its own annotator user): every `interval` s one request drawn from MIX.

    Paced open-loop-ish: slot k is due at start + phase + k * interval; the client sleeps until the slot is due
    and, when the server is slower than the schedule, sends at once (back to back) to catch up, dropping slots
    more than 2 s overdue (so a stall never ends in a burst). `labels` labels a record this client drew
    through `recommendations` with its Banking77 category; with none in hand it relabels one it labeled before
    (same label: no new training example), or else draws one (counted as a recommendations call).
    """
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    in_hand: list[dict] = []
    labeled: list[dict] = []
    due = time.time() + phase
    sent = dropped = late = 0

    def recommend():
        response = timed(calls, session, "GET", "recommendations", f"{base}/v2/models/{model_id}/recommendations",
                         params={"limit": 1})
        if response is not None:
            in_hand.extend(item["record"] for item in response.json()["data"])

    while True:
        now = time.time()
        if due < now - 2:
            missed = int((now - 2 - due) // interval) + 1
            dropped += missed
            due += missed * interval
        if due >= stop_at:
            break
        if due > now:
            time.sleep(due - now)
        elif now - due > interval:
            late += 1
        due += interval
        sent += 1
        kind = rng.choices(kinds, weights)[0]
        if kind == "inference":
            timed(calls, session, "POST", "inference", f"{base}/v2/models/{model_id}/inference",
                  json={"texts": rng.sample(texts, rng.randint(1, 8))})
        elif kind == "recommendations":
            recommend()
        elif kind == "labels":
            if in_hand:
                record = in_hand.pop(0)
            elif labeled:
                record = rng.choice(labeled)
            else:
                recommend()
                continue
            response = timed(calls, session, "POST", "labels", f"{base}/v2/models/{model_id}/labels",
                             json={"labels": [{"record_id": record["id"], "label": record["metadata"]["gold"],
                                               "duration_ms": rng.randint(500, 5000)}]})
            if response is not None and record not in labeled:
                labeled.append(record)
        else:
            which = rng.choice(LISTS)
            with shared.lock:
                dataset_id, records, job_id = shared.dataset_id, shared.records, rng.choice(shared.job_ids)
            if which == "list_models":
                timed(calls, session, "GET", which, f"{base}/v2/models")
            elif which == "list_datasets":
                timed(calls, session, "GET", which, f"{base}/v2/datasets")
            elif which == "list_records":
                timed(calls, session, "GET", which, f"{base}/v2/datasets/{dataset_id}/records",
                      params={"limit": 20, "offset": rng.randrange(0, max(1, records - 20))})
            elif which == "list_versions":
                timed(calls, session, "GET", which, f"{base}/v2/models/{model_id}/versions")
            else:
                timed(calls, session, "GET", which, f"{base}/v2/jobs/{job_id}")
    with calls.lock:
        stats["slots_sent"] = stats.get("slots_sent", 0) + sent
        stats["slots_dropped"] = stats.get("slots_dropped", 0) + dropped
        stats["slots_late"] = stats.get("slots_late", 0) + late


def importer(calls: Calls, base: str, key: str, texts: list[str], stop_at: float, every: float, imported: list):
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    rng = random.Random(7)
    round_ = 0
    while time.time() + every < stop_at:
        time.sleep(every)
        round_ += 1
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["text", "round"])
        for text in rng.sample(texts, 300):
            writer.writerow([f"{text} (batch {round_})", round_])
        response = timed(calls, session, "POST", "upload", f"{base}/v2/datasets",
                         files={"file": (f"batch{round_}.csv", out.getvalue().encode())}, data={"name": f"batch {round_}"})
        if response is not None:
            imported.append(response.json()["id"])


def trainer(calls: Calls, shared: Shared, base: str, key: str, model_id: int, stop_at: float, every: float,
            refused: list):
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    while time.time() + every < stop_at:
        time.sleep(every)
        started = time.time()
        try:
            response = session.post(f"{base}/v2/models/{model_id}/train", json={"type": "fine-tuned"}, timeout=60)
        except requests.RequestException as exc:
            calls.add(started, "train", 0, (time.time() - started) * 1000, repr(exc))
            continue
        if response.status_code == 400:
            # Fine-tuning needs 2 labels per class (early in the run): an expected refusal, listed apart.
            refused.append(response.text[:200])
            continue
        calls.add(started, "train", response.status_code, (time.time() - started) * 1000,
                  None if response.ok else response.text[:300])
        if response.ok:
            with shared.lock:
                shared.job_ids.append(response.json()["id"])


def processes_of(pids: dict[str, int]) -> dict[str, dict]:
    """Each service's processes by role: {"web master 123": MB, "web worker 124": MB, ...}."""
    roles = {"web": ("web master", "web worker"), "worker": ("celery main", "celery pool"), "beat": ("beat", "beat child")}
    found = {}
    for service, pid in pids.items():
        for each, mb in rss_per_process(pid).items():
            found[f"{roles[service][0] if each == pid else roles[service][1]} {each}"] = mb
    return found


def sample_memory(pids: dict[str, int], stop_at: float, samples: list):
    while time.time() < stop_at:
        per_process = processes_of(pids)
        samples.append({"t": round(time.time(), 1), **{name: rss_mb(pid) for name, pid in pids.items()},
                        "per_process": per_process})
        time.sleep(SAMPLE_SECONDS)


def pct(values: list[float], q: float):
    return round(percentile(values, q), 1) if values else None


def latency(values: list[float]) -> dict:
    return {"count": len(values), "p50_ms": pct(values, 50), "p95_ms": pct(values, 95), "p99_ms": pct(values, 99),
            "max_ms": round(max(values), 1) if values else None}


def per_minute(calls: list[tuple[float, str, int, float]], start: float) -> dict:
    table: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for started, endpoint, status, ms in calls:
        if 200 <= status < 300:
            table[endpoint][int((started - start) // 60)].append(ms)
    return {endpoint: {minute: latency(v) for minute, v in sorted(minutes.items())} for endpoint, minutes in table.items()}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count-jobs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, default=10, help="measured minutes, after the warm-up")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of the same load before the measured window")
    parser.add_argument("--rate", type=float, default=50, help="target total requests/s")
    parser.add_argument("--clients", type=int, default=16, help="client threads, each with its own key")
    parser.add_argument("--import-every", type=float, default=120, help="seconds; 0: no imports during the run")
    parser.add_argument("--train-every", type=float, default=180, help="seconds; 0: no fine-tune requests")
    parser.add_argument("--drain-timeout", type=float, default=180, help="seconds to wait for the last jobs")
    args = parser.parse_args()
    if args.setup:
        setup_workspace(args.clients)
        return
    if args.count_jobs:
        count_jobs()
        return

    import requests

    load_at_start = os.getloadavg()
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("web.log", "worker.log", "beat.log"):
        (CACHE / name).unlink(missing_ok=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {DB_NAME}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {DB_NAME}"], check=True)
    subprocess.run(["redis-cli", "-n", REDIS_URL.rsplit("/", 1)[1], "FLUSHDB"], check=True, capture_output=True)
    keys = child("--setup", "--clients", str(args.clients))

    from tests.system.conftest import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = {
        # The production settings file (workers, gthread, keep-alive, preload, embedder warm-up); only the bind differs.
        "web": start([PYTHON, "-m", "gunicorn", "-c", "labelf_studio/gunicorn.conf.py", "labelf_studio.wsgi:application"],
                     CACHE / "web.log", {"GUNICORN_BIND": f"127.0.0.1:{port}"}),
        "worker": start([PYTHON, "-m", "celery", "-A", "labelf_studio", "worker", "--concurrency", "2",
                         "--loglevel", "INFO"], CACHE / "worker.log"),
        "beat": start([PYTHON, "-m", "celery", "-A", "labelf_studio", "beat", "--loglevel", "INFO",
                       "--schedule", str(CACHE / "celerybeat-schedule")], CACHE / "beat.log"),
    }
    pids = {name: process.pid for name, process in processes.items()}
    try:
        lead = requests.Session()
        lead.headers["Authorization"] = f"Bearer {keys['lead']}"
        wait_for(lambda: _ok(lead, f"{base}/v2/datasets"), 180, "gunicorn")
        texts, categories = [], []
        with open(BANKING77 / "train.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                texts.append(row["text"])
                categories.append(row["category"])
        labels = sorted(set(categories))
        records = [{"text": t, "metadata": {"gold": c}} for t, c in zip(texts, categories)]
        dataset = lead.post(f"{base}/v2/datasets", json={"name": "banking77 soak", "records": records}, timeout=120).json()
        wait_for(lambda: lead.get(f"{base}/v2/datasets/{dataset['id']}", timeout=30).json()["status"] == "ready", 600,
                 "the base dataset to be embedded")
        model = lead.post(f"{base}/v2/models", timeout=60, json={
            "name": "soak intents", "dataset_id": dataset["id"], "type": "describe-and-classify",
            "labels": [{"name": c, "description": c.replace("_", " ")} for c in labels]}).json()
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {keys['admin']}"
        admin.post(f"{base}/v2/models/{model['id']}/deploy", json={}, timeout=60).raise_for_status()
        # A first training job, so GET /v2/jobs/{id} has a job to read from the start (the fine-tune requests add theirs).
        first = lead.get(f"{base}/v2/datasets/{dataset['id']}/records", params={"limit": 100}, timeout=60).json()["data"]
        lead.post(f"{base}/v2/models/{model['id']}/labels", timeout=60, json={
            "labels": [{"record_id": r["id"], "label": r["metadata"]["gold"]} for r in first]}).raise_for_status()
        job = lead.post(f"{base}/v2/models/{model['id']}/train", json={"type": "active-learning"}, timeout=60)
        job.raise_for_status()
        shared = Shared(dataset["id"], len(records), [job.json()["id"]])

        calls = Calls()
        memory: list[dict] = []
        imported: list[int] = []
        refused: list[str] = []
        client_stats: dict = {}
        load_from = time.time()
        start_at = load_from + args.warmup  # the measured window starts after the warm-up
        stop_at = start_at + args.minutes * 60
        print(f"load from {time.strftime('%H:%M:%S')}: {args.warmup:g} s warm-up, then {args.minutes:g} measured minutes "
              f"at {args.rate:g} requests/s over {args.clients} clients", flush=True)
        interval = args.clients / args.rate
        threads = [threading.Thread(target=mixed_client, args=(
            calls, shared, base, keys["clients"][i], model["id"], texts, stop_at, interval, i * interval / args.clients,
            1000 + i, client_stats)) for i in range(args.clients)]
        threads.append(threading.Thread(target=sample_memory, args=(pids, stop_at, memory)))
        if args.import_every:
            threads.append(threading.Thread(target=importer, args=(calls, base, keys["lead"], texts, stop_at,
                                                                    args.import_every, imported)))
        if args.train_every:
            threads.append(threading.Thread(target=trainer, args=(calls, shared, base, keys["lead"], model["id"], stop_at,
                                                                   args.train_every, refused)))
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, start_at - time.time()))
        rss_start = processes_of(pids)
        rss_start_services = {name: rss_mb(pid) for name, pid in pids.items()}
        load_at_measure = os.getloadavg()
        for thread in threads:
            thread.join()
        ended_at = time.time()
        rss_end = processes_of(pids)
        rss_end_services = {name: rss_mb(pid) for name, pid in pids.items()}
        load_at_stop = os.getloadavg()
        print("load stopped; waiting for the last jobs...", flush=True)
        try:
            wait_for(lambda: child("--count-jobs")["unfinished"] == 0, args.drain_timeout, "the last jobs")
        except RuntimeError:
            pass  # reported as `unfinished`
        jobs = child("--count-jobs")
        rss_after_drain = processes_of(pids)
    finally:
        for process in processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    measured = [c for c in calls.calls if start_at <= c[0] < stop_at]
    measured_seconds = min(ended_at, stop_at) - start_at
    by_endpoint: dict[str, list[float]] = defaultdict(list)
    for _, endpoint, status, ms in measured:
        if 200 <= status < 300:
            by_endpoint[endpoint].append(ms)
    latency_whole = {endpoint: latency(v) for endpoint, v in sorted(by_endpoint.items())}

    minutes = per_minute(measured, start_at)
    last_minute = int(measured_seconds // 60) - 1  # the last whole measured minute
    drift = {}
    for endpoint, table in minutes.items():
        first, last = table.get(0), table.get(last_minute)
        if first and last and last_minute > 0:
            drift[endpoint] = {"first_minute": first, "last_minute": last,
                               **{f"{q}_ratio": round(last[f"{q}_ms"] / first[f"{q}_ms"], 2)
                                  for q in ("p50", "p95", "p99") if first[f"{q}_ms"]}}

    errors_all = list(calls.errors)
    non_429 = [e for e in errors_all if e[2] != 429]
    too_many = [e for e in errors_all if e[2] == 429]
    by_status: dict[str, int] = defaultdict(int)
    for _, endpoint, status, _ in non_429:
        by_status[f"{endpoint} {status}"] += 1
    failed_jobs = [{"kind": kind, "error": error} for kind, error in jobs["failed"]]
    failed_job_count = sum(r["n"] for r in jobs["by_kind_status"] if r["status"] == "failed")
    non_429_total = len(non_429) + failed_job_count

    # Per process: the same pid at the start of the measured window and at the end of the load.
    per_process = {}
    for name in sorted(set(rss_start) | set(rss_end)):
        start_mb, end_mb = rss_start.get(name), rss_end.get(name)
        row = {"start_mb": start_mb, "end_mb": end_mb, "after_drain_mb": rss_after_drain.get(name),
               "max_mb": max((m["per_process"].get(name, 0) for m in memory if start_at <= m["t"]), default=None)}
        if start_mb and end_mb:
            row["growth_pct"] = round((end_mb - start_mb) / start_mb * 100, 1)
            row["within_20pct"] = row["growth_pct"] <= 20
        else:
            row["note"] = "started during the run" if start_mb is None else "gone before the end (replaced)"
        per_process[name] = row
    services = {name: {"start_mb": rss_start_services[name], "end_mb": rss_end_services[name],
                       "growth_pct": round((rss_end_services[name] - rss_start_services[name]) / rss_start_services[name] * 100, 1),
                       "max_mb": max(m[name] for m in memory if start_at <= m["t"])} for name in pids}
    achieved = len(measured) / measured_seconds if measured_seconds > 0 else 0.0
    mix_counts: dict[str, int] = defaultdict(int)
    for _, endpoint, _, _ in measured:
        mix_counts["list" if endpoint in LISTS else endpoint] += 1
    results = {
        "what": "issue 7 soak: production processes (gunicorn via labelf_studio/gunicorn.conf.py: 2 gthread workers x 1 "
                "thread; celery prefork 2 + beat; PostgreSQL; Redis) under paced mixed traffic",
        "setup": {"measured_minutes": round(measured_seconds / 60, 2), "requested_minutes": args.minutes,
                  "warmup_s": args.warmup, "warmup_note": "the warm-up runs the same load; its calls are left out of "
                  "the rate and latency figures, and RSS 'start' is taken when it ends (errors count it too)",
                  "target_rate_per_s": args.rate, "clients": args.clients, "mix_pct": MIX,
                  "list_endpoints": ["GET /v2/models", "GET /v2/datasets",
                                     "GET /v2/datasets/{id}/records?limit=20&offset=random",
                                     "GET /v2/models/{id}/versions", "GET /v2/jobs/{id}"],
                  "import_every_s": args.import_every or None, "train_every_s": args.train_every or None,
                  "keys": "one annotator key (own user) per client, workspace plan enterprise, rate limit 10,000,000/min",
                  "base_dataset": f"Banking77 train, {len(texts)} texts of {len(labels)} categories",
                  "model": "describe-and-classify, deployed; retrained (active learning) by the worker every 20 new labels",
                  "database": "PostgreSQL", "broker": "Redis"},
        "rate": {"target_per_s": args.rate, "achieved_per_s": round(achieved, 1), "requests_measured": len(measured),
                 "mix_measured_pct": {k: round(v / max(1, len(measured)) * 100, 1) for k, v in sorted(mix_counts.items())},
                 "client_slots": client_stats},
        "requests": {endpoint: v["count"] for endpoint, v in latency_whole.items()},
        "labels_accepted": sum(1 for c in calls.calls if c[1] == "labels" and 200 <= c[2] < 300),
        "datasets_imported_during_run": len(imported),
        "fine_tune_requests_refused_400": len(refused),
        "jobs": jobs["by_kind_status"], "jobs_unfinished_after_drain": jobs["unfinished"],
        "errors": {"non_429": non_429_total, "non_429_http_or_connection": len(non_429), "failed_jobs": failed_job_count,
                   "429": len(too_many), "by_endpoint_status": dict(by_status),
                   "in_warmup": sum(1 for e in non_429 if e[0] < start_at),
                   "first": [[e[1], e[2], str(e[3])[:300]] for e in non_429[:10]] + failed_jobs[:10]},
        "latency_ms": latency_whole,
        "latency_note": "successful (2xx) calls of the measured window, per endpoint",
        "latency_drift": drift,
        "rss_mb_per_process": per_process,
        "rss_mb_per_service": services,
        "targets": {
            "rate_sustained": achieved >= 0.95 * args.rate,
            "zero_non_429_errors": non_429_total == 0,
            "no_process_grows_over_20pct": all(r.get("within_20pct", False) for r in per_process.values()),
            "per_process_within_20pct": {name: r.get("within_20pct") for name, r in per_process.items()},
        },
        "latency_per_minute": minutes,
        "memory_samples": memory,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
                    "load_average_at_measure_start": [round(x, 2) for x in load_at_measure],
                    "load_average_at_stop": [round(x, 2) for x in load_at_stop],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                    "note": "2 cores shared with other work during the run; the load generator runs on them too"},
    }
    out = ROOT / "bench" / "results" / "soak.json"
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\nrate: {achieved:.1f} requests/s achieved of {args.rate:g} target over {measured_seconds / 60:.1f} measured "
          f"minutes ({len(measured)} requests); load average {load_at_measure[0]:.1f} -> {load_at_stop[0]:.1f}")
    print(f"errors: {non_429_total} non-429 ({len(non_429)} HTTP/connection, {failed_job_count} failed jobs), "
          f"{len(too_many)} 429")
    print(f"\n{'endpoint':<16}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p99 drift':>11}")
    for endpoint, row in latency_whole.items():
        ratio = drift.get(endpoint, {}).get("p99_ratio")
        print(f"{endpoint:<16}{row['count']:>7}{row['p50_ms']:>9}{row['p95_ms']:>9}{row['p99_ms']:>9}"
              f"{'' if ratio is None else f'x{ratio}':>11}")
    print(f"\n{'process':<24}{'start MB':>10}{'end MB':>10}{'growth':>9}  <=20%")
    for name, row in per_process.items():
        growth = row.get("growth_pct")
        print(f"{name:<24}{str(row['start_mb']):>10}{str(row['end_mb']):>10}"
              f"{'' if growth is None else f'{growth:+.1f}%':>9}  {row.get('within_20pct', row.get('note'))}")
    print(f"\ntargets: {json.dumps({k: v for k, v in results['targets'].items() if k != 'per_process_within_20pct'})}")


def _ok(session, url: str) -> bool:
    import requests

    try:
        return session.get(url, timeout=10).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
