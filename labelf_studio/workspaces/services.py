"""Writes for workspaces, members, API keys, usage and the audit log."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import ApiKey, AuditEvent, LoginAttempt, Membership, Plan, Role, UsagePeriod, Workspace

KEY_PREFIX = "lf_"


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


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """Looks the key up by its hash; the final comparison is constant-time."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    hashed = _hash_secret(secret)
    api_key = (ApiKey.objects.select_related("workspace", "user")
               .filter(prefix=secret[:10], revoked_at__isnull=True, hashed_secret=hashed).first())
    if api_key is None or not hmac.compare_digest(api_key.hashed_secret, hashed):
        return None
    return api_key


def api_key_revoke(*, api_key: ApiKey, actor=None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(workspace=api_key.workspace, action="api_key.revoke", target=f"{api_key.prefix}… ({api_key.name})", actor=actor)
    return api_key


def billing_period_start(workspace: Workspace, today: dt.date | None = None) -> dt.date:
    today = today or timezone.now().date()
    day = min(max(workspace.billing_cycle_day, 1), 28)
    if today.day >= day:
        return today.replace(day=day)
    previous_month = (today.replace(day=1) - dt.timedelta(days=1))
    return previous_month.replace(day=day)


def _usage_row(api_key: ApiKey) -> UsagePeriod:
    period = billing_period_start(api_key.workspace)
    try:
        row, _ = UsagePeriod.objects.get_or_create(
            api_key=api_key, period_start=period, defaults={"workspace_id": api_key.workspace_id}
        )
    except IntegrityError:
        row = UsagePeriod.objects.get(api_key=api_key, period_start=period)
    return row


def usage_record_request(*, api_key: ApiKey) -> None:
    row = _usage_row(api_key)
    UsagePeriod.objects.filter(pk=row.pk).update(requests=F("requests") + 1)
    now = timezone.now()
    # last_used_at only needs minute precision; skip the write otherwise.
    if api_key.last_used_at is None or now - api_key.last_used_at > dt.timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)


def usage_reserve_texts(*, api_key: ApiKey, count: int) -> bool:
    """Counts `count` classified texts against the workspace's quota; False (and nothing counted) if over.

    The check and the increment happen in one transaction under a row lock on the workspace so
    concurrent requests cannot both squeeze past the quota.
    """
    from django.db.models import Sum

    workspace = api_key.workspace
    with transaction.atomic():
        Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
        period = billing_period_start(workspace)
        used = (UsagePeriod.objects.filter(workspace=workspace, period_start=period)
                .aggregate(total=Sum("texts_classified"))["total"] or 0)
        if used + count > workspace.monthly_quota:
            return False
        row = _usage_row(api_key)
        UsagePeriod.objects.filter(pk=row.pk).update(texts_classified=F("texts_classified") + count)
    return True


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
