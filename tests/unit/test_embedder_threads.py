"""The embedder's lanes: a batch's onnxruntime runs spread over idle cores, all in the calling thread
when the cores are busy; either way the same vectors (inference must answer identical input
identically)."""
from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

from labeling import embeddings
from labeling.embeddings import Embedder, prepare_embedder
from tests.conftest import BANKING77_DIR

# Short and long texts: their runs differ, so a two-lane call has work for both lanes.
MIXED = ["hi", "card?", "where is my card", "top up failed", "I was charged twice for the same purchase yesterday",
         "why is the exchange rate different from the one the app showed when I ordered the transfer to my friend",
         "cancel", "is my new card in the post already, I ordered it two weeks ago and still have nothing"]


@pytest.fixture(scope="module")
def two_lanes():
    return Embedder(model_path=prepare_embedder(), threads=2)


def banking77_batches(count: int) -> list[list[str]]:
    with open(f"{BANKING77_DIR}/test.csv", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return [texts[i:i + 8] for i in range(0, 8 * count, 8)]


class RecordingSession:
    """Wraps the session and records the thread each run ran in."""

    def __init__(self, session):
        self.session = session
        self.threads: list[str] = []

    def run(self, *args, **kwargs):
        self.threads.append(threading.current_thread().name)
        return self.session.run(*args, **kwargs)


def runs_threads(embedder, monkeypatch, idle_cores: int) -> list[str]:
    embedder._get_session()
    recording = RecordingSession(embedder._session)
    monkeypatch.setattr(embedder, "_session", recording)
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: idle_cores)
    embedder.embed(MIXED)
    return recording.threads


def test_runs_spread_over_lanes_only_when_cores_are_idle(two_lanes, monkeypatch):
    caller = threading.current_thread().name
    idle = runs_threads(two_lanes, monkeypatch, idle_cores=2)
    assert len(idle) >= 2 and caller in idle and any(name.startswith("embedder") for name in idle)
    busy = runs_threads(two_lanes, monkeypatch, idle_cores=1)
    assert set(busy) == {caller}


def test_one_lane_and_two_lanes_give_identical_vectors(two_lanes, monkeypatch):
    batches = banking77_batches(40) + [MIXED]
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 2)
    parallel = [two_lanes.embed(batch) for batch in batches]
    monkeypatch.setattr(embeddings, "_idle_cores", lambda: 0)
    sequential = [two_lanes.embed(batch) for batch in batches]
    assert all(np.array_equal(a, b) for a, b in zip(parallel, sequential))


def test_one_configured_lane_runs_everything_in_the_caller(monkeypatch):
    embedder = Embedder(model_path=prepare_embedder(), threads=1)
    assert set(runs_threads(embedder, monkeypatch, idle_cores=8)) == {threading.current_thread().name}
    assert embedder._pool is None


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
    assert embeddings._idle_cores() == 4  # unknown: every core counts
