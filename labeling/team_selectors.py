"""The team's agreement figures for one model over a time window (reads; the maths is labeling/agreement.py).

What is measured
- Ratings are the labels annotators gave through this model (`Annotation.model`) in the window, a
  lead's review decisions excluded: per (annotator, record) the annotator's latest label. An annotator
  is a user, or an API key without a user.
- Records labeled by two or more annotators are the units: pairwise Cohen's kappa (over the records
  both labeled), Krippendorff's alpha over all of them, specific agreement per label, and each
  annotator's agreement with the consensus (the lead's decision where there is one, else a strict
  majority; units without either are not compared).
- Per annotator: labels given in the window (every annotation, relabels included), records labeled,
  and labels per hour: labels over the time spent labeling them (`agreement.labels_per_hour`: the
  time each record was on screen, or for labels sent without it, the gap since the previous label
  between 1 second and 5 minutes; labels of one batch upload have no time and are not counted).
- The window is `since` <= created_at < `until`; presets 24h, 7d, 30d, all.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from labelf_studio.api import invalid_field

from . import agreement
from .models import Annotation, Recommendation
from .review import conflicts_for
from .selectors import iso_utc

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "all": None}


@dataclass
class Window:
    since: datetime | None
    until: datetime | None
    preset: str | None  # the preset it came from, or None for explicit bounds


def _parse_moment(name: str, raw: str, *, end_of_day: bool = False) -> datetime:
    value = None
    try:
        day = parse_date(raw)  # a date alone (parse_datetime would read it as midnight)
        if day is not None:
            value = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
        else:
            value = parse_datetime(raw)
        if value is not None:
            value = value.replace(tzinfo=dt_timezone.utc) if timezone.is_naive(value) else value.astimezone(dt_timezone.utc)
    except (ValueError, OverflowError):  # not a date, or one at the calendar's edge (9999-12-31 + 1 day)
        value = None
    if value is None:
        raise invalid_field(f"{name}: expected an ISO 8601 date or time, e.g. 2026-03-15 or 2026-03-15T09:14:00Z")
    return value


def window_parse(*, window: str | None = None, since: str | None = None, until: str | None = None,
                 now: datetime | None = None) -> Window:
    """A preset (`24h`, `7d`, `30d`, `all`) or explicit bounds; an explicit bound wins over the preset's.
    A date without a time means the whole day (so `until=2026-03-15` includes the 15th)."""
    now = now or timezone.now()
    preset = None
    start = end = None
    if window not in (None, ""):
        if window not in WINDOWS:
            raise invalid_field(f"window: expected one of {', '.join(WINDOWS)}")
        preset = window
        start = now - WINDOWS[window] if WINDOWS[window] is not None else None
    if since not in (None, ""):
        start, preset = _parse_moment("since", since), None
    if until not in (None, ""):
        end, preset = _parse_moment("until", until, end_of_day=True), None
    if start is not None and end is not None and start >= end:
        raise invalid_field("until: must be after since")
    return Window(since=start, until=end, preset=preset if preset is not None else ("all" if start is end is None else None))


def _annotator_key(user_id, api_key_id) -> tuple:
    return ("user", user_id) if user_id is not None else ("key", api_key_id)


def _names(keys) -> dict:
    from django.contrib.auth import get_user_model

    from labelf_studio.workspaces.models import ApiKey

    users = dict(get_user_model().objects.filter(id__in=[i for kind, i in keys if kind == "user"]).values_list("id", "username"))
    api_keys = {k.id: k for k in ApiKey.objects.filter(id__in=[i for kind, i in keys if kind == "key" and i is not None])}
    names = {}
    for kind, ident in keys:
        if kind == "user":
            names[(kind, ident)] = users.get(ident, f"user {ident}")
        elif ident in api_keys:
            names[(kind, ident)] = f"API key {api_keys[ident].name or api_keys[ident].prefix}"
        else:
            names[(kind, ident)] = "deleted annotator"
    return names


def _annotator_dict(key: tuple, names: dict) -> dict:
    kind, ident = key
    return {"user_id": ident if kind == "user" else None, "api_key_id": ident if kind == "key" else None, "name": names[key]}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def agreement_report(*, model, window: Window) -> dict:
    """Everything the team page and `GET /v2/models/{id}/agreement` show (the API's answer, as a dict)."""
    annotations = Annotation.objects.filter(model=model, adjudicated=False)
    if window.since is not None:
        annotations = annotations.filter(created_at__gte=window.since)
    if window.until is not None:
        annotations = annotations.filter(created_at__lt=window.until)
    rows = annotations.order_by("created_at", "id").values_list("record_id", "user_id", "api_key_id", "label", "created_at",
                                                                "duration_ms")
    ratings: dict[tuple, dict[int, str]] = {}
    activity: dict[tuple, tuple[list, list]] = {}
    for record_id, user_id, api_key_id, label, created_at, duration_ms in rows.iterator(chunk_size=5000):
        key = _annotator_key(user_id, api_key_id)
        ratings.setdefault(key, {})[record_id] = label  # ascending order: the latest label wins
        times, durations = activity.setdefault(key, ([], []))
        times.append(created_at.timestamp())
        durations.append(duration_ms)

    units = {unit: values for unit, values in agreement.units_of(ratings).items() if len(values) >= 2}
    # Decisions are few (one per conflict): all of the dataset's, rather than an IN list as long as the units.
    final = {record_id: label for record_id, label in
             Annotation.objects.filter(record__dataset_id=model.dataset_id, adjudicated=True).order_by("created_at", "id")
             .values_list("record_id", "label") if record_id in units}
    names = _names(list(ratings))
    consensus = {score.annotator: score for score in agreement.agreement_with_consensus(ratings, final)}
    annotators = []
    for key in sorted(ratings, key=lambda k: names[k].lower()):
        times, durations = activity[key]
        rate, hours = agreement.labels_per_hour(times, durations)
        score = consensus[key]
        annotators.append({"annotator": _annotator_dict(key, names), "labels": len(times), "records": len(ratings[key]),
                           "labels_per_hour": _round(rate, 1), "hours": _round(hours, 3),
                           "agreement_with_consensus": _round(score.agreement), "compared": score.compared})
    ordered = {key: ratings[key] for key in sorted(ratings, key=lambda k: names[k].lower())}
    pairs = [{"a": _annotator_dict(p.a, names), "b": _annotator_dict(p.b, names), "shared": p.shared,
              "observed_agreement": _round(p.observed), "kappa": _round(p.kappa)}
             for p in agreement.pairwise_kappa(ordered)]
    per_class_raw = agreement.specific_agreement(list(units.values()))
    per_class = [{"label": label, "agreement": _round(per_class_raw.get(label, {}).get("agreement")),
                  "ratings": per_class_raw.get(label, {}).get("ratings", 0)} for label in model.labels]
    # Labels no longer in the label set still count in alpha; show them too rather than hide them.
    per_class += [{"label": label, "agreement": _round(value["agreement"]), "ratings": value["ratings"]}
                  for label, value in per_class_raw.items() if label not in set(model.labels)]
    waiting = Recommendation.objects.filter(model=model, required_annotations__gt=1, record__label__isnull=False).count()
    return {
        "model_id": model.id, "since": iso_utc(window.since), "until": iso_utc(window.until),
        "units": len(units), "alpha": _round(agreement.krippendorff_alpha(list(units.values()))),
        "pairs": pairs, "per_class": per_class, "annotators": annotators,
        "conflicts_open": conflicts_for(model=model).count(),
        "overlap": {"share": model.overlap_share, "annotators": model.overlap_annotators, "waiting": waiting},
    }
