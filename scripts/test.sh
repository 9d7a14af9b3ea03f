#!/usr/bin/env bash
# The whole suite: everything on SQLite, then the system tests on PostgreSQL with a real Redis
# broker and a real Celery worker process. With CI=true the system tests fail (never skip) when
# those services are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DJANGO_ALLOW_ASYNC_UNSAFE=true
export LABELF_VAR_DIR="${LABELF_VAR_DIR:-$PWD/var/test}"
mkdir -p "$LABELF_VAR_DIR"
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL

echo "== unit, integration and browser tests (SQLite, eager tasks)"
.venv/bin/python -m pytest -m "not system" -p no:cacheprovider "$@"

echo "== system tests (PostgreSQL, Redis broker, a real Celery worker)"
export DATABASE_URL="${SYSTEM_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${SYSTEM_REDIS_URL:-redis://127.0.0.1:6379/15}"
export CELERY_BROKER_URL="$REDIS_URL"
export CELERY_TASK_ALWAYS_EAGER=false
.venv/bin/python -m pytest -m system -p no:cacheprovider "$@"
