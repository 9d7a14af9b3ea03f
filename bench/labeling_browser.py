"""Keyboard labeling in Chromium: the time from a keypress to the next record on screen.

Setup (a child process, embedded settings on a temporary SQLite database): an annotator, a ready
dataset of 2,000 records with vectors near 5 label vectors (synthetic: this measures the page, not
the classifier), a describe-and-classify model and its recommendation queue. The app runs under
gunicorn (2 workers, 4 threads) on loopback, as a small production would. Chromium (Debian's) then
labels `--records` records by pressing a label's key; a MutationObserver on the record's container,
plus the next animation frame, marks when the next record is painted.

Target: median keypress -> next record shown <= 100 ms over 100 records.

    .venv/bin/python bench/labeling_browser.py [--records 100]

Writes bench/results/labeling_browser.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PASSWORD = "bench-password-123"

MEASURE_JS = """
() => {
  window.__latencies = [];
  let pressed = null;
  document.addEventListener('keydown', () => { pressed = performance.now(); }, true);
  const container = document.getElementById('label-record').parentElement;
  new MutationObserver(() => {
    if (pressed === null) return;
    const start = pressed; pressed = null;
    requestAnimationFrame(() => window.__latencies.push(performance.now() - start));
  }).observe(container, {childList: true});
}
"""


def setup(var_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from labeling.queue import queue_recompute
    from tests.factories import make_user, make_workspace
    from tests.training.helpers import random_setup

    workspace = make_workspace("bench")
    make_user(workspace, "annotator", username="annotator", password=PASSWORD)
    model, _ = random_setup(workspace, n=2000, labels=tuple(f"intent_{i}" for i in range(5)))
    queue_recompute(model=model)
    print(model.id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    var_dir = tempfile.mkdtemp(prefix="labelf-bench-browser-")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.dev", "DEBUG": "0", "LABELF_VAR_DIR": var_dir,
           "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING", "CELERY_TASK_ALWAYS_EAGER": "true", "PYTHONPATH": str(ROOT)}
    model_id = int(subprocess.run([PYTHON, __file__, "--setup-only"], env=env, cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "labelf_studio.wsgi:application", "--bind",
                               f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        latencies = drive(f"http://127.0.0.1:{port}", model_id, args.records)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "records": len(latencies), "median_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1), "max_ms": round(max(latencies), 1),
        "target_median_ms": 100, "load_average_at_start": load_at_start, "machine": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "labeling_browser.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


def drive(base_url: str, model_id: int, records: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        page.goto(f"{base_url}/login/")
        page.fill("input[name=username]", "annotator")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{base_url}/models/{model_id}/label/")
        page.wait_for_selector("#labeling[data-ready='1']")
        page.evaluate(MEASURE_JS)
        for index in range(records):
            before = page.locator("#label-record").get_attribute("data-record-id")
            page.keyboard.press(str(1 + index % 5))
            page.wait_for_function("(id) => { const r = document.getElementById('label-record');"
                                   " return r && r.getAttribute('data-record-id') !== id; }", arg=before)
            page.wait_for_function(f"() => window.__latencies.length >= {index + 1}")
        latencies = page.evaluate("() => window.__latencies")
        browser.close()
    return latencies


if __name__ == "__main__":
    if "--setup-only" in sys.argv:
        setup(os.environ["LABELF_VAR_DIR"])
    else:
        main()
