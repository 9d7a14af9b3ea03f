"""Browser pages for leads: the team's agreement (with the overlap settings) and the review queue.

The review page is one full render; after that `static/labelf/review.js` posts decisions and draws the
next record in conflict from `review_next` (an HTML partial, so Django escapes every text), with the
keys of the labeling page. Both pages need the lead role (an annotator gets the 403 page) and use the
same selectors and services as the /v2 API (labeling/team_selectors.py, labeling/review.py).
"""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from labelf_studio.api import ApiError
from labelf_studio.workspaces.permissions import workspace_role_required
from models_app.models import ClassificationModel

from . import review, team_selectors
from .queue_views import LABEL_KEYS, _int

# Krippendorff's guideline for alpha: rely on data at 0.8 or more, draw tentative conclusions from 0.667.
ALPHA_RELIABLE, ALPHA_TENTATIVE = 0.8, 0.667
WINDOW_CHOICES = [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("all", "All time")]


def _model_or_404(request: HttpRequest, model_id: int) -> ClassificationModel:
    model = ClassificationModel.objects.filter(pk=model_id, workspace=request.current_workspace).first()
    if model is None:
        raise Http404("No such model")
    return model


def _strength(value: float | None) -> str:
    """A CSS class for a kappa/alpha cell: the colour says how far to trust it."""
    if value is None:
        return "agree-none"
    if value >= ALPHA_RELIABLE:
        return "agree-high"
    if value >= ALPHA_TENTATIVE:
        return "agree-mid"
    return "agree-low"


def _matrix(report: dict) -> dict:
    """Rows of the pairwise kappa matrix: one row per annotator, one cell per other annotator."""
    names = [a["annotator"]["name"] for a in report["annotators"]]
    cells = {}
    for pair in report["pairs"]:
        a, b = pair["a"]["name"], pair["b"]["name"]
        cells[(a, b)] = cells[(b, a)] = pair
    rows = []
    for a in names:
        row = []
        for b in names:
            pair = cells.get((a, b))
            row.append({"self": a == b, "kappa": pair["kappa"] if pair else None, "shared": pair["shared"] if pair else 0,
                        "css": _strength(pair["kappa"]) if pair else "agree-none"})
        rows.append({"name": a, "cells": row})
    return {"names": names, "rows": rows}


@workspace_role_required("lead")
@require_GET
def team_page(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    params = {key: request.GET.get(key) for key in ("window", "since", "until")}
    error = ""
    try:
        window = team_selectors.window_parse(**params)
    except ApiError as exc:
        error = exc.message
        window = team_selectors.window_parse(window="all")
    report = team_selectors.agreement_report(model=model, window=window)
    for row in report["per_class"]:
        row["css"] = _strength(row["agreement"])
    return render(request, "labeling/team_page.html", {
        "model": model, "report": report, "matrix": _matrix(report), "window": window, "error": error,
        "window_choices": WINDOW_CHOICES, "since_value": params["since"] or "", "until_value": params["until"] or "",
        "alpha_css": _strength(report["alpha"]), "alpha_reliable": ALPHA_RELIABLE, "alpha_tentative": ALPHA_TENTATIVE,
        "overlap_percent": round(model.overlap_share * 100, 1),
    }, status=400 if error else 200)


@workspace_role_required("lead")
@require_POST
def team_overlap(request: HttpRequest, model_id: int):
    """The overlap settings form of the team page (share in percent, annotators per overlap record)."""
    model = _model_or_404(request, model_id)
    try:
        percent = float(request.POST.get("overlap_percent", ""))
        annotators = int(request.POST.get("overlap_annotators", ""))
    except ValueError:
        messages.error(request, "Not saved: the share is a percentage (0-100) and the annotators a whole number (2-5).")
        return redirect("team_page", model_id=model.id)
    try:
        review.overlap_settings_update(model=model, share=percent / 100, annotators=annotators, user=request.user)
    except ApiError as exc:
        messages.error(request, f"Not saved: {exc.message}")
    else:
        messages.success(request, f"Saved: {percent:g}% of the queue goes to {annotators} annotators, "
                                  "from the next queue update on.")
    return redirect("team_page", model_id=model.id)


def _review_context(model: ClassificationModel, conflict) -> dict:
    votes = conflict.votes if conflict else {}
    labels = [{"name": name, "key": LABEL_KEYS[i] if i < len(LABEL_KEYS) else "", "votes": votes.get(name, 0),
               "description": model.label_descriptions.get(name, "")} for i, name in enumerate(model.labels)]
    return {"model": model, "conflict": conflict, "record": conflict.record if conflict else None, "labels": labels,
            "remaining": review.conflicts_for(model=model).count()}


def _exclude(request: HttpRequest) -> set[int]:
    return {n for n in (_int(v) for v in request.GET.get("exclude", "").split(",")) if n is not None}


@workspace_role_required("lead")
@require_GET
def review_page(request: HttpRequest, model_id: int):
    model = _model_or_404(request, model_id)
    return render(request, "labeling/review_page.html", _review_context(model, review.conflict_next(model=model)))


@workspace_role_required("lead")
@require_GET
def review_next(request: HttpRequest, model_id: int):
    """The partial of the next record in conflict, not one of `exclude` (skipped or just decided)."""
    model = _model_or_404(request, model_id)
    conflict = review.conflict_next(model=model, exclude=_exclude(request))
    return render(request, "labeling/review_record.html", _review_context(model, conflict))


@workspace_role_required("lead")
@require_POST
def review_decide(request: HttpRequest, model_id: int):
    """JSON: the decision, or the contract's error fields (409 names a decision another lead made first)."""
    model = _model_or_404(request, model_id)
    try:
        decision = review.review_decide(model=model, record_id=_int(request.POST.get("record_id")) or 0,
                                        label=request.POST.get("label"), user=request.user)
    except ApiError as exc:
        return JsonResponse({"status": exc.status, "error_code": exc.error_code, "message": exc.message}, status=exc.status)
    return JsonResponse({"record_id": decision.record.id, "label": decision.annotation.label,
                         "remaining": review.conflicts_for(model=model).count()})
