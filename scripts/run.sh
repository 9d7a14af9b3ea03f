#!/usr/bin/env bash
# Starts the studio on the embedded default: SQLite and Celery's filesystem broker under var/,
# a Celery worker (with beat) beside the web server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
export DJANGO_SETTINGS_MODULE=labelf_studio.settings.dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p var/broker/out var/broker/processed var/media

.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py prepare_embedder
.venv/bin/python manage.py seed_demo

.venv/bin/celery -A labelf_studio worker --beat --schedule var/celerybeat-schedule \
  --concurrency 2 --loglevel INFO --logfile var/worker.log &
WORKER_PID=$!
stop() {
  trap - INT TERM EXIT
  echo "Stopping the web server and the worker..."
  kill -TERM "${WEB_PID:-}" "$WORKER_PID" 2>/dev/null || true
  # The worker finishes its current task (tasks are acknowledged late, so a cut-off task is
  # redelivered next time); after 10 s it is stopped hard.
  for _ in $(seq 20); do
    kill -0 "$WORKER_PID" 2>/dev/null || break
    sleep 0.5
  done
  pkill -KILL -P "$WORKER_PID" 2>/dev/null || true
  kill -KILL "${WEB_PID:-}" "$WORKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
echo "Celery worker running (log: var/worker.log). Serving http://127.0.0.1:8000 — Ctrl-C stops both."
.venv/bin/python manage.py runserver 127.0.0.1:8000 --noreload &
WEB_PID=$!
wait -n "$WEB_PID" "$WORKER_PID"
