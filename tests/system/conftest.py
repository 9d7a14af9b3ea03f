"""System tests: real PostgreSQL, a real Redis broker and a real `celery worker` subprocess.

They run in the second pass of `make test` (scripts/test.sh sets DATABASE_URL, REDIS_URL and
CELERY_BROKER_URL). With CI=true a missing service fails the run; elsewhere it skips.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/system/" in str(item.fspath):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session", autouse=True)
def system_services():
    problems = []
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        problems.append("DATABASE_URL does not point at PostgreSQL (run through `make test`)")
    if not os.environ.get("REDIS_URL", "").startswith("redis"):
        problems.append("REDIS_URL is not set (run through `make test`)")
    if not _port_open("127.0.0.1", 5432):
        problems.append("PostgreSQL does not answer on 127.0.0.1:5432")
    if not _port_open("127.0.0.1", 6379):
        problems.append("Redis does not answer on 127.0.0.1:6379")
    if problems:
        message = "system tests need their services: " + "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


@pytest.fixture(scope="session")
def shared_media(tmp_path_factory):
    return tmp_path_factory.mktemp("system-media")


@pytest.fixture(autouse=True)
def _isolated_media(settings, shared_media):
    """The worker process and the tests must see the same files."""
    settings.MEDIA_ROOT = str(shared_media)
    yield


# Job liveness for system tests: a dead worker's job is found in seconds, not minutes (see
# labeling/job_maintenance.py). The test process and every worker or server it starts use the same.
FAST_JOB_LIVENESS = {"LABELF_JOB_HEARTBEAT_SECONDS": "0.5", "LABELF_JOB_STALE_SECONDS": "4",
                     "LABELF_JOB_RESEND_SECONDS": "4", "LABELF_JOB_SWEEP_SECONDS": "1"}


@pytest.fixture
def fast_job_liveness(settings):
    settings.LABELF = {**settings.LABELF, "JOB_HEARTBEAT_SECONDS": 0.5, "JOB_STALE_SECONDS": 4, "JOB_RESEND_SECONDS": 4}
    return FAST_JOB_LIVENESS


def app_env(database_name: str, media_root: Path, **extra: str) -> dict:
    """The environment of a worker or web server on the test's database and media folder."""
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return {**os.environ, "DATABASE_URL": f"{base}/{database_name}", "MEDIA_ROOT": str(media_root),
            "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.test", "CELERY_TASK_ALWAYS_EAGER": "false", **extra}


class WorkerProcess:
    """`celery worker` in its own process group (so a test can SIGKILL all of it), optionally with beat."""

    def __init__(self, database_name: str, media_root: Path, log_path: Path, *, pool: str = "solo",
                 beat: bool = False, env: dict | None = None):
        self.database_name = database_name
        self.media_root = media_root
        self.log_path = log_path
        self.pool = pool
        self.beat = beat
        self.extra_env = env or {}
        self.process = None
        self.log = None

    def start(self):
        env = app_env(self.database_name, self.media_root, **self.extra_env)
        command = [sys.executable, "-m", "celery", "-A", "labelf_studio", "worker", "--pool", self.pool,
                   "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.beat:
            command += ["--beat", "--schedule", str(self.log_path.with_suffix(".beat-schedule"))]
        self.log = open(self.log_path, "ab")
        started_at = self.log_path.stat().st_size
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if b"ready." in self.log_path.read_bytes()[started_at:]:
                return self
            if self.process.poll() is not None:
                raise RuntimeError("celery worker exited:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.3)
        raise RuntimeError("celery worker did not become ready:\n" + self.log_path.read_text()[-3000:])

    def pool_children(self) -> list[int]:
        """Pids of the prefork pool's processes (empty for the solo pool)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill(self, sig=signal.SIGKILL):
        """Kills the whole worker (main process and pool) at once, as `kill -9` or the OOM killer would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if self.log:
            self.log.close()


@pytest.fixture
def celery_worker(transactional_db, shared_media, tmp_path):
    """A real worker on the Redis broker, on the same PostgreSQL test database as the test."""
    from django.db import connection

    worker = WorkerProcess(connection.settings_dict["NAME"], shared_media, tmp_path / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(transactional_db, shared_media, tmp_path):
    """Starts workers on demand (`start_worker(beat=True, env={...})`); every one is stopped afterwards, and
    the broker's queue is emptied so tasks a test left behind do not reach the next test's worker."""
    from django.db import connection

    workers = []

    def start(*, pool: str = "solo", beat: bool = False, env: dict | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers) + 1}.log"
        worker = WorkerProcess(connection.settings_dict["NAME"], shared_media, log, pool=pool, beat=beat, env=env)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:  # whatever they still run belongs to this test only
        worker.kill()
        worker.stop()
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """The production web server (gunicorn, sync workers) in its own process group, on a free port."""

    def __init__(self, env: dict, log_path: Path, workers: int = 2):
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        import requests

        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "labelf_studio.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--timeout", "60"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"{self.base_url}/v2/openapi.json", timeout=10).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError("gunicorn did not come up:\n" + self.log_path.read_text()[-3000:])

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def start_server(transactional_db, shared_media, tmp_path):
    """Starts gunicorn on the test's database and media (`start_server(workers=2, env={...})`); stopped afterwards."""
    from django.db import connection

    servers = []

    def start(*, workers: int = 2, env: dict | None = None) -> GunicornServer:
        server_env = app_env(connection.settings_dict["NAME"], shared_media, **(env or {}))
        server = GunicornServer(server_env, tmp_path / f"gunicorn-{len(servers) + 1}.log", workers=workers)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def wait_for(predicate, timeout: float = 120, interval: float = 0.5, message: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
