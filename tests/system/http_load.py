"""Clients for load tests and benchmarks: plain HTTP, no Django import (spawned processes import only this)."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import requests


def get_repeatedly(args):
    base_url, secret, path, count = args
    session = requests.Session()
    results = []
    for _ in range(count):
        sent = time.time()
        response = session.get(f"{base_url}{path}", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        results.append((sent, response.status_code, response.headers.get("X-RateLimit-Remaining"),
                        response.headers.get("X-RateLimit-Reset"), response.headers.get("Retry-After"),
                        response.json().get("error_code") if response.status_code != 200 else None))
    return results


@dataclass
class AnnotatorRun:
    """What one annotator saw: records handed to it, labels acknowledged (200), and every other answer."""

    handed: list[tuple[float, int]] = field(default_factory=list)  # (time, record id)
    acknowledged: list[tuple[float, int, str]] = field(default_factory=list)  # (time, record id, label)
    failures: list[tuple[float, str, int, object]] = field(default_factory=list)  # (time, endpoint, status, body)
    calls: list[tuple[float, str, int, float]] = field(default_factory=list)  # (time, endpoint, status, ms)
    empty_draws: int = 0


def annotate(base_url: str, secret: str, model_id: int, labels: list[str], stop_at: float, *, limit: int = 1,
             seed: int = 0, timeout: float = 30, pause: float = 0.0, label_of=None) -> AnnotatorRun:
    """One annotator until `stop_at` (time.time()): draw the next record(s), label them, again.

    `pause`: seconds between a label and the next draw (a person reading); `label_of(record)` picks the
    label (default: a random one of `labels`).

    Never stops on an error answer or a dropped connection: it is recorded (with its body) and the
    loop goes on after a short pause, as a person clicking again would.
    """
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    rng = random.Random(seed)
    run = AnnotatorRun()

    def call(method: str, endpoint: str, path: str, **kwargs):
        started = time.time()
        try:
            response = session.request(method, f"{base_url}{path}", timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            run.failures.append((started, endpoint, 0, repr(exc)))
            run.calls.append((started, endpoint, 0, (time.time() - started) * 1000))
            return None
        run.calls.append((started, endpoint, response.status_code, (time.time() - started) * 1000))
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500]
            run.failures.append((started, endpoint, response.status_code, body))
            return None
        return response.json()

    while time.time() < stop_at:
        page = call("GET", "recommendations", f"/v2/models/{model_id}/recommendations", params={"limit": limit})
        if page is None:
            time.sleep(0.2)
            continue
        if not page["data"]:
            run.empty_draws += 1
            time.sleep(0.2)
            continue
        now = time.time()
        batch = []
        for item in page["data"]:
            run.handed.append((now, item["record"]["id"]))
            label = label_of(item["record"]) if label_of else rng.choice(labels)
            batch.append({"record_id": item["record"]["id"], "label": label, "duration_ms": rng.randint(500, 5000)})
        answer = call("POST", "labels", f"/v2/models/{model_id}/labels", json={"labels": batch})
        if answer is None:
            time.sleep(0.2)
            continue
        assert answer["accepted"] == len(batch), answer
        acked_at = time.time()
        run.acknowledged.extend((acked_at, item["record_id"], item["label"]) for item in batch)
        if pause:
            time.sleep(pause)
    return run
