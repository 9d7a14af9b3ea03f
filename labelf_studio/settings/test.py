"""Test settings: fast hashing, eager tasks unless a system test runs a real worker."""
import os

from .base import *  # noqa: F401,F403
from .base import LABELF, VAR_DIR, env_bool

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", True)
MEDIA_ROOT = os.environ.get("MEDIA_ROOT", str(VAR_DIR / "test-media"))
LABELF["LOGIN_ATTEMPTS_PER_15_MIN"] = 5

from .base import DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not :memory:) so threads and live servers in tests see the same database, one per
    # test process so concurrent runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
