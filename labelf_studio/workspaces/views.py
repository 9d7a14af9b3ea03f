"""Browser pages: login/logout, dashboard, workspace switch, members, API keys, usage, audit log."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import selectors, services
from .forms import ApiKeyCreateForm, MemberInviteForm, MemberRoleForm
from .middleware import CurrentWorkspaceMiddleware
from .models import ApiKey, Membership
from .permissions import workspace_role_required


NEW_KEY_SESSION_KEY = "new_api_key_secret"


def _client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def login_view(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    limit = settings.LABELF["LOGIN_ATTEMPTS_PER_15_MIN"]
    form = AuthenticationForm(request, data=request.POST or None)
    status, error = 200, None
    if request.method == "POST":
        username = request.POST.get("username", "")
        # Checked before the password, so a throttled guesser learns nothing from the answer.
        if services.login_is_throttled(username=username, ip_address=_client_ip(request), limit=limit):
            error = "Too many failed sign-in attempts. Wait 15 minutes and try again."
            status = 429
        elif form.is_valid():
            services.login_clear_failures(username=username)
            login(request, form.get_user())
            next_url = request.GET.get("next", "")
            if next_url.startswith("/") and not next_url.startswith("//"):
                return HttpResponseRedirect(next_url)
            return redirect("dashboard")
        else:
            services.login_record_failure(username=username, ip_address=_client_ip(request))
            error = "Wrong username or password."
            status = 400
    return render(request, "workspaces/login.html", {"form": form, "error": error}, status=status)


@require_POST
def logout_view(request):
    logout(request)
    return redirect("login")


@login_required
def dashboard(request):
    workspace = request.current_workspace
    context = {"usage": None}
    if workspace is not None:
        from labeling.selectors import workspace_overview

        context.update(workspace_overview(workspace=workspace))
        context["usage"] = selectors.workspace_usage(workspace=workspace)
    return render(request, "workspaces/dashboard.html", context)


@login_required
@require_POST
def switch_workspace(request):
    membership = Membership.objects.filter(user=request.user, workspace_id=request.POST.get("workspace_id")).first()
    if membership is None:
        messages.error(request, "You are not a member of that workspace.")
    else:
        request.session[CurrentWorkspaceMiddleware.SESSION_KEY] = membership.workspace_id
        messages.success(request, f"Switched to {membership.workspace.name}.")
    return redirect("dashboard")


@workspace_role_required("admin")
def members(request):
    workspace = request.current_workspace
    form = MemberInviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        membership, password = services.member_invite(
            workspace=workspace, username=form.cleaned_data["username"], email=form.cleaned_data["email"],
            role=form.cleaned_data["role"], password=form.cleaned_data["password"] or None, actor=request.user,
        )
        if password and not form.cleaned_data["password"]:
            messages.success(request, f"Created {membership.user.username} with the password {password} (shown once).")
        else:
            messages.success(request, f"{membership.user.username} is now a {membership.role} of {workspace.name}.")
        return redirect("members")
    return render(request, "workspaces/members.html", {
        "form": form, "members": selectors.members_list(workspace=workspace), "role_form": MemberRoleForm(),
    })


@workspace_role_required("admin")
@require_POST
def member_update(request, membership_id: int):
    membership = get_object_or_404(Membership, pk=membership_id, workspace=request.current_workspace)
    if request.POST.get("action") == "remove":
        if membership.user_id == request.user.id:
            messages.error(request, "You cannot remove yourself.")
        else:
            services.membership_remove(membership=membership, actor=request.user)
            messages.success(request, f"Removed {membership.user.username}.")
        return redirect("members")
    form = MemberRoleForm(request.POST)
    if form.is_valid():
        if membership.user_id == request.user.id and form.cleaned_data["role"] != "admin":
            messages.error(request, "You cannot lower your own role.")
        else:
            services.membership_set(workspace=membership.workspace, user=membership.user,
                                    role=form.cleaned_data["role"], actor=request.user)
            messages.success(request, f"{membership.user.username} is now {form.cleaned_data['role']}.")
    else:
        messages.error(request, "Choose a valid role.")
    return redirect("members")


@workspace_role_required("admin")
def api_keys(request):
    workspace = request.current_workspace
    form = ApiKeyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, secret = services.api_key_create(
            workspace=workspace, role=form.cleaned_data["role"], name=form.cleaned_data["name"],
            user=request.user, created_by=request.user,
        )
        # Post/redirect/get: a reload must not create a second key. The secret rides in the
        # session for exactly one page view and is removed when shown.
        request.session[NEW_KEY_SESSION_KEY] = secret
        return redirect("api_keys")
    new_secret = request.session.pop(NEW_KEY_SESSION_KEY, None)
    return render(request, "workspaces/api_keys.html", {
        "form": form, "new_secret": new_secret, "keys": selectors.api_keys_with_usage(workspace=workspace),
        "usage": selectors.workspace_usage(workspace=workspace),
    })


@workspace_role_required("admin")
@require_POST
def api_key_revoke(request, key_id: int):
    api_key = get_object_or_404(ApiKey, pk=key_id, workspace=request.current_workspace)
    services.api_key_revoke(api_key=api_key, actor=request.user)
    messages.success(request, f"Revoked {api_key.name} ({api_key.prefix}…).")
    return redirect(reverse("api_keys"))


@workspace_role_required("lead")
def usage(request):
    workspace = request.current_workspace
    return render(request, "workspaces/usage.html", {
        "usage": selectors.workspace_usage(workspace=workspace),
        "keys": selectors.api_keys_with_usage(workspace=workspace),
    })


@workspace_role_required("admin")
def audit_log(request):
    return render(request, "workspaces/audit_log.html", {
        "events": selectors.audit_events(workspace=request.current_workspace)})
