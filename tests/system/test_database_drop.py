"""The database connection drops under a running gunicorn (persistent connections, as in production):

1. PostgreSQL terminates every server connection (a failover, a restart, an idle timeout): the next
   requests reconnect (CONN_HEALTH_CHECKS) and succeed;
2. the database refuses connections for a few seconds: requests fail with the contract's 500 body (no
   stack trace, the request id), nothing else;
3. it accepts them again: requests succeed at once, without restarting gunicorn or its workers.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from django.db import connection

from labeling.queue import queue_recompute
from tests.factories import make_key, make_user, make_workspace
from tests.system.conftest import wait_for
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)


def _terminate_other_connections(database: str) -> int:
    """Terminates every other session on the database and returns once they are gone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database])
        pids = [pid for (pid,) in cursor.fetchall()]
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

        def gone():
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
            return cursor.fetchone()[0] == 0

        wait_for(gone, timeout=10, interval=0.02, message="the terminated sessions to end")
    return len(pids)


def _allow_connections(database: str, allowed: bool) -> None:
    import psycopg

    # From another database: PostgreSQL refuses this for the database a session is connected to.
    params = connection.settings_dict
    with psycopg.connect(host=params["HOST"], port=params["PORT"] or 5432, user=params["USER"],
                         password=params["PASSWORD"] or None, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}')


def test_requests_fail_with_the_contract_body_while_the_database_is_away_and_recover_without_a_restart(start_server):
    database = connection.settings_dict["NAME"]
    workspace = make_workspace()
    model, _ = random_setup(workspace, n=200)
    queue_recompute(model=model)
    secret = make_key(workspace, "annotator", make_user(workspace, "annotator"))
    server = start_server(workers=2, env={"DB_CONN_MAX_AGE": "600"})
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    answers: list[tuple[float, int, dict]] = []
    stop = threading.Event()
    running = threading.Event()  # cleared: the client pauses between requests
    running.set()
    idle = threading.Event()

    def client():
        while not stop.is_set():
            if not running.is_set():
                idle.set()
                running.wait()
                idle.clear()
            sent = time.time()
            response = session.get(f"{server.base_url}/v2/models/{model.id}/recommendations", params={"limit": 1},
                                   timeout=30)
            answers.append((sent, response.status_code, response.json()))
            time.sleep(0.05)

    def answered_after(moment: float) -> list[tuple[float, int, dict]]:
        return [a for a in list(answers) if a[0] > moment]

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(answers) >= 10, timeout=60, interval=0.1, message="the server to answer")
        assert all(status == 200 for _, status, _ in answers), answers[:3]
        # One sequential client may be served by one worker only (an idle worker that just answered is often the
        # one the kernel wakes for the next connection), so only one would hold a connection. Requests in parallel
        # keep one worker busy while the other accepts: both then hold their persistent connection.
        def one_request(_):
            return requests.get(f"{server.base_url}/v2/models/{model.id}/recommendations", params={"limit": 1},
                                headers={"Authorization": f"Bearer {secret}"}, timeout=30).status_code
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(one_request, range(32))) == {200}

        # 1. Every server connection terminated: the next requests reconnect.
        # No request in flight meanwhile, so the first ones after it meet the dead connections.
        running.clear()
        assert idle.wait(timeout=30)
        assert _terminate_other_connections(database) >= 2  # gunicorn workers' persistent connections were there
        terminated_at = time.time()
        running.set()
        time.sleep(2)
        after_termination = answered_after(terminated_at)
        assert len(after_termination) >= 5 and all(status == 200 for _, status, _ in after_termination), after_termination[:3]

        # 2. The database away for a few seconds.
        _allow_connections(database, False)
        away_at = time.time()
        _terminate_other_connections(database)
        time.sleep(3)
        back_at = time.time()
        _allow_connections(database, True)
        time.sleep(3)
    finally:
        _allow_connections(database, True)
        stop.set()
        thread.join(timeout=30)

    while_away = [a for a in answers if away_at + 0.2 < a[0] < back_at - 0.2]
    assert len(while_away) >= 5
    for _, status, body in while_away:
        assert status == 500, (status, body)
        assert set(body) == {"status", "message", "error_code", "request_id"} and body["error_code"] == "INTERNAL_ERROR"
        assert body["request_id"].startswith("req_") and "Traceback" not in body["message"]

    # 3. Back: every request succeeds again, from the same gunicorn workers.
    recovered = [a for a in answers if a[0] > back_at + 1.0]
    assert len(recovered) >= 5 and all(status == 200 for _, status, _ in recovered), recovered[:3]
    assert server.process.poll() is None
    assert server.log_path.read_text().count("Booting worker") == 2  # no worker was restarted
