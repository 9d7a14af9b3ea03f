"""Browser pages for datasets: list and upload, detail with progress, records, search, export, delete."""
from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from labelf_studio.workspaces.permissions import workspace_role_required

from . import selectors, services
from .api import export_response
from .importers import SPLITS, ImportFileError
from .models import DatasetStatus, Record

RECORDS_PER_PAGE = 50
SEMANTIC_RESULTS = 50


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="CSV, TSV or JSONL, UTF-8, with a text column")
    text_column = forms.CharField(required=False, max_length=200, label="Text column",
                                  widget=forms.TextInput(attrs={"placeholder": "text"}))
    label_column = forms.CharField(required=False, max_length=200, label="Label column (optional)",
                                   widget=forms.TextInput(attrs={"placeholder": "label"}))


class RecordFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Text contains")
    semantic = forms.CharField(required=False, label="Meaning like", max_length=1000)
    labeled = forms.ChoiceField(required=False, choices=[("", "All"), ("yes", "Labeled"), ("no", "Unlabeled")])
    label = forms.CharField(required=False)
    split = forms.ChoiceField(required=False, choices=[("", "Any split")] + [(s, s) for s in SPLITS])
    meta_key = forms.CharField(required=False, label="Metadata key")
    meta_value = forms.CharField(required=False, label="Metadata value")
    similar_to = forms.IntegerField(required=False, widget=forms.HiddenInput)


def _dataset_or_404(request, dataset_id: int):
    dataset = selectors.dataset_get(workspace=request.current_workspace, dataset_id=dataset_id)
    if dataset is None:
        raise Http404("No such dataset")
    return dataset


def _list_page(request, form, status=200, columns_open=False):
    datasets = list(selectors.dataset_list(workspace=request.current_workspace))
    return render(request, "labeling/dataset_list.html", {
        "datasets": [(d, selectors.dataset_progress(d)) for d in datasets], "form": form,
        "max_upload_mb": settings.LABELF["MAX_UPLOAD_BYTES"] // (1024 * 1024),
        "columns_open": columns_open or bool(form.is_bound and (form.data.get("text_column") or form.data.get("label_column"))),
    }, status=status)


@workspace_role_required("annotator")
def dataset_list(request):
    return _list_page(request, DatasetUploadForm())


@workspace_role_required("lead")
@require_POST
def dataset_upload(request):
    form = DatasetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _list_page(request, form, status=400)
    try:
        dataset = services.dataset_create_from_upload(
            workspace=request.current_workspace, name=form.cleaned_data["name"], uploaded_file=form.cleaned_data["file"],
            user=request.user, columns={"text": form.cleaned_data["text_column"], "label": form.cleaned_data["label_column"]})
    except services.UploadTooLarge as exc:
        form.add_error("file", str(exc))
        return _list_page(request, form, status=413)
    except ImportFileError as exc:
        form.add_error("file", str(exc))
        # A header that lacks the expected columns is answered by the column fields: show them.
        return _list_page(request, form, status=400, columns_open="column" in str(exc) or "is missing" in str(exc))
    messages.success(request, f"Importing {dataset.name}: the records appear here as soon as the import finishes.")
    return redirect("dataset_detail", dataset_id=dataset.id)


def _progress_context(dataset) -> dict:
    return {"dataset": dataset, "progress_percent": round(100 * selectors.dataset_progress(dataset)),
            "jobs": selectors.dataset_jobs(dataset=dataset)}


def _records_context(request, dataset) -> dict:
    form = RecordFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    context = {"filter_form": form, "dataset": dataset, "semantic": False, "search_error": None}
    similar_to = filters.get("similar_to")
    semantic = (filters.get("semantic") or "").strip()
    if similar_to or semantic:
        context["semantic"] = True
        if dataset.status != DatasetStatus.READY:
            context["search_error"] = "Semantic search works once the dataset is ready (its vectors are still being computed)."
            context["hits"] = []
        elif similar_to:
            record = Record.objects.filter(dataset=dataset, pk=similar_to).first()
            if record is None:
                raise Http404("No such record")
            context["similar_record"] = record
            context["hits"] = selectors.records_similar_to(dataset=dataset, record=record, limit=SEMANTIC_RESULTS)
        else:
            context["hits"] = selectors.dataset_search(dataset=dataset, query=semantic, limit=SEMANTIC_RESULTS)
        return context
    labeled = {"yes": True, "no": False}.get(filters.get("labeled") or "")
    record_filters = selectors.RecordFilters(
        labeled=labeled, label=filters.get("label") or None, split=filters.get("split") or None,
        metadata_key=filters.get("meta_key") or None,
        metadata_value=filters.get("meta_value") if filters.get("meta_key") else None,
        q=(filters.get("q") or "").strip() or None)
    paginator = Paginator(selectors.record_list(dataset=dataset, filters=record_filters), RECORDS_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    kept = {k: v for k, v in request.GET.items() if k != "page" and v}
    context.update(page=page, query_string=urlencode(kept))
    return context


@workspace_role_required("annotator")
def dataset_detail(request, dataset_id: int):
    """The full page, or only the records table for htmx requests (filters, pages, searches)."""
    dataset = _dataset_or_404(request, dataset_id)
    if request.htmx:
        return render(request, "labeling/partials/_records_table.html", _records_context(request, dataset))
    return _detail_page(request, dataset)


def _detail_page(request, dataset):
    context = _records_context(request, dataset)
    context.update(_progress_context(dataset))
    context["distribution"] = selectors.label_distribution(dataset=dataset)
    return render(request, "labeling/dataset_detail.html", context)


@workspace_role_required("annotator")
def dataset_progress(request, dataset_id: int):
    """The progress panel for htmx polling (full page otherwise); a finished job reloads the page."""
    dataset = _dataset_or_404(request, dataset_id)
    if not request.htmx:
        return _detail_page(request, dataset)
    response = render(request, "labeling/partials/_dataset_progress.html", _progress_context(dataset))
    if dataset.status != DatasetStatus.PROCESSING:
        response["HX-Refresh"] = "true"
    return response


@workspace_role_required("lead")
def dataset_export(request, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        raise Http404("Unknown export format")
    return export_response(dataset=dataset, fmt=fmt)


@workspace_role_required("admin")
@require_POST
def dataset_delete(request, dataset_id: int):
    dataset = _dataset_or_404(request, dataset_id)
    name = dataset.name
    services.dataset_delete(dataset=dataset, actor=request.user)
    messages.success(request, f"Deleted {name} with its records, vectors and files.")
    return redirect("dataset_list")
