"""Redis killed and restarted (empty: no persistence) while annotators label through gunicorn.

During labeling Redis holds the rate-limit counters and is the broker for the retrain and queue-refill
jobs the label and recommendation calls request. The label itself is one PostgreSQL transaction. So:
- while Redis is down, the rate limit counts in the database (labelf_studio/ratelimit.py) and a job
  that cannot be sent stays `queued` (FollowUpTask): every call still answers 200, none fails;
- every label acknowledged to a client is in PostgreSQL, exactly once;
- once Redis is back, the sweeper re-sends the jobs the outage swallowed (queued while it was down, or
  lost with the restart) and every one of them finishes.

The Redis here is our own redis-server on a free port (the machine's Redis serves other tests).
"""
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from labeling.models import Annotation, Job
from labeling.queue import queue_recompute
from models_app.models import ClassificationModel
from tests.factories import make_key, make_user, make_workspace
from tests.system.conftest import free_port, wait_for
from tests.system.http_load import annotate
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

ANNOTATORS = 4


class RedisServer:
    def __init__(self, port: int, log_path):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log_path = log_path
        self.process = None

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers(), timeout=20, interval=0.1, message="redis-server to answer")
        return self

    def _answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(free_port(), tmp_path / "redis.log").start()
    yield server
    if server.process.poll() is None:
        server.kill()


def test_labels_survive_a_redis_restart_and_the_jobs_it_swallowed_finish(own_redis, start_worker, start_server,
                                                                          fast_job_liveness):
    workspace = make_workspace()
    model, _ = random_setup(workspace, n=3000)
    ClassificationModel.objects.filter(pk=model.pk).update(overlap_share=0.0, retrain_every=10)
    model.refresh_from_db()
    queue_recompute(model=model)
    users = [make_user(workspace, "annotator") for _ in range(ANNOTATORS)]
    keys = [make_key(workspace, "annotator", user) for user in users]
    env = {**fast_job_liveness, "REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url,
           "LABELF_RATE_LIMIT_BACKEND": "redis"}
    start_worker(beat=True, env=env)
    server = start_server(workers=2, env=env)

    started = time.time()
    down_at, up_at, stop_at = started + 4, started + 10, started + 16
    with ThreadPoolExecutor(ANNOTATORS + 1) as pool:
        runs = [pool.submit(annotate, server.base_url, keys[i], model.id, list(model.labels), stop_at, seed=i)
                for i in range(ANNOTATORS)]
        time.sleep(down_at - time.time())
        own_redis.kill()
        queued_in_outage = set()  # jobs whose message the outage swallowed (never sent, or lost with Redis)
        while time.time() < up_at:
            queued_in_outage |= set(Job.objects.filter(model=model, status="queued").values_list("id", flat=True))
            time.sleep(0.3)
        own_redis.start()  # the same port, empty
        runs = [run.result() for run in runs]

    failures = [f for run in runs for f in run.failures]
    assert not failures, failures[:5]
    during_outage = [a for run in runs for a in run.acknowledged if down_at + 0.5 < a[0] < up_at]
    assert len(during_outage) >= 20, "too few labels while Redis was down: the outage was not exercised"
    assert "Redis unreachable: rate limit counted in the database" in server.log_path.read_text()

    # Every acknowledged label is in PostgreSQL, once, as the record's current label.
    acknowledged = [(users[i].id, record_id, label) for i, run in enumerate(runs) for _, record_id, label in run.acknowledged]
    stored = {(u, r): (label, current) for u, r, label, current in
              Annotation.objects.filter(model=model).values_list("user_id", "record_id", "label", "is_current")}
    assert Annotation.objects.filter(model=model).count() == len(acknowledged) == len(stored)
    for user_id, record_id, label in acknowledged:
        assert stored[(user_id, record_id)] == (label, True)

    # Jobs queued while Redis was down (requested then, so never sent, or sent before and lost with the
    # restart) are sent again by the sweeper; every job finishes.
    assert queued_in_outage, "no job was waiting during the outage"
    wait_for(lambda: not Job.objects.filter(model=model, status__in=["queued", "running"]).exists(), timeout=120,
             message="every job to finish after Redis came back")
    failed = list(Job.objects.filter(model=model).exclude(status="succeeded").values_list("kind", "status", "error"))
    assert not failed, failed

