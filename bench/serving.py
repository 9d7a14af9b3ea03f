"""What the HTTP benchmarks share: waiting for the server and reading percentiles."""
from __future__ import annotations

import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait_until_up(base: str, key: str, model_id: int, timeout: float = 120) -> None:
    """Until the model answers through the API (gunicorn workers loaded, database reachable)."""
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/v2/models/{model_id}", headers={"Authorization": f"Bearer {key}"}, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("gunicorn did not come up")
