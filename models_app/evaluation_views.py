"""Browser pages: a version's evaluation (metrics, confusion matrix, threshold, calibration), the records
behind a confusion-matrix cell, saving the confidence threshold, and comparing two versions."""
from __future__ import annotations

import math

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from labelf_studio.api import ApiError, invalid_field
from labelf_studio.workspaces.permissions import workspace_role_required

from . import evaluation_selectors as evaluation
from . import selectors, services


def _model_or_404(workspace, raw_id) -> object:
    model_id = _number(raw_id)
    model = selectors.model_get(workspace=workspace, model_id=model_id) if model_id is not None else None
    if model is None:
        raise Http404("Model not found")
    return model


def _number(raw) -> int | None:
    """A positive id or version number from a URL, or None."""
    if isinstance(raw, int):
        return raw if 0 < raw <= services.MAX_ID else None
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) <= services.MAX_ID else None


def _version_or_404(model, raw):
    if raw in (None, ""):
        version = evaluation.version_for_page(model=model, number=None)
    else:
        number = _number(raw)
        version = evaluation.version_for_page(model=model, number=number) if number is not None else None
    if version is None:
        raise Http404("Version not found")
    return version


def _target_percent(raw: str | None) -> tuple[float | None, str | None]:
    if raw in (None, ""):
        return None, None
    try:
        value = float(raw)
    except ValueError:
        return None, "Type a precision target in percent, e.g. 95."
    if not math.isfinite(value) or not 0 <= value <= 100:
        return None, "The precision target must be between 0 and 100 percent."
    return value, None


@workspace_role_required("annotator")
def model_evaluation(request, model_id: int):
    model = _model_or_404(request.current_workspace, model_id)
    version = _version_or_404(model, request.GET.get("version"))
    context = evaluation.evaluation_page(model=model, version=version)
    target, target_error = _target_percent(request.GET.get("target"))
    context.update(target=target, target_error=target_error, target_answer=None)
    if target is not None and context["curve"]:
        context["target_answer"] = evaluation.threshold_answer(context["curve"], min_precision=target / 100)
    return render(request, "models_app/evaluation_page.html", context)


@workspace_role_required("annotator")
def model_evaluation_cell(request, model_id: int):
    """The evaluation records behind one confusion-matrix cell (a partial for htmx, else a page)."""
    model = _model_or_404(request.current_workspace, model_id)
    version = _version_or_404(model, request.GET.get("version"))
    gold, predicted = request.GET.get("gold", ""), request.GET.get("predicted", "")
    if gold not in version.labels or predicted not in version.labels:
        raise Http404("No such label in this version")
    context = evaluation.confusion_cell(model=model, version=version, gold=gold, predicted=predicted)
    template = ("models_app/partials/_evaluation_cell.html" if request.htmx
                else "models_app/evaluation_cell.html")
    return render(request, template, context)


@workspace_role_required("lead")
@require_POST
def model_threshold_save(request, model_id: int):
    """Sets the model's confidence threshold (inference's `above_threshold` uses it from the next request)."""
    model = _model_or_404(request.current_workspace, model_id)
    raw = request.POST.get("confidence_threshold", "").strip()
    try:
        value = float(raw)
    except ValueError:
        value = None
    try:
        if value is None:
            raise invalid_field("confidence_threshold: expected a number")
        services.model_update(model=model, confidence_threshold=value, user=request.user)
    except ApiError:
        messages.error(request, f"Not saved: the confidence threshold must be a number between 0 and 1 "
                                f"(you entered “{raw[:40]}”). The threshold stays {model.confidence_threshold:g}.")
    else:
        messages.success(request, f"Saved: the threshold is now {value:g}. Predictions with a confidence of at least "
                                  f"{value:g} count as above the threshold from the next request on.")
    url = reverse("model_evaluation", args=[model.id])
    version = _number(request.POST.get("version"))
    return redirect(f"{url}?version={version}" if version else url)


@workspace_role_required("annotator")
def model_compare(request, model_id: int):
    model_a = _model_or_404(request.current_workspace, model_id)
    versions = list(model_a.versions.order_by("-number").values_list("number", flat=True))
    raw_other = request.GET.get("other_model", "")
    model_b = _model_or_404(request.current_workspace, raw_other) if raw_other else model_a
    other_models = list(selectors.models_for_workspace(workspace=request.current_workspace)
                        .filter(dataset_id=model_a.dataset_id).exclude(pk=model_a.pk).values("id", "name"))
    same_model = model_b.pk == model_a.pk
    b_versions = versions if same_model else list(model_b.versions.order_by("-number").values_list("number", flat=True))
    # Defaults: one model's newest version against the one before it; two models' newest versions.
    default_a = versions[1] if same_model and len(versions) > 1 else (versions[0] if versions else None)
    version_a = _version_or_404(model_a, request.GET.get("a") or default_a)
    requested_b = _number(request.GET.get("b"))
    notice = None
    if not same_model and requested_b is not None and requested_b not in b_versions and b_versions:
        # The form keeps B's version number when the lead switches model B; show that model's newest instead.
        notice = f"{model_b.name} has no version {requested_b}; showing its newest, version {b_versions[0]}."
        requested_b = b_versions[0]
    version_b = _version_or_404(model_b, requested_b or request.GET.get("b") or (b_versions[0] if b_versions else None))
    context = {"model": model_a, "other_model": None if same_model else model_b, "versions": versions,
               "b_versions": b_versions, "other_models": other_models, "version_a": version_a,
               "version_b": version_b, "error": None, "notice": notice}
    try:
        context["result"] = evaluation.comparison(model_a=model_a, version_a=version_a, model_b=model_b,
                                                  version_b=version_b, include_rows=True)
    except evaluation.NotComparable as exc:
        context["result"] = None
        context["error"] = str(exc)
    else:
        context["curves"] = {"a": evaluation.learning_curve(model=model_a),
                             "b": None if same_model else evaluation.learning_curve(model=model_b)}
        context["chart"] = _compare_chart_data(context)
        context["heatmap_a"] = evaluation.heatmap(version_a.metrics)
        context["heatmap_b"] = evaluation.heatmap(version_b.metrics)
    return render(request, "models_app/evaluation_compare.html", context, status=400 if context["error"] else 200)


def _compare_chart_data(context) -> dict:
    result = context["result"]
    return {
        "labels": result["labels"],
        "deltas": [result["per_class"][label]["delta"] for label in result["labels"]],
        "curves": [{"name": context["model"].name, "points": context["curves"]["a"],
                    "highlight": [context["version_a"].number] + ([context["version_b"].number] if context["other_model"] is None else [])}]
                  + ([{"name": context["other_model"].name, "points": context["curves"]["b"],
                       "highlight": [context["version_b"].number]}] if context["other_model"] else []),
    }
