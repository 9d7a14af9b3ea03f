"""Reads for workspaces, members, keys and usage."""
from __future__ import annotations

from django.db.models import Sum

from .models import ApiKey, AuditEvent, Membership, UsagePeriod, Workspace
from .services import billing_period_start


def workspaces_for_user(*, user):
    return Workspace.objects.filter(memberships__user=user).order_by("name")


def membership_for(*, user, workspace: Workspace) -> Membership | None:
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(user=user, workspace=workspace).first()


def members_list(*, workspace: Workspace):
    return Membership.objects.filter(workspace=workspace).select_related("user").order_by("user__username")


def api_keys_with_usage(*, workspace: Workspace) -> list[dict]:
    period = billing_period_start(workspace)
    usage = {row.api_key_id: row for row in UsagePeriod.objects.filter(workspace=workspace, period_start=period)}
    keys = ApiKey.objects.filter(workspace=workspace).select_related("user").order_by("-created_at")
    return [
        {"key": key, "plan": workspace.plan, "requests": getattr(usage.get(key.id), "requests", 0),
         "texts_classified": getattr(usage.get(key.id), "texts_classified", 0)}
        for key in keys
    ]


def workspace_usage(*, workspace: Workspace) -> dict:
    period = billing_period_start(workspace)
    totals = UsagePeriod.objects.filter(workspace=workspace, period_start=period).aggregate(
        requests=Sum("requests"), texts=Sum("texts_classified"))
    texts = totals["texts"] or 0
    return {"period_start": period, "requests": totals["requests"] or 0, "texts_classified": texts,
            "monthly_quota": workspace.monthly_quota, "quota_remaining": max(0, workspace.monthly_quota - texts),
            "rate_limit_per_minute": workspace.rate_limit_per_minute, "plan": workspace.plan}


def audit_events(*, workspace: Workspace, limit: int = 200):
    return AuditEvent.objects.filter(workspace=workspace).select_related("actor", "actor_key")[:limit]
