"""Browser pages of the labeling loop: the keyboard labeling page and the training panel.

The labeling page is one full render; after that `static/labelf/labeling.js` draws the next record
from `label_next` (an HTML partial, so Django escapes every text), posts labels, skips and undos, and
refreshes the counter from the JSON these answer. Every endpoint uses the browser session (the /v2
API needs a key) and the same services as the API.
"""
from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from labelf_studio.api import ApiError
from labelf_studio.workspaces.models import role_at_least
from labelf_studio.workspaces.permissions import workspace_role_required
from models_app.models import ClassificationModel, ModelStatus
from models_app.training_services import learning_curve, train_request

from . import queue
from .models import Job, JobKind, JobStatus

# Keys for labels in order: 1-9, then letters except the command keys s (skip) and u (undo).
LABEL_KEYS = [str(d) for d in range(1, 10)] + [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in "su"]
REASON_TEXT = {
    "uncertain": "The model cannot decide between its two best labels.",
    "diverse": "Unlike the records labeled so far: it covers a new part of the data.",
    "rare-class": "Probably a label with few examples yet.",
    "evaluation": "A random evaluation sample: measures the model, never trained on.",
}


def _model_or_404(request: HttpRequest, model_id: int) -> ClassificationModel:
    model = (ClassificationModel.objects.select_related("latest_version")
             .filter(pk=model_id, workspace=request.current_workspace).first())
    if model is None:
        raise Http404("No such model")
    return model


def _error_json(exc: ApiError) -> JsonResponse:
    return JsonResponse({"status": exc.status, "error_code": exc.error_code, "message": exc.message}, status=exc.status)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _stats(model: ClassificationModel) -> dict:
    version = model.latest_version
    metrics = (version.metrics or {}) if version else {}
    training = (Job.objects.filter(model=model, kind=JobKind.TRAIN, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
                .order_by("created_at").values_list("status", flat=True).first())
    return {"labeled_total": queue.labeled_total_for(model=model), "version": version.number if version else None,
            "accuracy": metrics.get("accuracy"), "evaluation": metrics.get("evaluation"), "training": training}


def _record_context(model: ClassificationModel, item) -> dict:
    # A queue ranked before a label left the model's set may predict that label: it is not offered (Enter would
    # submit a label the model refuses), and the record shows as having no prediction.
    predicted = item.predicted_label if item and item.predicted_label in model.labels else ""
    # Evaluation records are labeled blind: an annotator shown the model's guess (and an Enter that accepts it)
    # agrees with it more often than one who is not, and the accuracy measured on those labels would be inflated.
    blind = bool(item) and item.reason == "evaluation"
    if blind:
        predicted = ""
    return {"model": model, "item": item, "record": item.record if item else None, "predicted": predicted, "blind": blind,
            "reason_text": REASON_TEXT.get(item.reason, "") if item else "",
            "confidence_percent": round(item.confidence * 100) if item else None}


def _next_item(model: ClassificationModel, user, exclude: set[int]):
    # The user's own leases come first (in queue order); ask for enough to get past the excluded ones.
    lease = queue.recommendations_lease(model=model, user=user, limit=min(len(exclude) + 1, queue.MAX_RECOMMENDATIONS_PER_CALL))
    return next((item for item in lease.items if item.record_id not in exclude), None)


@workspace_role_required("annotator")
@require_GET
def label_page(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    filter_mode = len(model.labels) > len(LABEL_KEYS)
    # With more labels than keys every key types into the filter box: no label shows a key it does not answer.
    labels = [{"name": name, "key": "" if filter_mode else LABEL_KEYS[i],
               "description": model.label_descriptions.get(name, "")} for i, name in enumerate(model.labels)]
    archived = model.status == ModelStatus.ARCHIVED
    item = None if archived else _next_item(model, request.user, set())
    return render(request, "labeling/label_page.html", {
        **_record_context(model, item), "labels": labels, "filter_mode": filter_mode,
        "stats": _stats(model), "archived": archived, "is_lead": role_at_least(request.membership.role, "lead"),
    })


@workspace_role_required("annotator")
@require_GET
def label_next(request: HttpRequest, model_id: int):
    """The partial of the next record for this user, not one of `exclude` (the ones the page holds)."""
    model = _model_or_404(request, model_id)
    exclude = {n for n in (_int(v) for v in request.GET.get("exclude", "").split(",")) if n is not None}
    try:
        item = _next_item(model, request.user, exclude)
    except ApiError as exc:
        return _error_json(exc)
    return render(request, "labeling/label_record.html", _record_context(model, item))


@workspace_role_required("annotator")
@require_POST
def label_submit(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    item = {"record_id": _int(request.POST.get("record_id")), "label": request.POST.get("label")}
    duration = _int(request.POST.get("duration_ms"))
    if duration is not None:
        item["duration_ms"] = max(duration, 0)
    try:
        result = queue.labels_submit(model=model, labels=[item], user=request.user)
    except ApiError as exc:
        return _error_json(exc)
    return JsonResponse({"accepted": result.accepted, "labeled_total": result.labeled_total, "stats": _stats(model)})


@workspace_role_required("annotator")
@require_POST
def label_skip(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    released = queue.recommendation_skip(model=model, user=request.user, record_id=_int(request.POST.get("record_id")) or 0)
    return JsonResponse({"released": released})


@workspace_role_required("annotator")
@require_POST
def label_undo(request: HttpRequest, model_id: int):
    """Withdraws the user's last label on this model; answers the record's partial (leased back) or 204."""
    model = _model_or_404(request, model_id)
    try:
        record = queue.annotation_undo_last(model=model, user=request.user)
    except ApiError as exc:
        return _error_json(exc)
    if record is None:
        return HttpResponse(status=204)
    item = queue.recommendation_for(model=model, user=request.user, record_id=record.id)
    if item is None:  # the record kept an older label (someone else's): show it, though it is not in the queue
        return HttpResponse(status=204)
    return render(request, "labeling/label_record.html", _record_context(model, item))


@workspace_role_required("annotator")
@require_GET
def label_stats(request: HttpRequest, model_id: int):
    return JsonResponse(_stats(_model_or_404(request, model_id)))


# --- training panel ---------------------------------------------------------------------------------

def _curve_svg_points(points: list[dict], width: int = 320, height: int = 120) -> dict:
    """Polyline coordinates of accuracy and macro-F1 against labels, for an inline SVG."""
    usable = [p for p in points if p.get("accuracy") is not None]
    if not usable:
        return {}
    most = max(p["labels"] for p in usable) or 1

    def line(key):
        return " ".join(f"{round(10 + (width - 20) * p['labels'] / most, 1)},{round(height - 10 - (height - 20) * (p[key] or 0), 1)}"
                        for p in usable)

    def dots(key):  # a marker per version: versions trained on the same labels would otherwise draw no line
        return [{"x": round(10 + (width - 20) * p["labels"] / most, 1), "y": round(height - 10 - (height - 20) * (p[key] or 0), 1),
                 "title": f"version {p['version']}: {p[key]:.3f} at {p['labels']} labels"} for p in usable]

    return {"width": width, "height": height, "accuracy": line("accuracy"), "f1": line("f1_macro"), "max_labels": most,
            "accuracy_dots": dots("accuracy"), "f1_dots": dots("f1_macro")}


# Below this many evaluation records, a version's accuracy moves by several points with each record.
FEW_EVALUATION_RECORDS = 30


def _training_context(request: HttpRequest, model: ClassificationModel, message: str = "", error: str = "") -> dict:
    points = learning_curve(model=model)
    newest = model.versions.order_by("-number").only("number", "details").first()
    stability = (newest.details or {}).get("stability") if newest else None
    active = (Job.objects.filter(model=model, kind=JobKind.TRAIN, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
              .order_by("created_at").first())
    last = Job.objects.filter(model=model, kind=JobKind.TRAIN).order_by("-created_at", "-id").first()
    newest_point = points[-1] if points else None
    few_evaluation = (newest_point if newest_point and newest_point.get("evaluation") == "holdout"
                      and newest_point.get("evaluated_on") is not None
                      and newest_point["evaluated_on"] < FEW_EVALUATION_RECORDS else None)
    return {"model": model, "points": points, "svg": _curve_svg_points(points), "stability": stability,
            "few_evaluation": few_evaluation,
            "active_job": active, "last_job": last, "message": message, "error": error,
            "is_lead": role_at_least(request.membership.role, "lead"), "labeled_total": queue.labeled_total_for(model=model)}


def _render_training(request: HttpRequest, context: dict, status: int = 200):
    if request.htmx:
        # htmx swaps only 2xx answers; the panel itself shows the error.
        return render(request, "labeling/label_training.html", context)
    return render(request, "labeling/label_training_page.html", context, status=status)


@workspace_role_required("annotator")
def training_panel(request: HttpRequest, model_id: int):
    """GET: the learning curve, the stopping signal and (for leads) the train button. POST (lead): train."""
    model = _model_or_404(request, model_id)
    if request.method == "POST":
        if not role_at_least(request.membership.role, "lead"):
            return _render_training(request, _training_context(request, model, error="Only a lead can start training."), 403)
        try:
            job, created = train_request(model=model, type=request.POST.get("type", "active-learning"), user=request.user)
        except ApiError as exc:
            return _render_training(request, _training_context(request, model, error=exc.message), exc.status)
        message = f"Training job {job.id} queued." if created else f"Training job {job.id} was already queued; it includes these labels."
        if not request.htmx:
            return redirect("label_training", model_id=model.id)
        return _render_training(request, _training_context(request, model, message=message))
    if request.method != "GET":
        return HttpResponse(status=405)
    context = _training_context(request, model)
    response = _render_training(request, context)
    # The panel polls while a job runs (`?polling=<job id>`). When that job has finished, the model page's other
    # parts (type, version, metrics, try-it box) are stale: reload the page once. The labeling page only swaps
    # the panel: an annotator's record must not be reloaded away.
    if (request.htmx and request.GET.get("polling") and context["active_job"] is None
            and request.htmx.current_url_abs_path == reverse("model_detail", args=[model.id])):
        response["HX-Refresh"] = "true"
    return response
