"""Writes for workspaces, members, API keys, usage and the audit log."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
from time import monotonic

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import BigIntegerField, F, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from .models import ApiKey, AuditEvent, LoginAttempt, Membership, Plan, Role, UsagePeriod, Workspace

KEY_PREFIX = "lf_"

logger = logging.getLogger("labelf.workspaces")


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def audit_record(*, workspace: Workspace, action: str, target: str = "", actor=None, actor_key: ApiKey | None = None,
                 details: dict | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        workspace=workspace, action=action, target=target, details=details or {},
        actor=actor if getattr(actor, "is_authenticated", False) else None, actor_key=actor_key,
    )


def workspace_get_or_create(*, name: str, plan: str | None = None, rate_limit: int | None = None,
                            monthly_quota: int | None = None) -> tuple[Workspace, bool]:
    workspace, created = Workspace.objects.get_or_create(name=name, defaults={"plan": plan or Plan.STARTER})
    changed = []
    if plan and workspace.plan != plan:
        workspace.plan = plan
        changed.append("plan")
    if rate_limit is not None and workspace.rate_limit_override != rate_limit:
        workspace.rate_limit_override = rate_limit
        changed.append("rate_limit_override")
    if monthly_quota is not None and workspace.monthly_quota_override != monthly_quota:
        workspace.monthly_quota_override = monthly_quota
        changed.append("monthly_quota_override")
    if changed:
        workspace.save(update_fields=changed)
        _announce_key_change()  # cached keys carry their workspace's plan and limits
    return workspace, created


def api_key_create(*, workspace: Workspace, role: str, name: str = "", user=None, created_by=None) -> tuple[ApiKey, str]:
    """Returns the key and its secret; the secret exists only in this return value."""
    Role(role)  # raises ValueError for an unknown role
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        workspace=workspace, role=role, name=name or f"{role} key", prefix=secret[:10],
        hashed_secret=_hash_secret(secret), user=user, created_by=created_by,
    )
    audit_record(workspace=workspace, action="api_key.create", target=f"{api_key.prefix}… ({api_key.name})",
                 actor=created_by, details={"role": role})
    return api_key, secret


# Every /v2 request authenticates its key. Each process keeps the keys it looked up (by hash) for
# KEY_CACHE_SECONDS, valid only while a shared generation token (in the cache: Redis in production,
# one GET per request instead of a database query) is unchanged. Revoking a key or changing a
# workspace's plan or limits through the services replaces the token, so it takes effect at once in
# every process; a change made around the services (a bulk UPDATE, a shell) within KEY_CACHE_SECONDS.
# With a per-process cache backend (locmem: the embedded default's single web process) the token is
# per process.
KEY_CACHE_SECONDS = 10.0
MAX_CACHED_KEYS = 1000
_KEY_GENERATION = "labelf:api-keys:generation"
_CACHE_UNREACHABLE = object()  # never equal to a stored generation: nothing cached is trusted
_key_cache: dict[str, tuple[float, object, ApiKey]] = {}
_key_cache_lock = threading.Lock()


def _key_generation():
    try:
        return cache.get(_KEY_GENERATION)
    except Exception:  # Redis unreachable: authenticate from the database
        return _CACHE_UNREACHABLE


def api_keys_changed() -> None:
    """Makes every process forget the keys it cached (after a revocation or a plan/limit change)."""
    with _key_cache_lock:
        _key_cache.clear()
    try:
        cache.set(_KEY_GENERATION, secrets.token_hex(8), timeout=None)
    except Exception:
        logger.warning("could not publish an API key change; other processes notice it within %s s", KEY_CACHE_SECONDS)


def _announce_key_change() -> None:
    # Now, for this process and the common case; again on commit, so a process that re-read the old
    # row between now and the commit drops it too.
    api_keys_changed()
    transaction.on_commit(api_keys_changed)


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """Looks the key up by its hash; the final comparison is constant-time.

    The returned key (with its workspace and user) may be shared with other requests of this
    process: treat it as read-only.
    """
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    hashed = _hash_secret(secret)
    generation = _key_generation()
    now = monotonic()
    if generation is not _CACHE_UNREACHABLE:
        with _key_cache_lock:
            entry = _key_cache.get(hashed)
        if entry is not None and entry[0] > now and entry[1] == generation:
            return entry[2]
    api_key = (ApiKey.objects.select_related("workspace", "user")
               .filter(prefix=secret[:10], revoked_at__isnull=True, hashed_secret=hashed).first())
    if api_key is None or not hmac.compare_digest(api_key.hashed_secret, hashed):
        return None
    if generation is not _CACHE_UNREACHABLE:
        with _key_cache_lock:
            if len(_key_cache) >= MAX_CACHED_KEYS:
                _key_cache.clear()
            _key_cache[hashed] = (now + KEY_CACHE_SECONDS, generation, api_key)
    return api_key


def api_key_revoke(*, api_key: ApiKey, actor=None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(workspace=api_key.workspace, action="api_key.revoke", target=f"{api_key.prefix}… ({api_key.name})", actor=actor)
        _announce_key_change()
    return api_key


def billing_period_start(workspace: Workspace, today: dt.date | None = None) -> dt.date:
    today = today or timezone.now().date()
    day = min(max(workspace.billing_cycle_day, 1), 28)
    if today.day >= day:
        return today.replace(day=day)
    previous_month = (today.replace(day=1) - dt.timedelta(days=1))
    return previous_month.replace(day=day)


def _usage_period(api_key: ApiKey):
    period = billing_period_start(api_key.workspace)
    return period, UsagePeriod.objects.filter(api_key_id=api_key.pk, period_start=period)


def _usage_row_create(api_key: ApiKey, period: dt.date) -> None:
    """The key's row for the period, if no request made it first (INSERT ... ON CONFLICT DO NOTHING)."""
    UsagePeriod.objects.bulk_create(
        [UsagePeriod(api_key_id=api_key.pk, workspace_id=api_key.workspace_id, period_start=period)],
        ignore_conflicts=True,
    )


def _touch_last_used(api_key: ApiKey) -> None:
    now = timezone.now()
    # last_used_at only needs minute precision; skip the write otherwise. The key may be the process's
    # cached instance, so setting it here also spares the next requests' writes.
    if api_key.last_used_at is None or now - api_key.last_used_at > dt.timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def usage_record_request(*, api_key: ApiKey) -> None:
    """Counts one request: one UPDATE (and an INSERT on the period's first request)."""
    period, row = _usage_period(api_key)
    if not row.update(requests=F("requests") + 1):
        _usage_row_create(api_key, period)
        row.update(requests=F("requests") + 1)
    _touch_last_used(api_key)


# PostgreSQL: one statement. The CTE locks the workspace's rows for the period (in id order, so two
# requests never deadlock) and reads their latest committed values, so two concurrent requests cannot
# both pass the check; the UPDATE then counts the texts and the request on the key's own row. The one
# thing a single statement cannot see is a row inserted after it started: if another key's first
# request of the period inserts its row and counts its texts in the microseconds between this
# statement's start and its first lock, that request's texts (at most 8) are missed once.
_RESERVE_POSTGRESQL = """
WITH period_rows AS MATERIALIZED (
    SELECT texts_classified FROM {table}
    WHERE workspace_id = %(workspace)s AND period_start = %(period)s
    ORDER BY id FOR NO KEY UPDATE
)
UPDATE {table} SET texts_classified = texts_classified + %(count)s, requests = requests + 1
WHERE api_key_id = %(key)s AND period_start = %(period)s
  AND (SELECT COALESCE(SUM(texts_classified), 0) FROM period_rows) + %(count)s <= %(quota)s
"""


def _reserve_once(api_key: ApiKey, period: dt.date, count: int, quota: int) -> bool:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_RESERVE_POSTGRESQL.format(table=UsagePeriod._meta.db_table), {
                "workspace": api_key.workspace_id, "period": period, "count": count, "quota": quota, "key": api_key.pk})
            return cursor.rowcount == 1
    # SQLite (the embedded default) runs one writer at a time, so a single UPDATE whose condition
    # sums the workspace's usage is atomic as it stands.
    used = (UsagePeriod.objects.filter(workspace_id=api_key.workspace_id, period_start=period)
            .values("workspace_id").annotate(total=Sum("texts_classified")).values("total"))
    return bool(UsagePeriod.objects.filter(api_key_id=api_key.pk, period_start=period)
                .filter(LessThanOrEqual(Coalesce(Subquery(used), Value(0), output_field=BigIntegerField()) + count, quota))
                .update(texts_classified=F("texts_classified") + count, requests=F("requests") + 1))


def usage_reserve_texts(*, api_key: ApiKey, count: int) -> bool:
    """Counts `count` classified texts and the request itself against the workspace's quota, in one
    conditional UPDATE; False (and nothing counted, not even the request) if they would go over it.

    The quota is the workspace's, summed over its keys' rows for the billing period.
    """
    period, _ = _usage_period(api_key)
    quota = api_key.workspace.monthly_quota
    if _reserve_once(api_key, period, count, quota):
        _touch_last_used(api_key)
        return True
    # Either over the quota, or the key's first request of the period (no row yet): make the row, try again.
    _usage_row_create(api_key, period)
    if _reserve_once(api_key, period, count, quota):
        _touch_last_used(api_key)
        return True
    return False


def membership_set(*, workspace: Workspace, user, role: str, actor=None) -> Membership:
    Role(role)
    membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
    if created:
        audit_record(workspace=workspace, action="member.add", target=user.username, actor=actor, details={"role": role})
    elif membership.role != role:
        previous = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(workspace=workspace, action="member.role_change", target=user.username, actor=actor,
                     details={"from": previous, "to": role})
    return membership


def membership_remove(*, membership: Membership, actor=None) -> None:
    audit_record(workspace=membership.workspace, action="member.remove", target=membership.user.username, actor=actor)
    membership.delete()


def member_invite(*, workspace: Workspace, username: str, email: str, role: str, password: str | None, actor=None):
    """Adds an existing user, or creates one with the given (or a generated) password.

    Returns (membership, password_if_created) so the admin can hand the password over once.
    """
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    generated = None
    if user is None:
        generated = password or secrets.token_urlsafe(10)
        user = User.objects.create_user(username=username, email=email, password=generated)
    return membership_set(workspace=workspace, user=user, role=role, actor=actor), generated


LOGIN_WINDOW = dt.timedelta(minutes=15)


def login_is_throttled(*, username: str, ip_address: str, limit: int) -> bool:
    since = timezone.now() - LOGIN_WINDOW
    recent = LoginAttempt.objects.filter(created_at__gte=since)
    return (recent.filter(username=username.lower()).count() >= limit
            or recent.filter(ip_address=ip_address).count() >= limit * 3)


def login_record_failure(*, username: str, ip_address: str) -> None:
    LoginAttempt.objects.create(username=username.lower()[:150], ip_address=ip_address[:64])


def login_clear_failures(*, username: str) -> None:
    LoginAttempt.objects.filter(username=username.lower()).delete()
