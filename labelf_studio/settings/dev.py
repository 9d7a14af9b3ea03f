"""The embedded default that `make run` uses: SQLite and Celery's filesystem broker under var/."""
from .base import *  # noqa: F401,F403
from .base import env_bool

DEBUG = env_bool("DEBUG", True)
