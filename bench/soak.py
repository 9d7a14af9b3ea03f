"""Soak: the production processes under steady mixed load for a while; does anything grow or slow down?

Setup: a fresh PostgreSQL database (labelf_soak), Redis db 14, gunicorn (2 sync workers), a Celery worker
(prefork, 2 processes) and beat, all with labelf_studio.settings.production, as docker-compose runs them.
A Banking77 dataset (20 categories, up to 150 texts each: 2,883) is imported and embedded through the API by the worker;
a describe-and-classify model on it is deployed.

Load, all at once for `--minutes` (default 10), over HTTP:
  - `--annotators` (4) annotators: draw the next record, label it with its Banking77 category, pause 1 s
    (a steady rate that does not run out of records in 10 minutes);
    every 20 labels retrains the model in the worker (the automatic loop);
  - `--inference-clients` (2) clients: classify 1-8 texts on the deployed model, pause 0.2 s;
  - every `--import-every` (60) s a new 300-row dataset is uploaded and imported + embedded by the worker;
  - every `--train-every` (120) s a fine-tuned training job is requested.

Figures: resident memory (RSS, summed over each service's processes) of web (gunicorn master + workers)
and worker (celery main + pool processes) every 10 s, and its growth from the end of the first minute to
the end; errors (any answer other than 2xx, any failed job, any client exception); latency per endpoint
per minute (p50, p95) and the drift between the first and the last minute; jobs done.

    .venv/bin/python bench/soak.py [--minutes 10]

Writes bench/results/soak.json. The machine (2 cores) may be shared: its load average is recorded.
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
from tests.system.http_load import annotate  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
DB_NAME = "labelf_soak"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"
CACHE = ROOT / "bench" / ".cache" / "soak"
BANKING77 = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
CATEGORIES = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "card_payment_fee_charged",
              "cash_withdrawal_charge", "pending_transfer", "balance_not_updated_after_bank_transfer",
              "card_not_working", "transfer_not_received_by_recipient", "declined_card_payment", "card_linking",
              "pin_blocked", "wrong_amount_of_cash_received", "exchange_charge", "top_up_reverted", "cancel_transfer",
              "direct_debit_payment_not_recognised", "age_limit", "change_pin"]
PER_CATEGORY = 150
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


def setup_workspace(annotators: int) -> None:
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
    keys["annotators"] = []
    for i in range(annotators):
        user = get_user_model().objects.create_user(username=f"soak-annotator{i}", password="soak-password-123")
        membership_set(workspace=workspace, user=user, role="annotator")
        keys["annotators"].append(api_key_create(workspace=workspace, role="annotator", user=user, name=f"a{i}")[1])
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

def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=server_env(), cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
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

class Calls:
    """Every HTTP call (time, endpoint, status, ms) and every error, from every load thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, int, float]] = []
        self.errors: list[tuple[float, str, object]] = []

    def add(self, started: float, endpoint: str, status: int, ms: float, body=None) -> None:
        with self.lock:
            self.calls.append((started, endpoint, status, ms))
            if not 200 <= status < 300:
                self.errors.append((started, endpoint, status if body is None else body))


def timed(calls: Calls, session, method: str, endpoint: str, url: str, **kwargs):
    import requests

    started = time.time()
    try:
        response = session.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as exc:
        calls.add(started, endpoint, 0, (time.time() - started) * 1000, repr(exc))
        return None
    calls.add(started, endpoint, response.status_code, (time.time() - started) * 1000,
              None if response.ok else response.text[:300])
    return response if response.ok else None


def inference_client(calls: Calls, base: str, key: str, model_id: int, texts: list[str], stop_at: float, seed: int):
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    rng = random.Random(seed)
    while time.time() < stop_at:
        timed(calls, session, "POST", "inference", f"{base}/v2/models/{model_id}/inference",
              json={"texts": rng.sample(texts, rng.randint(1, 8))})
        time.sleep(0.2)


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


def trainer(calls: Calls, base: str, key: str, model_id: int, stop_at: float, every: float):
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    while time.time() + every < stop_at:
        time.sleep(every)
        started = time.time()
        response = session.post(f"{base}/v2/models/{model_id}/train", json={"type": "fine-tuned"}, timeout=60)
        # 400: fine-tuning needs 2 labels per class (early in the run); any other answer counts.
        if response.status_code != 400:
            calls.add(started, "train", response.status_code, (time.time() - started) * 1000,
                      None if response.ok else response.text[:300])


def sample_memory(pids: dict[str, int], stop_at: float, samples: list):
    while time.time() < stop_at:
        samples.append({"t": round(time.time(), 1), **{name: rss_mb(pid) for name, pid in pids.items()}})
        time.sleep(SAMPLE_SECONDS)


def per_minute(calls: list[tuple[float, str, int, float]], start: float) -> dict:
    table: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for started, endpoint, status, ms in calls:
        if 200 <= status < 300:
            table[endpoint][int((started - start) // 60)].append(ms)
    return {endpoint: {minute: {"count": len(v), "p50_ms": round(percentile(v, 50), 1), "p95_ms": round(percentile(v, 95), 1)}
                       for minute, v in sorted(minutes.items())}
            for endpoint, minutes in table.items()}


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
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--annotators", type=int, default=4)
    parser.add_argument("--inference-clients", type=int, default=2)
    parser.add_argument("--import-every", type=float, default=60)
    parser.add_argument("--train-every", type=float, default=120)
    args = parser.parse_args()
    if args.setup:
        setup_workspace(args.annotators)
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
    keys = child("--setup", "--annotators", str(args.annotators))

    from tests.system.conftest import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = {
        "web": start([PYTHON, "-m", "gunicorn", "labelf_studio.wsgi:application", "--bind", f"127.0.0.1:{port}",
                      "--workers", "2", "--timeout", "120"], CACHE / "web.log"),
        "worker": start([PYTHON, "-m", "celery", "-A", "labelf_studio", "worker", "--concurrency", "2",
                         "--loglevel", "INFO"], CACHE / "worker.log"),
        "beat": start([PYTHON, "-m", "celery", "-A", "labelf_studio", "beat", "--loglevel", "INFO",
                       "--schedule", str(CACHE / "celerybeat-schedule")], CACHE / "beat.log"),
    }
    try:
        lead = requests.Session()
        lead.headers["Authorization"] = f"Bearer {keys['lead']}"
        wait_for(lambda: _ok(lead, f"{base}/v2/datasets"), 120, "gunicorn")
        texts, categories = [], []
        with open(BANKING77 / "train.csv", newline="", encoding="utf-8") as handle:
            taken: dict[str, int] = defaultdict(int)
            for row in csv.DictReader(handle):
                if row["category"] in CATEGORIES and taken[row["category"]] < PER_CATEGORY:
                    taken[row["category"]] += 1
                    texts.append(row["text"])
                    categories.append(row["category"])
        records = [{"text": t, "metadata": {"gold": c}} for t, c in zip(texts, categories)]
        dataset = lead.post(f"{base}/v2/datasets", json={"name": "banking77 soak", "records": records}, timeout=60).json()
        wait_for(lambda: lead.get(f"{base}/v2/datasets/{dataset['id']}", timeout=30).json()["status"] == "ready", 600,
                 "the base dataset to be embedded")
        model = lead.post(f"{base}/v2/models", timeout=60, json={
            "name": "soak intents", "dataset_id": dataset["id"], "type": "describe-and-classify",
            "labels": [{"name": c, "description": c.replace("_", " ")} for c in CATEGORIES]}).json()
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {keys['admin']}"
        admin.post(f"{base}/v2/models/{model['id']}/deploy", json={}, timeout=60).raise_for_status()

        print(f"soaking for {args.minutes:g} minutes...", flush=True)
        calls = Calls()
        memory: list[dict] = []
        imported: list[int] = []
        start_at = time.time()
        stop_at = start_at + args.minutes * 60
        pids = {"web": processes["web"].pid, "worker": processes["worker"].pid}
        threads = [threading.Thread(target=sample_memory, args=(pids, stop_at, memory)),
                   threading.Thread(target=importer, args=(calls, base, keys["lead"], texts, stop_at, args.import_every, imported)),
                   threading.Thread(target=trainer, args=(calls, base, keys["lead"], model["id"], stop_at, args.train_every))]
        threads += [threading.Thread(target=inference_client, args=(calls, base, keys["admin"], model["id"], texts, stop_at, i))
                    for i in range(args.inference_clients)]
        annotator_runs: list = []

        def annotator(i: int):
            annotator_runs.append(annotate(base, keys["annotators"][i], model["id"], CATEGORIES, stop_at, seed=i,
                                           timeout=60, pause=1.0, label_of=lambda record: record["metadata"]["gold"]))

        threads += [threading.Thread(target=annotator, args=(i,)) for i in range(args.annotators)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended_at = time.time()
        for run in annotator_runs:
            with calls.lock:
                calls.calls.extend(run.calls)
                calls.errors.extend((started, endpoint, body) for started, endpoint, _, body in run.failures)
        # Let the last imports and jobs finish, then count.
        wait_for(lambda: child("--count-jobs")["unfinished"] == 0, 600, "the last jobs")
        jobs = child("--count-jobs")
        memory.append({"t": round(time.time(), 1), **{name: rss_mb(pid) for name, pid in pids.items()}})
        processes_at_end = {name: rss_per_process(pid) for name, pid in pids.items()}
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

    minutes = per_minute(calls.calls, start_at)
    last_minute = int((ended_at - start_at) // 60) - 1  # the last whole minute
    drift = {}
    for endpoint, table in minutes.items():
        first, last = table.get(0), table.get(last_minute)
        if first and last and first["p50_ms"] > 0 and first["p95_ms"] > 0:
            drift[endpoint] = {"first_minute": first, "last_minute": last,
                               "p50_ratio": round(last["p50_ms"] / first["p50_ms"], 2),
                               "p95_ratio": round(last["p95_ms"] / first["p95_ms"], 2)}
    after_first_minute = next((m for m in memory if m["t"] >= start_at + 60), memory[0])
    rss = {name: {"at_start_mb": memory[0][name], "after_first_minute_mb": after_first_minute[name],
                  "at_end_mb": memory[-1][name], "max_mb": max(m[name] for m in memory),
                  "growth_after_first_minute_mb": round(memory[-1][name] - after_first_minute[name], 1)}
           for name in pids}
    errors = calls.errors + [(None, f"job {kind}", error) for kind, error in jobs["failed"]]
    results = {
        "what": "production processes (gunicorn 2 workers, celery prefork 2 + beat) under steady mixed load",
        "setup": {"minutes": args.minutes, "annotators": args.annotators, "inference_clients": args.inference_clients,
                  "import_every_s": args.import_every, "train_every_s": args.train_every,
                  "base_dataset": f"Banking77, {len(texts)} texts of {len(CATEGORIES)} categories",
                  "database": "PostgreSQL", "broker": "Redis"},
        "requests": {endpoint: sum(v["count"] for v in table.values()) for endpoint, table in minutes.items()},
        "labels_acknowledged": sum(len(run.acknowledged) for run in annotator_runs),
        "datasets_imported_during_run": len(imported),
        "jobs": jobs["by_kind_status"],
        "errors": {"count": len(errors), "first": [list(map(str, e)) for e in errors[:10]]},
        "rss_mb": rss,
        "rss_mb_per_process_at_end": processes_at_end,
        "latency_drift": drift,
        "latency_per_minute": minutes,
        "memory_samples": memory,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
    }
    out = ROOT / "bench" / "results" / "soak.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    summary = {k: results[k] for k in ("requests", "labels_acknowledged", "datasets_imported_during_run", "jobs", "errors",
                                       "rss_mb", "latency_drift")}
    print(json.dumps(summary, indent=2))


def _ok(session, url: str) -> bool:
    import requests

    try:
        return session.get(url, timeout=10).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
