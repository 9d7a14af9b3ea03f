"""Rate limits under real concurrency: 8 client processes against gunicorn (2 workers) sharing
Redis counters. Per window, never more admitted than the plan allows; X-RateLimit-Remaining never
goes up within a window; every 429 carries Retry-After; the Python client then gets through."""
import multiprocessing
import time
from collections import defaultdict

from labelf_studio.client import Client
from labelf_studio.ratelimit import BURST_WINDOW, MINUTE, burst_allowance
from tests.factories import make_key, make_workspace
from tests.system.http_load import get_repeatedly

LIMIT = 60


def test_eight_processes_against_gunicorn_never_exceed_the_plan(start_server):
    workspace = make_workspace(rate_limit=LIMIT)
    secret = make_key(workspace, "admin")
    base_url = start_server(workers=2, env={"LABELF_RATE_LIMIT_BACKEND": "redis"}).base_url
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        per_process = pool.map(get_repeatedly, [(base_url, secret, "/v2/models", 15)] * 8)

    admitted_per_minute, admitted_per_burst = defaultdict(int), defaultdict(int)
    for results in per_process:
        previous = {}
        for sent, status, remaining, reset, retry_after, error_code in results:
            assert status in (200, 429), status
            if status == 429:
                assert error_code == "RATE_LIMIT_EXCEEDED" and int(retry_after) >= 1
                continue
            # Windows are aligned to the epoch: the server's reset time names the minute window.
            minute = int(reset) - MINUTE
            admitted_per_minute[minute] += 1
            admitted_per_burst[int(sent // BURST_WINDOW)] += 1
            if minute in previous:
                assert int(remaining) <= previous[minute], "X-RateLimit-Remaining went up within a window"
            previous[minute] = int(remaining)
    assert all(count <= LIMIT for count in admitted_per_minute.values()), dict(admitted_per_minute)
    # Client send times may straddle a 10 s boundary by a little; two adjacent windows never hold
    # more than two bursts' worth.
    slots = sorted(admitted_per_burst)
    for slot in slots:
        assert admitted_per_burst[slot] + admitted_per_burst.get(slot + 1, 0) <= 2 * burst_allowance(LIMIT)
    assert sum(admitted_per_minute.values()) >= burst_allowance(LIMIT)
    assert sum(1 for results in per_process for r in results if r[1] == 429) > 0

    # The documented client waits for Retry-After and then succeeds.
    slept = []
    client = Client(base_url, secret, sleep=lambda seconds: (slept.append(seconds), time.sleep(seconds)))
    assert client.models() == []
