"""Settings shared by every environment.

Everything that differs between the embedded default (SQLite, filesystem broker) and
production (PostgreSQL, Redis) comes from the environment, so the same code runs in both.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("LABELF_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-change-me-in-production-0123456789")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "django_htmx",
    "labelf_studio.workspaces",
    "labeling",
    "models_app",
]

MIDDLEWARE = [
    "labelf_studio.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "labelf_studio.middleware.SecurityHeadersMiddleware",
    "labelf_studio.api.ApiConventionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "labelf_studio.workspaces.middleware.CurrentWorkspaceMiddleware",
]

ROOT_URLCONF = "labelf_studio.urls"
WSGI_APPLICATION = "labelf_studio.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labelf_studio.workspaces.context_processors.workspace",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'labelf.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
        # With persistent connections, a connection the server dropped (restart, failover, idle
        # timeout) is noticed at the start of the next request and reopened, instead of failing it.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the web process read while the worker writes; the timeout absorbs short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE",
         "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it even when serving from finders
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"
STORAGES = {
    # Uploaded files, vector chunks and model artifacts. Point STORAGE_BACKEND at an
    # S3-compatible backend (django-storages) in production to share them between machines.
    "default": {"BACKEND": os.environ.get("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Celery -------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
_fs_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"data_folder_in": str(_fs_broker_dir / "out"), "data_folder_out": str(_fs_broker_dir / "out"),
     "processed_folder": str(_fs_broker_dir / "processed"), "control_folder": str(_fs_broker_dir / "control"),
     "store_processed": False}
    # Redis hands an unacknowledged task (its worker was killed) out again after this long; the
    # stale-job sweeper (below) recovers jobs much sooner, so this stays long enough that a live
    # long task is never handed to a second worker.
    if CELERY_BROKER_URL.startswith("filesystem") else {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3500)
# A late-acknowledged task whose pool process died (killed, out of memory) goes back to the queue
# instead of being acknowledged as failed; its job's claim and the sweeper keep reruns single.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Task modules beside each app's tasks.py (autodiscovered) that the worker must import too.
CELERY_IMPORTS = ("labeling.queue_tasks", "models_app.training_tasks", "models_app.label_issue_tasks",
                  "labeling.duplicates_tasks")
CELERY_BEAT_SCHEDULE = {
    "release-expired-leases": {"task": "labeling.queue_tasks.release_expired_leases", "schedule": 60.0},
    "sweep-stale-jobs": {"task": "labeling.jobs_sweep", "schedule": float(env_int("LABELF_JOB_SWEEP_SECONDS", 60))},
}

# --- Cache (rate-limit counters on the embedded default; Redis in production) ---------------
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Product limits ------------------------------------------------------------------------
LABELF = {
    "MAX_REQUEST_BYTES": env_int("LABELF_MAX_REQUEST_BYTES", 2 * 1024 * 1024),
    "MAX_UPLOAD_BYTES": env_int("LABELF_MAX_UPLOAD_BYTES", 512 * 1024 * 1024),
    "MAX_TEXT_CHARS": env_int("LABELF_MAX_TEXT_CHARS", 10_000),
    "EMBEDDER_THREADS": env_int("LABELF_EMBEDDER_THREADS", 0),  # 0: onnxruntime's default
    # Where the ONNX export of the packaged embedding model is built and cached.
    "MODEL_CACHE_DIR": Path(os.environ.get("LABELF_MODEL_CACHE", VAR_DIR / "models")),
    "EMBEDDING_CHUNK_SIZE": env_int("LABELF_EMBEDDING_CHUNK_SIZE", 4096),
    "RETRAIN_EVERY": env_int("LABELF_RETRAIN_EVERY", 20),
    "EVALUATION_SHARE": float(os.environ.get("LABELF_EVALUATION_SHARE", "0.1")),
    "LEASE_SECONDS": env_int("LABELF_LEASE_SECONDS", 600),
    # Rate limiting: "redis" keeps shared atomic counters in Redis; "database" keeps them in the
    # database so several processes on the embedded default still share one counter.
    "RATE_LIMIT_BACKEND": os.environ.get("LABELF_RATE_LIMIT_BACKEND", "redis" if REDIS_URL else "database"),
    "LOGIN_ATTEMPTS_PER_15_MIN": env_int("LABELF_LOGIN_ATTEMPTS", 10),
    # Job liveness (labeling/job_maintenance.py): a running job's worker refreshes its heartbeat this
    # often; a heartbeat older than JOB_STALE_SECONDS means the worker died and the sweeper queues the
    # job again, up to JOB_MAX_ATTEMPTS starts; a job queued and not sent for JOB_RESEND_SECONDS is sent again.
    "JOB_HEARTBEAT_SECONDS": float(os.environ.get("LABELF_JOB_HEARTBEAT_SECONDS", "10")),
    "JOB_STALE_SECONDS": env_int("LABELF_JOB_STALE_SECONDS", 120),
    "JOB_RESEND_SECONDS": env_int("LABELF_JOB_RESEND_SECONDS", 600),
    "JOB_MAX_ATTEMPTS": env_int("LABELF_JOB_MAX_ATTEMPTS", 3),
}
DATA_UPLOAD_MAX_MEMORY_SIZE = LABELF["MAX_REQUEST_BYTES"]
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie, but forms stay simple
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# No inline scripts anywhere: every script is a static file.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"labelf": {"level": os.environ.get("LOG_LEVEL", "INFO")}},
}
