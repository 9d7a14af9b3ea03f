"""Workspaces, memberships with roles, API keys, plans, usage and the audit log."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    LEAD = "lead", "Lead"
    ADMIN = "admin", "Admin"


# A role may do everything the roles before it may do.
ROLE_RANK = {Role.ANNOTATOR: 0, Role.LEAD: 1, Role.ADMIN: 2}


def role_at_least(role: str, required: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(required)]


class Plan(models.TextChoices):
    STARTER = "starter", "Starter"
    GROWTH = "growth", "Growth"
    ENTERPRISE = "enterprise", "Enterprise"


# Requests per minute and texts classified per billing period, per plan. Enterprise limits
# are set per workspace (rate_limit_per_minute / monthly_quota override these defaults).
PLAN_LIMITS = {
    Plan.STARTER: {"rate_limit_per_minute": 60, "monthly_quota": 10_000},
    Plan.GROWTH: {"rate_limit_per_minute": 300, "monthly_quota": 250_000},
    Plan.ENTERPRISE: {"rate_limit_per_minute": 1_000, "monthly_quota": 10_000_000},
}


class Workspace(models.Model):
    name = models.CharField(max_length=100, unique=True)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.STARTER)
    rate_limit_override = models.PositiveIntegerField(null=True, blank=True)
    monthly_quota_override = models.PositiveBigIntegerField(null=True, blank=True)
    billing_cycle_day = models.PositiveSmallIntegerField(default=1)  # 1..28
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def rate_limit_per_minute(self) -> int:
        return self.rate_limit_override or PLAN_LIMITS[Plan(self.plan)]["rate_limit_per_minute"]

    @property
    def monthly_quota(self) -> int:
        return self.monthly_quota_override or PLAN_LIMITS[Plan(self.plan)]["monthly_quota"]


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="unique_membership")]


class ApiKey(models.Model):
    """Only a SHA-256 hash and a short prefix of the secret are stored."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed_secret = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=20, choices=Role.choices)
    # The user the key acts for (recommendations are leased per user); may be empty for service keys.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsagePeriod(models.Model):
    """Requests and classified texts per key and billing period (the quota sums a workspace's rows)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_periods")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.CASCADE, related_name="usage_periods")
    period_start = models.DateField()
    requests = models.PositiveBigIntegerField(default=0)
    texts_classified = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "period_start"], name="unique_usage_period")]


class RateLimitCounter(models.Model):
    """Admitted requests per workspace and window, for the database rate-limit backend."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    window_seconds = models.PositiveIntegerField()
    window_start = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "window_seconds", "window_start"], name="unique_rate_window")
        ]


class LoginAttempt(models.Model):
    """Failed logins, per username and per client address, for throttling password guessing."""

    username = models.CharField(max_length=150, db_index=True)
    ip_address = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)


class AuditEvent(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=60)
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
