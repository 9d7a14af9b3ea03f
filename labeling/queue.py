"""The labeling queue: recommendations, leases and labels (services and selectors).

How the queue works
- A recompute (Celery, `queue_tasks.recompute_queue`, or inline at the end of a train job) ranks the
  unlabeled, non-excluded pool records (split "pool") with the model's newest version and writes the
  top `QUEUE_SIZE` as `Recommendation` rows, position 1 first. Rows leased right now are kept as they
  are, so an annotator never loses the record on screen; every other row is replaced.
- Drawing from the queue is one short transaction: select the head rows that are free (no live
  lease) with `FOR UPDATE SKIP LOCKED`, then a conditional UPDATE that leases them. On PostgreSQL two
  annotators therefore lock disjoint rows and never wait for each other; on SQLite the write lock
  taken at BEGIN (transaction_mode IMMEDIATE) serialises the claims. A lease lasts
  `LABELF["LEASE_SECONDS"]` (10 minutes) and is held while `lease_expires_at` is in the future.
- Lease holder: the user (`leased_to`). A caller without a user (an API key created without one)
  leases with `leased_to = NULL`: its rows are held for the lease time like any other, but it cannot
  be told apart from other user-less keys, so it never gets its own leases back and cannot skip.
- Labeling a record deletes its `Recommendation` rows (for every model on the dataset, since labels
  live on records), so a labeled record is never handed out again. A skip releases the lease and
  moves the row to the back of the queue, so the same annotator does not get it straight back.
- When fewer than `QUEUE_LOW_WATERMARK` rows are free after a draw, a recompute is requested; a
  recompute job already queued or started in the last `RECOMPUTE_MIN_INTERVAL` absorbs the request.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field

from .models import Annotation, Job, JobKind, JobStatus, Record, Recommendation, RecommendationReason, Split

QUEUE_SIZE = 500
QUEUE_LOW_WATERMARK = 50
RECOMPUTE_MIN_INTERVAL = timedelta(seconds=30)
MAX_RECOMMENDATIONS_PER_CALL = 100
MAX_LABELS_PER_CALL = 500
# A label given after this long on one record is stored as this long: the annotator left the screen.
MAX_DURATION_MS = 3_600_000


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.LABELF["LEASE_SECONDS"])


def _free(now: datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def _check_not_archived(model) -> None:
    from models_app.models import ModelStatus

    if model.status == ModelStatus.ARCHIVED:
        raise ApiError(409, "MODEL_ARCHIVED", "This model is archived; deploy it again to label or train it")


# --- drawing from the queue -------------------------------------------------------------------------

@dataclass
class Lease:
    items: list[Recommendation]  # with .record loaded, best first
    version: int | None  # the model version whose predictions ranked these records


def recommendations_lease(*, model, user=None, limit: int = 20, now: datetime | None = None) -> Lease:
    """Leases the queue's head to `user` (or to nobody in particular, for a user-less key) and returns it.

    The user's own live leases come back first (a reload or a second tab shows the same records, and
    the lease is extended); the rest are free rows claimed in queue order.
    """
    _check_not_archived(model)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RECOMMENDATIONS_PER_CALL:
        raise invalid_field(f"limit: expected an integer between 1 and {MAX_RECOMMENDATIONS_PER_CALL}")
    now = now or timezone.now()
    claimable = _free(now)
    if user is not None:
        claimable |= Q(leased_to=user, lease_expires_at__gte=now)
    with transaction.atomic():
        ids = list(Recommendation.objects.select_for_update(skip_locked=True)
                   .filter(claimable, model=model).order_by("position").values_list("id", flat=True)[:limit])
        if ids:
            # The condition repeats the claim test so a backend without row locks can never re-lease a
            # row another annotator leased in between.
            Recommendation.objects.filter(claimable, id__in=ids).update(leased_to=user, lease_expires_at=now + lease_duration())
            items = list(Recommendation.objects.filter(id__in=ids, lease_expires_at__gt=now).filter(
                Q(leased_to=user) if user is not None else Q(leased_to__isnull=True))
                .select_related("record").order_by("position"))
        else:
            items = []
        # Bounded count (COUNT over a LIMIT subquery): the cost does not grow with the queue's length.
        free_left = Recommendation.objects.filter(_free(now), model=model)[:QUEUE_LOW_WATERMARK].count()
        if free_left < QUEUE_LOW_WATERMARK:
            queue_request_recompute(model=model, now=now)
    version = items[0].version if items else _latest_version_number(model)
    return Lease(items=items, version=version)


def _latest_version_number(model) -> int | None:
    latest = getattr(model, "latest_version", None)
    return latest.number if latest is not None else None


def recommendation_skip(*, model, user, record_id: int) -> bool:
    """Releases `user`'s lease on the record and sends it to the back of the queue. False if not leased to them."""
    with transaction.atomic():
        back = (Recommendation.objects.filter(model=model).aggregate(top=Max("position"))["top"] or 0) + 1
        updated = (Recommendation.objects.filter(model=model, record_id=record_id, leased_to=user, lease_expires_at__gte=timezone.now())
                   .update(leased_to=None, lease_expires_at=None, position=back))
    return updated > 0


def leases_release_expired(*, now: datetime | None = None) -> int:
    """Clears expired leases (the claim already treats them as free; this keeps `leased_to` honest)."""
    now = now or timezone.now()
    return Recommendation.objects.filter(lease_expires_at__lt=now).update(leased_to=None, lease_expires_at=None)


# --- labels ------------------------------------------------------------------------------------------

@dataclass
class LabelsResult:
    accepted: int
    labeled_total: int
    newly_labeled: int  # records that had no label of this model's label set before the call
    train_job: Job | None


def _parse_labels(model, payload) -> dict[int, tuple[str, int | None]]:
    """Validates every item before anything is written: record id → (label, duration_ms); last one wins."""
    if not isinstance(payload, list):
        raise invalid_field("labels: expected a list of {\"record_id\", \"label\"} objects")
    if not 1 <= len(payload) <= MAX_LABELS_PER_CALL:
        raise invalid_field(f"labels: expected 1 to {MAX_LABELS_PER_CALL} labels, got {len(payload)}")
    allowed = set(model.labels)
    parsed: dict[int, tuple[str, int | None]] = {}
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            raise invalid_field(f"labels[{i}]: expected an object with record_id and label")
        if "record_id" not in item:
            raise ApiError(400, "MISSING_REQUIRED_FIELD", f"labels[{i}].record_id field is required")
        if "label" not in item:
            raise ApiError(400, "MISSING_REQUIRED_FIELD", f"labels[{i}].label field is required")
        record_id, label, duration = item["record_id"], item["label"], item.get("duration_ms")
        if isinstance(record_id, bool) or not isinstance(record_id, int) or record_id < 1:
            raise invalid_field(f"labels[{i}].record_id: expected a positive integer")
        if not isinstance(label, str) or label not in allowed:
            raise invalid_field(f"labels[{i}].label: {label!r} is not one of the model's labels")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
                raise invalid_field(f"labels[{i}].duration_ms: expected a non-negative number of milliseconds")
            duration = min(int(duration), MAX_DURATION_MS)
        parsed[record_id] = (label, duration)
    return parsed


def labels_submit(*, model, labels, user=None, api_key=None) -> LabelsResult:
    """Stores labels (1–500) in one transaction; all or nothing.

    - Every item is validated first; one bad label or one record outside the model's dataset rejects
      the whole call (400 INVALID_FIELD / 404), with nothing written.
    - A record's current label is replaced and the previous `Annotation` kept with `is_current=False`.
    - The same label for the same record by the same user again is a no-op (no second annotation):
      still counted in `accepted`, not in `labeled_total` twice, and not towards the retrain counter.
    - A record recommended as an evaluation sample, or already in the evaluation split, is (stays) in
      the evaluation split: it is measured on, never trained on.
    - Crossing a multiple of `model.retrain_every` labeled records requests a retrain (absorbed by a
      queued one).
    """
    _check_not_archived(model)
    parsed = _parse_labels(model, labels)
    user = user if getattr(user, "is_authenticated", False) else None
    now = timezone.now()
    in_label_set = set(model.labels)
    with transaction.atomic():
        # Locked in id order, so two calls labeling overlapping records queue up instead of deadlocking,
        # and an idempotent repeat sees the first call's annotation.
        records = {r.id: r for r in Record.objects.select_for_update().filter(id__in=list(parsed), dataset_id=model.dataset_id)
                   .only("id", "dataset_id", "label", "split", "labeled_at").order_by("id")}
        missing = [record_id for record_id in parsed if record_id not in records]
        if missing:
            raise ApiError(404, "NOT_FOUND", f"Record {missing[0]} not found in this model's dataset")
        current = {a.record_id: a for a in Annotation.objects.filter(record_id__in=list(parsed), is_current=True)}
        recommended = {r.record_id: r for r in Recommendation.objects.filter(model=model, record_id__in=list(parsed))
                       .only("record_id", "reason", "version")}
        new_annotations: list[Annotation] = []
        replaced: list[int] = []
        changed: list[Record] = []
        newly_labeled = 0
        for record_id, (label, duration) in parsed.items():
            record = records[record_id]
            previous = current.get(record_id)
            same_user = previous is not None and previous.user_id == (user.id if user else None) and (
                user is not None or previous.api_key_id == (api_key.id if api_key else None))
            if previous is not None and same_user and previous.label == label and record.label == label:
                continue  # a repeated submission: idempotent
            if record.label not in in_label_set:
                newly_labeled += 1
            if previous is not None:
                replaced.append(previous.id)
            recommendation = recommended.get(record_id)
            reason = recommendation.reason if recommendation else ""
            new_annotations.append(Annotation(
                record=record, model=model, user=user, api_key=api_key, label=label,
                recommended_by_version=recommendation.version if recommendation else None,
                reason=reason, duration_ms=duration, is_current=True))
            record.label = label
            record.labeled_at = now
            if reason == RecommendationReason.EVALUATION:
                record.split = Split.EVALUATION
            changed.append(record)
        if replaced:
            Annotation.objects.filter(id__in=replaced).update(is_current=False)
        if new_annotations:
            Annotation.objects.bulk_create(new_annotations)
            Record.objects.bulk_update(changed, ["label", "labeled_at", "split"])
            # Labels live on records: the record leaves every model's queue on this dataset.
            Recommendation.objects.filter(record_id__in=[r.id for r in changed]).delete()
        labeled_total = labeled_total_for(model=model)
    train_job = None
    every = model.retrain_every or settings.LABELF["RETRAIN_EVERY"]
    if newly_labeled and (labeled_total // every) > ((labeled_total - newly_labeled) // every):
        # After the labels' commit, in its own short transaction: taking the model's row lock while holding
        # this call's queue-row locks could deadlock with a queue recompute (model lock, then queue rows).
        train_job = _request_automatic_retrain(model=model, user=user, api_key=api_key)
    return LabelsResult(accepted=len(parsed), labeled_total=labeled_total, newly_labeled=newly_labeled, train_job=train_job)


def _request_automatic_retrain(*, model, user, api_key) -> Job | None:
    from models_app.models import ModelType
    from models_app.training_services import train_request

    kind = ModelType.FINE_TUNED if model.type == ModelType.FINE_TUNED else ModelType.ACTIVE_LEARNING
    try:
        job, _ = train_request(model=model, type=kind, user=user, api_key=api_key)
    except ApiError:
        # e.g. a fine-tuned model whose relabeling left a class with one example: wait for more labels.
        return None
    return job


def annotation_undo_last(*, model, user) -> Record | None:
    """Withdraws `user`'s most recent current label on this model and leases the record back to them.

    The withdrawn annotation stays in the history (`is_current=False`); the record gets the label it
    had before (the previous annotation becomes current again) or none.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    _check_not_archived(model)
    now = timezone.now()
    with transaction.atomic():
        last = (Annotation.objects.select_for_update().filter(model=model, user=user, is_current=True)
                .select_related("record").order_by("-created_at", "-id").first())
        if last is None:
            return None
        record = last.record
        previous = (Annotation.objects.filter(record=record).exclude(id=last.id).order_by("-created_at", "-id").first())
        Annotation.objects.filter(id=last.id).update(is_current=False)
        if previous is not None:
            Annotation.objects.filter(id=previous.id).update(is_current=True)
            record.label, record.labeled_at = previous.label, previous.created_at
        else:
            record.label, record.labeled_at = None, None
        Record.objects.filter(id=record.id).update(label=record.label, labeled_at=record.labeled_at)
        if record.label is None:
            Recommendation.objects.update_or_create(
                model=model, record=record,
                defaults={"position": 0, "score": 0.0, "reason": last.reason or RecommendationReason.UNCERTAIN,
                          "version": last.recommended_by_version, "leased_to": user,
                          "lease_expires_at": now + lease_duration()})
    return record


# --- selectors ---------------------------------------------------------------------------------------

def labeled_total_for(*, model) -> int:
    """Records of the model's dataset whose current label is in its label set (both splits)."""
    return Record.objects.filter(dataset_id=model.dataset_id, label__in=list(model.labels)).count()


def labeled_counts(*, model, split: str | None = Split.POOL) -> np.ndarray:
    """Labels per class (in `model.labels` order) among the records of `split` (None: both splits)."""
    records = Record.objects.filter(dataset_id=model.dataset_id, label__in=list(model.labels))
    if split is not None:
        records = records.filter(split=split)
    by_label = dict(records.values_list("label").annotate(n=Count("id")).values_list("label", "n"))
    return np.array([by_label.get(label, 0) for label in model.labels], dtype=np.int64)


def recommendation_for(*, model, user, record_id: int) -> Recommendation | None:
    return (Recommendation.objects.filter(model=model, record_id=record_id, leased_to=user)
            .select_related("record").first())


# --- recomputing the queue ------------------------------------------------------------------------------

def queue_request_recompute(*, model, now: datetime | None = None) -> Job | None:
    """Queues a recompute unless one is queued or was started recently (that one absorbs this request)."""
    now = now or timezone.now()
    recent = Job.objects.filter(model=model, kind=JobKind.RECOMMEND).filter(
        Q(status=JobStatus.QUEUED) | Q(created_at__gte=now - RECOMPUTE_MIN_INTERVAL)).exists()
    if recent:
        return None
    job = Job.objects.create(workspace_id=model.workspace_id, model=model, dataset_id=model.dataset_id,
                             kind=JobKind.RECOMMEND, params={"model_id": model.id})
    from .queue_tasks import recompute_queue

    transaction.on_commit(lambda: recompute_queue.delay(job.id))
    return job


@dataclass
class QueueStats:
    version: int
    pool_size: int
    written: int
    kept_leases: int


def _pool_texts(record_ids: list[int]) -> list[str]:
    texts = dict(Record.objects.filter(id__in=record_ids).values_list("id", "text"))
    return [texts[record_id] for record_id in record_ids]


def queue_recompute(*, model, version=None, max_threads: int = 1) -> QueueStats:
    """Ranks the unlabeled pool with `version` (default: the newest) and rewrites the model's queue.

    The slow part (reading vectors, predicting, ranking) runs outside any transaction; the write is one
    short transaction that drops the rows nobody holds, keeps live leases, and skips records labeled
    while the ranking ran.
    """
    from labeling.embeddings import vectors_load
    from models_app.inference import head_for_version
    from models_app.models import ModelType

    from .sampling import rank_pool

    if version is None:
        version = model.versions.order_by("-number").first()
        if version is None:
            raise ValueError(f"model {model.id} has no version to rank with")
    dataset = model.dataset
    pool = list(Record.objects.filter(dataset=dataset, label__isnull=True, excluded=False, split=Split.POOL)
                .order_by("row_index").values_list("id", "row_index"))
    ranked = []
    record_ids: list[int] = []
    if pool:
        record_ids = [record_id for record_id, _ in pool]
        rows = np.fromiter((row for _, row in pool), dtype=np.int64, count=len(pool))
        all_vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
        # Fancy indexing copies (1.5 GB at 1M rows): skip it when the pool is every row, in order.
        whole = len(rows) == len(all_vectors) and bool(np.all(rows == np.arange(len(rows))))
        vectors = all_vectors if whole else all_vectors[rows]
        head = head_for_version(version)
        # Only fine-tuned heads read the texts (their n-gram features); the others work from vectors alone.
        texts = _pool_texts(record_ids) if version.type == ModelType.FINE_TUNED else None
        proba = head.predict_proba(vectors, texts).astype(np.float32, copy=False)
        ranked = rank_pool(proba=proba, vectors=vectors, labeled_counts=labeled_counts(model=model),
                           queue_size=QUEUE_SIZE, evaluation_share=model.evaluation_share,
                           seed=version.number * 100_003 + len(pool), max_threads=max_threads)
    with transaction.atomic():
        from models_app.models import ClassificationModel

        # Serialises concurrent recomputes of one model (a recommend job and a train job's last step).
        ClassificationModel.objects.select_for_update().filter(pk=model.pk).first()
        now = timezone.now()
        Recommendation.objects.filter(model=model).exclude(lease_expires_at__gte=now).delete()
        # Read after the delete: an annotator may lease a row between two statements (READ COMMITTED),
        # and whatever survived the delete is exactly what must not be written again.
        held = set(Recommendation.objects.filter(model=model).values_list("record_id", flat=True))
        candidate_ids = [record_ids[item.row] for item in ranked]
        still_unlabeled = set(Record.objects.filter(id__in=candidate_ids, label__isnull=True).values_list("id", flat=True))
        labels = list(model.labels)
        rows_to_write = []
        for item in ranked:
            record_id = record_ids[item.row]
            if record_id in held or record_id not in still_unlabeled:
                continue
            rows_to_write.append(Recommendation(
                model=model, record_id=record_id, position=len(rows_to_write) + 1, score=float(item.score),
                reason=item.reason, predicted_label=labels[item.predicted], confidence=float(item.confidence),
                version=version.number))
        Recommendation.objects.bulk_create(rows_to_write, batch_size=500)
    return QueueStats(version=version.number, pool_size=len(pool), written=len(rows_to_write), kept_leases=len(held))
