"""System tests: real PostgreSQL, a real Redis broker and a real `celery worker` subprocess.

They run in the second pass of `make test` (scripts/test.sh sets DATABASE_URL, REDIS_URL and
CELERY_BROKER_URL). With CI=true a missing service fails the run; elsewhere it skips.
"""
import os
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


class WorkerProcess:
    def __init__(self, database_name: str, media_root: Path, log_path: Path):
        self.database_name = database_name
        self.media_root = media_root
        self.log_path = log_path
        self.process = None

    def start(self):
        base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        env = {**os.environ, "DATABASE_URL": f"{base}/{self.database_name}", "MEDIA_ROOT": str(self.media_root),
               "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.test", "CELERY_TASK_ALWAYS_EAGER": "false"}
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "labelf_studio", "worker", "--pool", "solo",
             "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return self
            if self.process.poll() is not None:
                raise RuntimeError("celery worker exited:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.3)
        raise RuntimeError("celery worker did not become ready:\n" + self.log_path.read_text()[-3000:])

    def kill(self, sig=9):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture
def celery_worker(transactional_db, shared_media, tmp_path):
    """A real worker on the Redis broker, on the same PostgreSQL test database as the test."""
    from django.db import connection

    worker = WorkerProcess(connection.settings_dict["NAME"], shared_media, tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 120, interval: float = 0.5, message: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
