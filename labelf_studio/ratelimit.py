"""Per-workspace request rate limiting.

Rule (the contract's): a workspace may make `limit` requests per minute, and may burst at up to 2x
the sustained rate for 10 seconds. Implemented as two fixed windows checked together, both counting
only admitted requests:
  * the minute window (aligned to the epoch minute): at most `limit` requests;
  * the 10-second window: at most ceil(2 * limit / 6) requests, i.e. 2x the sustained rate.
`X-RateLimit-Remaining` reports the minute window, so it never goes up within a window.

Two backends share one interface: Redis (one Lua script, atomic across every web process) in
production, and the database (a row lock per window) on the embedded default.

Redis unreachable (restarting, network): the check falls back to the database counters for that
request rather than failing it or admitting it unchecked. Limits still hold across processes; the
window's count restarts from what the database saw, so a workspace may get up to twice its limit in
the minute Redis went away. Short socket timeouts keep a hung Redis from stalling requests.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

logger = logging.getLogger("labelf.ratelimit")

MINUTE = 60
BURST_WINDOW = 10
# Seconds to wait for Redis before counting in the database instead.
REDIS_TIMEOUT = 1.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the minute window ends
    retry_after: int  # whole seconds; 0 when allowed


def burst_allowance(limit: int) -> int:
    return max(1, math.ceil(2 * limit * BURST_WINDOW / MINUTE))


_LUA = """
local minute = tonumber(redis.call('GET', KEYS[1]) or '0')
local burst = tonumber(redis.call('GET', KEYS[2]) or '0')
if minute >= tonumber(ARGV[1]) then return {0, minute, 1} end
if burst >= tonumber(ARGV[2]) then return {0, minute, 2} end
minute = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 30)
return {1, minute, 0}
"""

_redis_client = None
_redis_script = None


def _redis():
    global _redis_client, _redis_script
    if _redis_client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry: after a Redis restart the first command on a pooled connection fails once.
        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT,
                                             socket_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 1))
        _redis_script = _redis_client.register_script(_LUA)
    return _redis_script


def _check_redis(workspace_id: int, limit: int, burst: int, minute_start: int, burst_start: int) -> tuple[bool, int, int]:
    script = _redis()
    allowed, used, which = script(
        keys=[f"rl:{workspace_id}:m:{minute_start}", f"rl:{workspace_id}:b:{burst_start}"], args=[limit, burst]
    )
    return bool(allowed), int(used), int(which)


def _check_database(workspace_id: int, limit: int, burst: int, minute_start: int, burst_start: int) -> tuple[bool, int, int]:
    from labelf_studio.workspaces.models import RateLimitCounter

    with transaction.atomic():
        counters = {}
        for seconds, start in ((MINUTE, minute_start), (BURST_WINDOW, burst_start)):
            try:
                with transaction.atomic():
                    counter, _ = RateLimitCounter.objects.select_for_update().get_or_create(
                        workspace_id=workspace_id, window_seconds=seconds, window_start=start
                    )
            except IntegrityError:  # another process created the row first
                counter = RateLimitCounter.objects.select_for_update().get(
                    workspace_id=workspace_id, window_seconds=seconds, window_start=start
                )
            counters[seconds] = counter
        minute_used = counters[MINUTE].count
        if minute_used >= limit:
            return False, minute_used, 1
        if counters[BURST_WINDOW].count >= burst:
            return False, minute_used, 2
        RateLimitCounter.objects.filter(pk__in=[c.pk for c in counters.values()]).update(count=F("count") + 1)
        if minute_used == 0:
            # First request of a new minute: drop windows that can no longer matter.
            RateLimitCounter.objects.filter(workspace_id=workspace_id, window_start__lt=minute_start - MINUTE).delete()
        return True, minute_used + 1, 0


def _check_redis_or_database(workspace_id: int, limit: int, burst: int, minute_start: int,
                             burst_start: int) -> tuple[bool, int, int]:
    import redis

    try:
        return _check_redis(workspace_id, limit, burst, minute_start, burst_start)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        logger.warning("Redis unreachable: rate limit counted in the database for this request")
        return _check_database(workspace_id, limit, burst, minute_start, burst_start)


def check_rate_limit(workspace_id: int, limit: int, now: float | None = None) -> RateDecision:
    now = time.time() if now is None else now
    minute_start = int(now // MINUTE) * MINUTE
    burst_start = int(now // BURST_WINDOW) * BURST_WINDOW
    burst = burst_allowance(limit)
    if settings.LABELF["RATE_LIMIT_BACKEND"] == "redis":
        allowed, used, which = _check_redis_or_database(workspace_id, limit, burst, minute_start, burst_start)
    else:
        allowed, used, which = _check_database(workspace_id, limit, burst, minute_start, burst_start)
    reset_at = minute_start + MINUTE
    if allowed:
        retry_after = 0
    elif which == 1:
        retry_after = max(1, math.ceil(reset_at - now))
    else:
        retry_after = max(1, math.ceil(burst_start + BURST_WINDOW - now))
    return RateDecision(allowed, limit, max(0, limit - used), reset_at, retry_after)
