"""A client process for load tests: plain HTTP, no Django import (spawned processes import only this)."""
import time

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
