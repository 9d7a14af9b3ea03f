"""The one place tests make workspaces, users, keys, datasets and models."""
from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model

from labelf_studio.workspaces.models import Plan, Workspace
from labelf_studio.workspaces.services import api_key_create, membership_set

_counter = itertools.count(1)


def make_workspace(name: str | None = None, plan: str = Plan.ENTERPRISE, rate_limit: int | None = 100_000,
                   monthly_quota: int | None = None) -> Workspace:
    return Workspace.objects.create(name=name or f"ws-{next(_counter)}", plan=plan,
                                    rate_limit_override=rate_limit, monthly_quota_override=monthly_quota)


def make_user(workspace: Workspace | None = None, role: str = "annotator", username: str | None = None,
              password: str = "correct-horse-battery"):
    user = get_user_model().objects.create_user(username=username or f"user{next(_counter)}", password=password)
    if workspace is not None:
        membership_set(workspace=workspace, user=user, role=role)
    return user


def make_key(workspace: Workspace, role: str = "admin", user=None) -> str:
    if user is None:
        user = make_user(workspace, role)
    _, secret = api_key_create(workspace=workspace, role=role, user=user)
    return secret
