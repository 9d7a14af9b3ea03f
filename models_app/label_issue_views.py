"""Browser pages of the possible-label-errors review (leads): the ranked queue, scans with a progress panel,
and accept / dismiss / relabel of one issue at a time without a page load (htmx swaps the issue's card;
static/labelf/label_issues.js moves the keyboard focus to the next one)."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from labelf_studio.api import ApiError
from labelf_studio.workspaces.permissions import workspace_role_required

from . import label_issue_selectors as issues
from . import label_issue_services, selectors, services
from .models import ModelStatus, ScanStatus

ISSUES_PER_PAGE = 50


def _model_or_404(request: HttpRequest, model_id: int):
    model = selectors.model_get(workspace=request.current_workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise Http404("Model not found")
    return model


def _scan_context(model) -> dict:
    scan = issues.latest_scan(model=model)
    running = scan is not None and scan.status in (ScanStatus.QUEUED, ScanStatus.RUNNING)
    return {"model": model, "scan": scan, "scan_running": running,
            "progress_percent": round(100 * scan.progress) if scan else 0}


def _issue_context(model, issue, error: str | None = None) -> dict:
    return {"model": model, "issue": issue, "other_labels": [label for label in model.labels if label != issue.given_label],
            # Floored: a 99.6% chance of being wrong is not shown as a certainty.
            "score_percent": int(100 * issue.score), "error": error}


@workspace_role_required("lead")
@require_GET
def label_issues_page(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    open_issues = list(issues.label_issues(model=model)[:ISSUES_PER_PAGE])
    return render(request, "models_app/label_issues.html", {
        **_scan_context(model), "issues": [_issue_context(model, issue) for issue in open_issues],
        "counts": issues.review_counts(model=model), "archived": model.status == ModelStatus.ARCHIVED,
        "recent": list(issues.label_issues(model=model, status="accepted")[:10]),
    })


@workspace_role_required("lead")
@require_POST
def label_issues_scan(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    try:
        _, created = label_issue_services.label_issue_scan_request(model=model, user=request.user)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        if not created:
            messages.info(request, "A scan of this model is already under way.")
    return redirect("label_issues_page", model_id=model.id)


@workspace_role_required("lead")
@require_GET
def label_issues_progress(request: HttpRequest, model_id: int):
    """The scan panel for htmx polling (the page otherwise); a finished scan reloads the page with its issues."""
    model = _model_or_404(request, model_id)
    if not request.htmx:
        return redirect("label_issues_page", model_id=model.id)
    context = _scan_context(model)
    response = render(request, "models_app/partials/_label_issue_scan.html", context)
    if not context["scan_running"]:
        response["HX-Refresh"] = "true"
    return response


@workspace_role_required("lead")
@require_POST
def label_issue_resolve(request: HttpRequest, model_id: int, issue_id: int):
    """Accept (with the chosen label, else the suggested one) or dismiss; answers the issue's card (htmx)."""
    model = _model_or_404(request, model_id)
    issue = issues.label_issue_get(model=model, issue_id=issue_id)
    if issue is None:
        if request.htmx:
            # A newer scan replaced the open issues while this page was open: a 404 would leave the
            # card's buttons doing nothing (htmx swaps only 2xx answers), so the card says so.
            return HttpResponse(format_html(
                '<article class="card label-issue resolved" id="issue-{}" data-error="1"><p class="error-text" role="alert">'
                'This issue is no longer open: a newer scan replaced the open issues. '
                '<a href="{}">Reload the list</a>.</p></article>', issue_id, reverse("label_issues_page", args=[model.id])))
        raise Http404("Label issue not found")
    action = request.POST.get("action")
    label = (request.POST.get("label") or None) if action == "accept" else None
    error = None
    try:
        issue = label_issue_services.label_issue_resolve(issue=issue, action=action, label=label, user=request.user)
    except ApiError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("label_issues_page", model_id=model.id)
    issue.record.refresh_from_db(fields=["label"])
    # 200 even on an error: htmx swaps only successful answers, and the card shows what went wrong.
    return render(request, "models_app/partials/_label_issue.html", _issue_context(model, issue, error))
