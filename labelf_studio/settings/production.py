"""Production: PostgreSQL, Redis, secure cookies and headers. Everything from the environment."""
import os

from .base import *  # noqa: F401,F403
from .base import CACHES, DATABASES, REDIS_URL, env_bool, env_int

DEBUG = False
if not os.environ.get("SECRET_KEY"):
    raise RuntimeError("SECRET_KEY must be set in production")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# Persistent database connections: opening one per request costs more than the whole inference query
# work. CONN_HEALTH_CHECKS (base) reopens a connection the server dropped.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)

if REDIS_URL:
    # Every API request reads the cache (the API key generation): a hung Redis must fail fast (the
    # key is then read from the database) rather than stall the request.
    CACHES["default"].setdefault("OPTIONS", {}).update({"socket_connect_timeout": 1.0, "socket_timeout": 1.0})
