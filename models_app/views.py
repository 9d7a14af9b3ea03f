"""Browser pages for models: registry, describe-and-classify form, model page with try-it box, deploy/archive."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from labelf_studio.api import ApiError
from labelf_studio.workspaces.models import role_at_least
from labelf_studio.workspaces.permissions import workspace_role_required
from labeling.models import Dataset, DatasetStatus, Job, JobKind, JobStatus
from labeling.selectors import label_distribution

from . import inference, selectors, services
from .models import ModelStatus, ModelType


def _model_or_404(request, model_id: int):
    model = selectors.model_get(workspace=request.current_workspace, model_id=model_id) if model_id <= services.MAX_ID else None
    if model is None:
        raise Http404("Model not found")
    return model


@workspace_role_required("annotator")
def model_list(request):
    models = selectors.models_for_workspace(workspace=request.current_workspace)
    rows = [{"model": model, "object": _with_datetimes(selectors.model_to_dict(model))} for model in models]
    return render(request, "models_app/model_list.html", {"rows": rows})


def _with_datetimes(obj: dict) -> dict:
    """The API object's ISO timestamps as datetimes, so pages format them like every other date."""
    obj["last_trained_at"] = parse_datetime(obj["last_trained"]) if obj.get("last_trained") else None
    return obj


def _label_rows_from_post(post) -> list[dict]:
    """The form's label rows (in their order) followed by the pasted labels, one per line."""
    rows = []
    for name, description in zip(post.getlist("label_name"), post.getlist("label_description")):
        if name.strip() or description.strip():
            rows.append({"name": name.strip(), "description": description.strip()})
    for line in post.get("pasted_labels", "").splitlines():
        if line.strip():
            rows.append({"name": line.strip(), "description": ""})
    return rows


@workspace_role_required("lead")
def model_create(request):
    datasets = Dataset.objects.filter(workspace=request.current_workspace, status=DatasetStatus.READY)
    context = {"datasets": datasets, "rows": [{"name": "", "description": ""}] * 3, "error": None, "values": {}}
    if request.method == "POST":
        rows = _label_rows_from_post(request.POST)
        context.update(rows=rows or context["rows"], values=request.POST)
        raw_dataset = request.POST.get("dataset", "")
        dataset = (datasets.filter(pk=int(raw_dataset)).first()
                   if raw_dataset.isdigit() and int(raw_dataset) <= services.MAX_ID else None)
        if dataset is None:
            context["error"] = "Choose a ready dataset."
        else:
            try:
                model = services.model_create(workspace=request.current_workspace, dataset=dataset,
                                              name=request.POST.get("name", ""), labels=rows, user=request.user)
            except ApiError as exc:
                context["error"] = exc.message
            else:
                messages.success(request, f"Model “{model.name}” is ready: version 1 classifies from your descriptions.")
                return redirect("model_detail", model_id=model.id)
        return render(request, "models_app/model_create.html", context, status=400)
    elif request.method != "GET":
        return HttpResponseNotAllowed(["GET", "POST"])
    # "Describe a model" from a dataset page: that dataset is chosen and the labels it was imported
    # with become the rows (most frequent first, so they get the first keys), to describe or trim.
    raw_dataset = request.GET.get("dataset", "")
    chosen = (datasets.filter(pk=int(raw_dataset)).first()
              if raw_dataset.isdigit() and int(raw_dataset) <= services.MAX_ID else None)
    if chosen is not None:
        context["values"] = {"dataset": str(chosen.id)}
        names = [row["label"] for row in label_distribution(dataset=chosen)["labels"]]
        if names:
            context.update(rows=[{"name": name, "description": ""} for name in names], labels_from=chosen)
    context["processing"] = Dataset.objects.filter(workspace=request.current_workspace, status=DatasetStatus.PROCESSING)
    return render(request, "models_app/model_create.html", context)


# The predictions summary takes seconds to minutes; a version still without one after this long lost its
# task (a failed or dropped job), and the page stops polling for it instead of asking every 2 s forever.
SUMMARY_OVERDUE = timedelta(minutes=30)


def _label_editor_rows(model, rows: list[dict] | None = None) -> list[dict]:
    """The model page's label editor: the model's labels, or the rows a lead posted (kept when saving failed).
    A label the model has keeps its name and carries its record count, for the removal's confirmation."""
    from labeling.queue import labeled_counts

    counts = dict(zip(model.labels, labeled_counts(model=model, split=None).tolist()))  # both splits
    if rows is None:
        rows = [{"name": name, "description": model.label_descriptions.get(name, "")} for name in model.labels]
    return [{**row, "existing": row["name"] in model.labels, "records": counts.get(row["name"], 0)} for row in rows]


def _detail_context(request, model) -> dict:
    context = selectors.model_page(model=model)
    _with_datetimes(context["object"])
    context["can_try"] = model.status != ModelStatus.ARCHIVED and context["version"] is not None
    # Leads and admins edit the label set (not of an archived model); annotators see it read-only.
    if model.status != ModelStatus.ARCHIVED and role_at_least(request.membership.role, "lead"):
        context["label_rows"] = _label_editor_rows(model)
    version = context["version"]
    context["summary_overdue"] = bool(version is not None and not context.get("summary")
                                      and version.created_at < timezone.now() - SUMMARY_OVERDUE)
    return context


@workspace_role_required("annotator")
def model_detail(request, model_id: int):
    model = _model_or_404(request, model_id)
    return render(request, "models_app/model_detail.html", _detail_context(request, model))


@workspace_role_required("annotator")
def model_predictions(request, model_id: int):
    """The sample predictions and predicted label distribution (polled by the page until computed)."""
    model = _model_or_404(request, model_id)
    context = _detail_context(request, model)
    template = "models_app/partials/_predictions.html" if request.htmx else "models_app/model_detail.html"
    return render(request, template, context)


@workspace_role_required("annotator")
@require_POST
def model_try(request, model_id: int):
    """The lead's preview: classifies one text with the version the page shows; not inference, no quota."""
    model = _model_or_404(request, model_id)
    version = selectors.shown_version(model)
    text = request.POST.get("text", "")
    result = {"text": text, "error": None, "prediction": None}
    if model.status == ModelStatus.ARCHIVED or version is None:
        result["error"] = "This model is archived; deploy it again to try it."
    elif not text.strip():
        result["error"] = "Type a text to classify."
    elif len(text) > settings.LABELF["MAX_TEXT_CHARS"]:
        result["error"] = f"At most {settings.LABELF['MAX_TEXT_CHARS']} characters."
    else:
        prediction = inference.classify(version=version, texts=[text], threshold=model.confidence_threshold)[0]
        prediction["ranked"] = sorted(prediction["scores"].items(), key=lambda item: -item[1])
        result["prediction"] = prediction
    if request.htmx:
        return render(request, "models_app/partials/_try_result.html", {"try": result, "model": model})
    context = _detail_context(request, model)
    context["try"] = result
    return render(request, "models_app/model_detail.html", context)


@workspace_role_required("admin")
@require_POST
def model_deploy(request, model_id: int):
    model = _model_or_404(request, model_id)
    raw = request.POST.get("version", "")
    try:
        services.model_deploy(model=model, version=int(raw) if raw.isdigit() else None, user=request.user)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        model.refresh_from_db()
        pinned = f"pinned to version {model.pinned_version}" if model.pinned_version else "following its newest version"
        messages.success(request, f"Deployed: the API now serves version {model.served_version.number} ({pinned}).")
    return redirect("model_detail", model_id=model.id)


@workspace_role_required("admin")
@require_POST
def model_archive(request, model_id: int):
    model = _model_or_404(request, model_id)
    services.model_archive(model=model, user=request.user)
    messages.success(request, "Archived: inference answers 409 MODEL_ARCHIVED until the model is deployed again.")
    return redirect("model_detail", model_id=model.id)


@workspace_role_required("lead")
@require_POST
def model_settings(request, model_id: int):
    model = _model_or_404(request, model_id)
    try:
        threshold = float(request.POST.get("confidence_threshold", ""))
    except ValueError:
        messages.error(request, "The confidence threshold must be a number between 0 and 1.")
        return redirect("model_detail", model_id=model.id)
    try:
        services.model_update(model=model, name=request.POST.get("name") or None, confidence_threshold=threshold,
                              user=request.user)
    except ApiError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Saved.")
    return redirect("model_detail", model_id=model.id)


@workspace_role_required("lead")
@require_POST
def model_labels(request, model_id: int):
    """Saves the label editor: the model's full new ordered label set with its descriptions (services.model_update).
    A describe-and-classify model gets a new version at once; a trained one keeps serving its version until the
    retrain this requests. Any error keeps the lead's rows on the page and saves nothing."""
    model = _model_or_404(request, model_id)
    rows = _label_rows_from_post(request.POST)
    before = (list(model.labels), dict(model.label_descriptions), model.latest_version_id)
    try:
        updated = services.model_update(model=model, labels=rows, user=request.user)
    except ApiError as exc:
        context = _detail_context(request, model)
        context.update(label_rows=_label_editor_rows(model, rows), labels_error=f"Not saved: {exc.message}")
        return render(request, "models_app/model_detail.html", context, status=400)
    if (list(updated.labels), dict(updated.label_descriptions)) == before[:2]:
        messages.info(request, "Nothing to save: the labels are unchanged.")
    elif updated.latest_version_id != before[2]:
        messages.success(request, f"Labels saved; version {updated.latest_version.number} classifies with them.")
    elif list(updated.labels) != before[0]:
        training = Job.objects.filter(model=updated, kind=JobKind.TRAIN, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        messages.success(request, "Labels saved. The trained version keeps serving with its own labels until "
                                  + ("the training on the new label set (requested now) finishes."
                                     if training.exists() else "the model is trained on records with the new labels."))
    else:
        # A trained model's version keeps its scores; the descriptions shape the next training's prior.
        messages.success(request, "Descriptions saved." if updated.type == ModelType.DESCRIBE_AND_CLASSIFY else
                         "Descriptions saved; the next training uses them for labels with few examples.")
    return redirect("model_detail", model_id=model.id)
