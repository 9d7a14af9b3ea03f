"""The embedder's two sessions: all its threads for a run when the cores are idle, one thread when
other work keeps them busy; either way the same vectors (inference must answer identical input
identically)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from labeling import embeddings
from labeling.embeddings import Embedder, prepare_embedder
from tests.conftest import BANKING77_DIR


@pytest.fixture(scope="module")
def two_threads():
    return Embedder(model_path=prepare_embedder(), threads=2)


def banking77_batches(count: int) -> list[list[str]]:
    with open(f"{BANKING77_DIR}/test.csv", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return [texts[i:i + 8] for i in range(0, 8 * count, 8)]


class Recorder:
    """Wraps a session and records that a run went through it."""

    def __init__(self, session, runs, name):
        self.session, self.runs, self.name = session, runs, name

    def run(self, *args, **kwargs):
        self.runs.append(self.name)
        return self.session.run(*args, **kwargs)


def test_a_run_takes_every_thread_only_when_that_many_cores_are_idle(two_threads, monkeypatch):
    two_threads._get_session()
    runs = []
    monkeypatch.setattr(two_threads, "_session", Recorder(two_threads._session, runs, "full"))
    monkeypatch.setattr(two_threads, "_single_session", Recorder(two_threads._single_session, runs, "single"))
    monkeypatch.setattr(two_threads, "_session_pid", embeddings.os.getpid())
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 2)
    two_threads.embed(["where is my card"])
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 1)
    two_threads.embed(["where is my card"])
    assert runs == ["full", "single"]


def test_one_thread_and_two_threads_give_identical_vectors(two_threads, monkeypatch):
    batches = banking77_batches(40)
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 2)
    full = [two_threads.embed(batch) for batch in batches]
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 0)
    single = [two_threads.embed(batch) for batch in batches]
    assert all(np.array_equal(a, b) for a, b in zip(full, single))


def test_idle_cores_reads_the_runnable_count(monkeypatch, tmp_path):
    monkeypatch.setattr(embeddings, "_usable_cores", lambda: 4)
    loadavg = tmp_path / "loadavg"
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(loadavg if path == "/proc/loadavg" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    loadavg.write_text("0.50 0.40 0.30 1/312 4242\n")  # only the caller runs
    assert embeddings._idle_cores() == 4
    loadavg.write_text("3.10 2.00 1.00 4/312 4242\n")  # three others run
    assert embeddings._idle_cores() == 1
    loadavg.unlink()
    assert embeddings._idle_cores() == 4  # unknown: as before, every core


def test_one_configured_thread_means_one_session():
    embedder = Embedder(model_path=prepare_embedder(), threads=1)
    embedder.embed(["hi"])
    assert embedder._single_session is embedder._session
