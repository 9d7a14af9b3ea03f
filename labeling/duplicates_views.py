"""Browser page of a dataset's near-duplicate groups: the groups with their texts (computed in the background,
with a progress panel), excluding duplicates from the recommendation pool and putting them back, and giving
a whole group one label of a model on this dataset (leads)."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labelf_studio.api import ApiError
from labelf_studio.workspaces.models import role_at_least
from labelf_studio.workspaces.permissions import workspace_role_required
from models_app.models import ClassificationModel, ModelStatus, ScanStatus

from . import duplicates_selectors, duplicates_services, selectors
from .duplicates import DEFAULT_THRESHOLD

GROUPS_PER_PAGE = 25
MAX_ID = 2**63 - 1


def _dataset_or_404(request: HttpRequest, dataset_id: int):
    dataset = selectors.dataset_get(workspace=request.current_workspace, dataset_id=dataset_id) if dataset_id <= MAX_ID else None
    if dataset is None:
        raise Http404("No such dataset")
    return dataset


def _threshold(request: HttpRequest, source) -> tuple:
    try:
        return duplicates_services.parse_threshold(source.get("threshold")), None
    except ApiError as exc:
        return duplicates_services.parse_threshold(None), exc.message


def _page_url(dataset_id: int, threshold, page=None) -> str:
    query = {"threshold": str(threshold)}
    if page:
        query["page"] = page
    return reverse("dataset_duplicates", args=[dataset_id]) + "?" + urlencode(query)


def _scan_context(dataset, threshold) -> dict:
    scan, _ = duplicates_services.duplicate_scan_request(dataset=dataset, threshold=threshold)
    scan.refresh_from_db()  # an eager run (tests) finished in the meantime
    running = scan.status in (ScanStatus.QUEUED, ScanStatus.RUNNING)
    return {"dataset": dataset, "threshold": threshold, "scan": scan, "scan_running": running,
            "progress_percent": round(100 * scan.progress)}


@workspace_role_required("annotator")
@require_GET
def dataset_duplicates(request: HttpRequest, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    threshold, threshold_error = _threshold(request, request.GET)
    context = {"dataset": dataset, "threshold": threshold, "threshold_error": threshold_error,
               "default_threshold": DEFAULT_THRESHOLD, "scan": None, "groups": []}
    try:
        context.update(_scan_context(dataset, threshold))
    except ApiError as exc:
        context["unavailable"] = exc.message
        return render(request, "labeling/dataset_duplicates.html", context)
    scan = context["scan"]
    if scan.status == ScanStatus.SUCCEEDED:
        page = Paginator(range(len(scan.groups)), GROUPS_PER_PAGE).get_page(request.GET.get("page"))
        context["page"] = page
        context["groups"] = duplicates_selectors.groups_page(scan=scan, offset=page.start_index() - 1 if scan.groups else 0,
                                                             limit=GROUPS_PER_PAGE)
        context["previous_url"] = _page_url(dataset.id, threshold, page.previous_page_number()) if page.has_previous() else None
        context["next_url"] = _page_url(dataset.id, threshold, page.next_page_number()) if page.has_next() else None
    if role_at_least(request.membership.role, "lead"):
        models = ClassificationModel.objects.filter(dataset=dataset).exclude(status=ModelStatus.ARCHIVED).only("id", "name", "labels")
        context["label_choices"] = [{"model": model, "labels": list(model.labels)} for model in models]
    return render(request, "labeling/dataset_duplicates.html", context)


@workspace_role_required("annotator")
@require_GET
def dataset_duplicates_progress(request: HttpRequest, dataset_id: int):
    """The scan panel for htmx polling (the page otherwise); a finished scan reloads the page with its groups."""
    dataset = _dataset_or_404(request, dataset_id)
    threshold, _ = _threshold(request, request.GET)
    if not request.htmx:
        return redirect(_page_url(dataset.id, threshold))
    try:
        context = _scan_context(dataset, threshold)
    except ApiError:
        context = {"dataset": dataset, "threshold": threshold, "scan": None, "scan_running": False}
    response = render(request, "labeling/partials/_duplicate_scan.html", context)
    if not context["scan_running"]:
        response["HX-Refresh"] = "true"
    return response


@workspace_role_required("lead")
@require_POST
def dataset_duplicates_scan(request: HttpRequest, dataset_id: int):
    """Try a failed computation again."""
    dataset = _dataset_or_404(request, dataset_id)
    threshold, _ = _threshold(request, request.POST)
    try:
        duplicates_services.duplicate_scan_request(dataset=dataset, threshold=threshold, retry_failed=True)
    except ApiError as exc:
        messages.error(request, exc.message)
    return redirect(_page_url(dataset.id, threshold))


def _group_index(raw) -> int | None:
    return int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 10 else None


@workspace_role_required("lead")
@require_POST
def dataset_duplicates_exclude(request: HttpRequest, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    threshold, threshold_error = _threshold(request, request.POST)
    exclude = request.POST.get("exclude", "1") != "0"
    group = _group_index(request.POST.get("group"))
    if threshold_error:
        messages.error(request, threshold_error)
        return redirect(_page_url(dataset.id, threshold))
    try:
        result = duplicates_services.duplicates_exclude(dataset=dataset, threshold=threshold, exclude=exclude,
                                                        groups=None if group is None else [group], user=request.user)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        if exclude:
            messages.success(request, f"Excluded {result['excluded']} duplicate records from the recommendation pool "
                                      f"(one record of each of {result['groups']} groups stays).")
        else:
            messages.success(request, f"Put {result['restored']} records back into the recommendation pool.")
    return redirect(_page_url(dataset.id, threshold, request.POST.get("page")))


@workspace_role_required("lead")
@require_POST
def dataset_duplicates_label(request: HttpRequest, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    threshold, threshold_error = _threshold(request, request.POST)
    group = _group_index(request.POST.get("group"))
    model_part, _, label = (request.POST.get("choice") or "").partition(":")
    model = (ClassificationModel.objects.filter(dataset=dataset, pk=int(model_part)).first()
             if model_part.isascii() and model_part.isdigit() and len(model_part) < 18 else None)
    if threshold_error or group is None or model is None or not label:
        messages.error(request, threshold_error or "Choose a group and a model's label.")
        return redirect(_page_url(dataset.id, threshold, request.POST.get("page")))
    try:
        count = duplicates_services.duplicates_group_label(model=model, dataset=dataset, threshold=threshold, group=group,
                                                           label=label, user=request.user)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Labeled the {count} records of group {group + 1} “{label}” for {model.name}.")
    return redirect(_page_url(dataset.id, threshold, request.POST.get("page")))
