"""The database rate-limit counters (the embedded default's, and the fallback while Redis is
unreachable) check and count in one step across processes: on PostgreSQL the counter rows are locked
from the read to the increment. With that step held open for 50 ms (a slow statement, a busy
machine), eight checks at the same instant still admit exactly the burst allowance."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from labelf_studio import ratelimit
from labelf_studio.ratelimit import burst_allowance, check_rate_limit
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 6  # burst: 2 per 10 s


def test_overlapping_checks_on_database_counters_admit_exactly_the_allowance(monkeypatch, settings):
    assert connection.vendor == "postgresql"
    settings.LABELF = {**settings.LABELF, "RATE_LIMIT_BACKEND": "database"}
    workspace = make_workspace(rate_limit=LIMIT)
    real_f = ratelimit.F

    def slow_f(name):  # called between reading the counters and writing the increment
        time.sleep(0.05)
        return real_f(name)

    monkeypatch.setattr(ratelimit, "F", slow_f)
    barrier = threading.Barrier(8)
    now = (int(time.time()) // 60) * 60 + 1.0  # one minute window and one 10-second window for every check

    def check(_):
        barrier.wait()
        try:
            return check_rate_limit(workspace.id, LIMIT, now=now)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(check, range(8)))
    assert sum(d.allowed for d in decisions) == burst_allowance(LIMIT) == 2
    assert all(d.retry_after >= 1 for d in decisions if not d.allowed)
