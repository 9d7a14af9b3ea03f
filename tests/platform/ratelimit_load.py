"""Hammers one workspace from several threads at once and checks the admitted counts per window."""
import math
import threading
import time

from django.test import Client

from labelf_studio.ratelimit import BURST_WINDOW, MINUTE, burst_allowance


def hammer(secret: str, *, threads: int, requests_each: int) -> dict:
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker():
        client = Client()
        barrier.wait()
        for _ in range(requests_each):
            sent = time.time()
            response = client.get("/v2/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
            with lock:
                results.append((sent, time.time(), response.status_code, response))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"results": results}


def check_admissions(results, limit: int) -> int:
    admitted = [r for r in results if r[2] == 200]
    rejected = [r for r in results if r[2] == 429]
    assert len(admitted) + len(rejected) == len(results), {r[2] for r in results}
    # Every admitted request of one minute window is counted in that window: never more than the limit.
    first, last = min(r[0] for r in results), max(r[1] for r in results)
    minute_windows = {int(t // MINUTE) for t in (first, last)}
    burst_windows = math.floor(last / BURST_WINDOW) - math.floor(first / BURST_WINDOW) + 1
    assert len(admitted) <= limit * len(minute_windows)
    assert len(admitted) <= burst_allowance(limit) * burst_windows
    for _, _, _, response in rejected:
        assert int(response["Retry-After"]) >= 1
        assert response.json()["error_code"] == "RATE_LIMIT_EXCEEDED"
    return len(admitted)
