"""Review and adjudication of records whose overlap annotators disagreed, and the overlap settings.

How a conflict comes and goes (the queue side is in labeling/queue.py)
- Overlap records go to `model.overlap_annotators` different annotators. When two of their current
  labels differ, the record is in conflict: `Record.in_conflict`, no `Record.label` (so training, which
  reads `Record.label`, ignores it), out of every queue.
- A lead lists the conflicts (`conflicts_for`), sees every current label with who gave it and when, and
  decides (`review_decide`): the decision is an `Annotation` with `adjudicated=True` and becomes the
  record's only current annotation and its label; the annotators' labels stay in the history (and in
  the agreement figures, where the decision is the consensus).
- Deciding takes the record's row lock and checks `in_conflict` under it. Of two leads deciding the
  same record at once, the first wins and the second gets 409 CONFLICT whose message names the first
  decision (label, who, when): nothing is lost silently, and the second lead sees what was decided.
  A record that was never in conflict is 409 CONFLICT too.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field, not_found

from .models import Annotation, Record
from .selectors import iso_utc

MAX_OVERLAP_ANNOTATORS = 5
MAX_RECORD_ID = 2**63 - 1


# --- overlap settings --------------------------------------------------------------------------------

def overlap_settings_validate(*, share=None, annotators=None) -> dict:
    """The fields to store, validated ({} when neither is given); 400 INVALID_FIELD names the bad one."""
    fields = {}
    if share is not None:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise invalid_field("overlap_share: expected a number between 0 and 1 (0.1 = 10% of the queue)")
        fields["overlap_share"] = float(share)
    if annotators is not None:
        if isinstance(annotators, bool) or not isinstance(annotators, int) or not 2 <= annotators <= MAX_OVERLAP_ANNOTATORS:
            raise invalid_field(f"overlap_annotators: expected an integer between 2 and {MAX_OVERLAP_ANNOTATORS}")
        fields["overlap_annotators"] = annotators
    return fields


def overlap_settings_update(*, model, share=None, annotators=None, user=None, api_key=None):
    """Sets the model's overlap share and annotators per overlap record; applies from the next queue recompute
    (records already waiting for more annotators keep the number they were queued with)."""
    from labelf_studio.workspaces.services import audit_record
    from models_app.models import ClassificationModel

    fields = overlap_settings_validate(share=share, annotators=annotators)
    if not fields:
        return model
    with transaction.atomic():
        ClassificationModel.objects.filter(pk=model.pk).update(**fields)
        for field, value in fields.items():
            setattr(model, field, value)
        audit_record(workspace=model.workspace, action="model.overlap", target=f"model {model.id} ({model.name})",
                     actor=user, actor_key=api_key, details=fields)
    return model


# --- reading conflicts -------------------------------------------------------------------------------

def annotator_name(annotation: Annotation) -> str:
    if annotation.user_id is not None:
        return annotation.user.username if annotation.user else f"user {annotation.user_id}"
    if annotation.api_key_id is not None and annotation.api_key is not None:
        return f"API key {annotation.api_key.name or annotation.api_key.prefix}"
    return "deleted annotator"


def conflicts_for(*, model) -> QuerySet:
    """Records of the model's dataset in conflict that this model's annotators labeled, oldest first."""
    labeled_here = Annotation.objects.filter(record_id=OuterRef("pk"), model=model, is_current=True)
    return (Record.objects.filter(dataset_id=model.dataset_id, in_conflict=True).filter(Exists(labeled_here))
            .order_by("id"))


@dataclass
class Conflict:
    record: Record
    annotations: list[Annotation]  # the current labels, oldest first, with user and api_key loaded

    @property
    def votes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for annotation in self.annotations:
            counts[annotation.label] = counts.get(annotation.label, 0) + 1
        return counts


def conflicts_with_labels(records: list[Record]) -> list[Conflict]:
    """The current labels of these records in one query (a page of the review queue)."""
    by_record: dict[int, list[Annotation]] = {record.id: [] for record in records}
    for annotation in (Annotation.objects.filter(record_id__in=list(by_record), is_current=True)
                       .select_related("user", "api_key").order_by("created_at", "id")):
        annotation.annotator_name = annotator_name(annotation)
        by_record[annotation.record_id].append(annotation)
    return [Conflict(record=record, annotations=by_record[record.id]) for record in records]


def conflict_next(*, model, exclude: set[int] = frozenset()) -> Conflict | None:
    record = conflicts_for(model=model).exclude(id__in=list(exclude)).first()
    return conflicts_with_labels([record])[0] if record is not None else None


def annotation_to_dict(annotation: Annotation) -> dict:
    return {"label": annotation.label, "annotator": {"user_id": annotation.user_id, "api_key_id": annotation.api_key_id,
                                                     "name": annotator_name(annotation)},
            "created_at": iso_utc(annotation.created_at), "duration_ms": annotation.duration_ms}


def conflict_to_dict(conflict: Conflict) -> dict:
    from .selectors import record_to_dict

    return {"record": record_to_dict(conflict.record), "labels": [annotation_to_dict(a) for a in conflict.annotations],
            "votes": conflict.votes}


def last_decision(*, record_id: int) -> Annotation | None:
    return (Annotation.objects.filter(record_id=record_id, adjudicated=True).select_related("user", "api_key")
            .order_by("-created_at", "-id").first())


# --- deciding ----------------------------------------------------------------------------------------

@dataclass
class Decision:
    record: Record
    annotation: Annotation  # the adjudicated one
    overruled: list[Annotation]  # the annotators' labels it replaced (still in the history)


def review_decide(*, model, record_id, label, user=None, api_key=None, now: datetime | None = None) -> Decision:
    """The lead's final label for a record in conflict. 404 outside the model's dataset, 400 for a label
    outside the model's label set, 409 CONFLICT when the record is not (or no longer) in conflict."""
    from .queue import _check_not_archived

    _check_not_archived(model)
    if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id <= MAX_RECORD_ID:
        raise not_found("Record")
    if not isinstance(label, str) or label not in set(model.labels):
        raise invalid_field(f"label: {label!r} is not one of the model's labels")
    user = user if getattr(user, "is_authenticated", False) else None
    now = now or timezone.now()
    with transaction.atomic():
        record = (Record.objects.select_for_update().filter(pk=record_id, dataset_id=model.dataset_id)
                  .only("id", "dataset_id", "text", "metadata", "label", "split", "labeled_at", "in_conflict").first())
        if record is None:
            raise not_found("Record")
        if not record.in_conflict:
            decided = last_decision(record_id=record.id)
            if decided is not None:
                raise ApiError(409, "CONFLICT", f"Record {record.id} was already decided: {decided.label!r} by "
                                                f"{annotator_name(decided)} at {iso_utc(decided.created_at)}")
            raise ApiError(409, "CONFLICT", f"Record {record.id} is not in conflict: there is nothing to decide")
        overruled = list(Annotation.objects.filter(record=record, is_current=True).select_related("user", "api_key"))
        Annotation.objects.filter(id__in=[a.id for a in overruled]).update(is_current=False)
        annotation = Annotation.objects.create(record=record, model=model, user=user, api_key=api_key, label=label,
                                               is_current=True, adjudicated=True, reason="review")
        was_labeled = record.label in set(model.labels)
        record.label, record.labeled_at, record.in_conflict = label, now, False
        Record.objects.filter(pk=record.pk).update(label=label, labeled_at=now, in_conflict=False)
    if not was_labeled:
        _maybe_retrain(model=model, user=user, api_key=api_key)
    return Decision(record=record, annotation=annotation, overruled=overruled)


def _maybe_retrain(*, model, user, api_key) -> None:
    """A decided record is a new training label: it counts towards `retrain_every` like any other."""
    from .queue import _request_automatic_retrain, labeled_total_for

    every = model.retrain_every or settings.LABELF["RETRAIN_EVERY"]
    total = labeled_total_for(model=model)
    if total and total % every == 0:
        _request_automatic_retrain(model=model, user=user, api_key=api_key)
