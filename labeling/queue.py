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

Overlap (several annotators per record, for agreement and review)
- A recompute marks `round(model.overlap_share * rows)` of the rows it writes (default 10%) with
  `required_annotations = model.overlap_annotators` (default 2, at most 5). Which rows is a hash of
  (model, record): deterministic, and stable from one recompute to the next.
- The first label of an overlap record counts at once (Record.label is set, the labeled total and the
  retrain counter move, training may use it), so the labeling loop works the same for a team and for
  someone labeling alone. The record's row stays in the queue, its lease released, for OTHER annotators:
  a draw never hands anyone a record they have a current label on (a NOT EXISTS on Annotation).
- Each overlap annotator's label stays current. Once two current labels differ the record is in
  conflict: Record.label is cleared (training ignores it), `in_conflict` is set, it leaves every queue
  and waits in the review queue (labeling/review.py) for a lead's decision. Once `required_annotations`
  distinct annotators agree, the record is done and leaves the queue with their label.
- A recompute keeps the rows of overlap records that already have a label (they go to the head, so
  the second opinion comes soon) and never ranks records in conflict.
- A label through `POST /labels` on a record in conflict is stored as that annotator's opinion; only a
  lead's review decision (or all current labels coming to agree) ends the conflict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field

from .models import Annotation, Job, JobKind, JobStatus, Record, Recommendation, RecommendationReason, Split

QUEUE_SIZE = 500
QUEUE_LOW_WATERMARK = 50
RECOMPUTE_MIN_INTERVAL = timedelta(seconds=30)
MAX_RECOMMENDATIONS_PER_CALL = 100
# How long GET /recommendations waits for a pending recompute when it has nothing to hand out, and how often
# it looks again meanwhile.
RECOMPUTE_WAIT_SECONDS = 15.0
RECOMPUTE_POLL_SECONDS = 0.25
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


def _labeled_by(*, user=None, api_key=None) -> Exists | None:
    """Records the caller has a current label on (an overlap record they labeled waits for others)."""
    if user is not None:
        mine = Annotation.objects.filter(record_id=OuterRef("record_id"), user=user, is_current=True)
    elif api_key is not None:
        mine = Annotation.objects.filter(record_id=OuterRef("record_id"), user__isnull=True, api_key=api_key, is_current=True)
    else:
        return None
    return Exists(mine)


def recommendations_lease(*, model, user=None, api_key=None, limit: int = 20, now: datetime | None = None,
                          wait_seconds: float = 0.0) -> Lease:
    """Leases the queue's head to `user` (or to nobody in particular, for a user-less key) and returns it.

    The user's own live leases come back first (a reload or a second tab shows the same records, and
    the lease is extended); the rest are free rows claimed in queue order. Records the caller already
    labeled (overlap records waiting for other annotators) are never handed to them again.

    With `wait_seconds`, a call that finds nothing to hand out while a recompute of the model's queue is
    queued or running (a model just created, or a queue labeled to the end) waits up to that long for it,
    instead of answering "nothing to label" a second before the queue is there.
    """
    _check_not_archived(model)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RECOMMENDATIONS_PER_CALL:
        raise invalid_field(f"limit: expected an integer between 1 and {MAX_RECOMMENDATIONS_PER_CALL}")
    deadline = time.monotonic() + wait_seconds
    while True:
        lease = _lease_once(model=model, user=user, api_key=api_key, limit=limit, now=now or timezone.now())
        if lease.items or time.monotonic() >= deadline or not _recompute_pending(model):
            return lease
        time.sleep(RECOMPUTE_POLL_SECONDS)


def _recompute_pending(model) -> bool:
    return Job.objects.filter(model=model, kind=JobKind.RECOMMEND,
                              status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).exists()


def _lease_once(*, model, user, api_key, limit: int, now: datetime) -> Lease:
    claimable = _free(now)
    if user is not None:
        claimable |= Q(leased_to=user, lease_expires_at__gte=now)
    candidates = Recommendation.objects.select_for_update(skip_locked=True).filter(claimable, model=model)
    labeled_by_caller = _labeled_by(user=user, api_key=api_key)
    if labeled_by_caller is not None:
        candidates = candidates.exclude(labeled_by_caller)
    with transaction.atomic():
        ids = list(candidates.order_by("position").values_list("id", flat=True)[:limit])
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


def _annotator_of(annotation: Annotation) -> tuple:
    # A key without a user labels as itself: it counts as one annotator, like a user.
    return ("user", annotation.user_id) if annotation.user_id is not None else ("key", annotation.api_key_id)


def labels_submit(*, model, labels, user=None, api_key=None) -> LabelsResult:
    """Stores labels (1–500) in one transaction; all or nothing.

    - Every item is validated first; one bad label or one record outside the model's dataset rejects
      the whole call (400 INVALID_FIELD / 404), with nothing written.
    - A record's current label is replaced and the previous `Annotation` kept with `is_current=False`.
    - The same label for the same record by the same user again is a no-op (no second annotation):
      still counted in `accepted`, not in `labeled_total` twice, and not towards the retrain counter.
    - A record recommended as an evaluation sample, or already in the evaluation split, is (stays) in
      the evaluation split: it is measured on, never trained on.
    - An overlap record (its queue row needs several annotators) or a record in conflict keeps every
      annotator's label current instead of replacing it; see the module docstring for when it is done
      or in conflict.
    - Crossing a multiple of `model.retrain_every` labeled records requests a retrain (absorbed by a
      queued one).
    """
    _check_not_archived(model)
    parsed = _parse_labels(model, labels)
    user = user if getattr(user, "is_authenticated", False) else None
    caller = ("user", user.id) if user is not None else ("key", api_key.id if api_key is not None else None)
    now = timezone.now()
    in_label_set = set(model.labels)
    with transaction.atomic():
        # Locked in id order, so two calls labeling overlapping records queue up instead of deadlocking,
        # and an idempotent repeat sees the first call's annotation. NO KEY UPDATE (only non-key columns
        # change): a plain FOR UPDATE also blocks other transactions' foreign-key checks on these records
        # (FOR KEY SHARE, run at their COMMIT), which deadlocked with a recompute writing queue rows.
        records = {r.id: r for r in Record.objects.select_for_update(no_key=True).filter(id__in=list(parsed), dataset_id=model.dataset_id)
                   .only("id", "dataset_id", "label", "split", "labeled_at", "in_conflict").order_by("id")}
        missing = [record_id for record_id in parsed if record_id not in records]
        if missing:
            raise ApiError(404, "NOT_FOUND", f"Record {missing[0]} not found in this model's dataset")
        current: dict[int, list[Annotation]] = {}
        for annotation in Annotation.objects.filter(record_id__in=list(parsed), is_current=True).order_by("id"):
            current.setdefault(annotation.record_id, []).append(annotation)
        recommended = {r.record_id: r for r in Recommendation.objects.filter(model=model, record_id__in=list(parsed))
                       .only("id", "record_id", "reason", "version", "required_annotations")}
        new_annotations: list[Annotation] = []
        replaced: list[int] = []
        changed: list[Record] = []
        waiting: list[int] = []  # queue rows of overlap records that still need other annotators
        newly_labeled = 0
        for record_id, (label, duration) in parsed.items():
            record = records[record_id]
            previous = current.get(record_id, [])
            mine = [a for a in previous if _annotator_of(a) == caller]
            if mine and mine[-1].label == label and (record.label == label or record.in_conflict):
                continue  # a repeated submission: idempotent
            recommendation = recommended.get(record_id)
            overlap = record.in_conflict or (recommendation is not None and recommendation.required_annotations > 1)
            # Overlap: only the caller's own earlier label is replaced; otherwise the record gets one current label.
            replaced.extend(a.id for a in (mine if overlap else previous))
            reason = recommendation.reason if recommendation else ""
            new_annotations.append(Annotation(
                record=record, model=model, user=user, api_key=api_key, label=label,
                recommended_by_version=recommendation.version if recommendation else None,
                reason=reason, duration_ms=duration, is_current=True))
            was_labeled = record.label in in_label_set
            if overlap:
                others = [a for a in previous if _annotator_of(a) != caller]
                given = {a.label for a in others} | {label}
                annotators = len({_annotator_of(a) for a in others}) + 1
                required = recommendation.required_annotations if recommendation else 1
                if len(given) > 1:
                    record.label, record.labeled_at, record.in_conflict = None, None, True
                else:
                    record.label, record.labeled_at, record.in_conflict = label, now, False
                    if annotators < required and recommendation is not None:
                        waiting.append(recommendation.id)
            else:
                record.label, record.labeled_at = label, now
            if record.label in in_label_set and not was_labeled:
                newly_labeled += 1
            if reason == RecommendationReason.EVALUATION:
                record.split = Split.EVALUATION
            changed.append(record)
        if replaced:
            Annotation.objects.filter(id__in=replaced).update(is_current=False)
        if new_annotations:
            Annotation.objects.bulk_create(new_annotations)
            Record.objects.bulk_update(changed, ["label", "labeled_at", "split", "in_conflict"])
            # Labels live on records: the record leaves every model's queue on this dataset, except the
            # row of an overlap record that still waits for other annotators.
            done = Recommendation.objects.filter(record_id__in=[r.id for r in changed])
            if waiting:
                done = done.exclude(id__in=waiting)
                Recommendation.objects.filter(id__in=waiting).update(leased_to=None, lease_expires_at=None)
            done.delete()
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

    The withdrawn annotation stays in the history (`is_current=False`). When it was the record's only
    current label, the record gets the label it had before (the previous annotation becomes current
    again) or none. When other annotators' labels are current too (an overlap record), theirs stay: the
    record waits for this user's label again (or stays in conflict if the others disagree among
    themselves). A lead's review decision is not withdrawn here.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    _check_not_archived(model)
    now = timezone.now()
    with transaction.atomic():
        last = (Annotation.objects.select_for_update().filter(model=model, user=user, is_current=True, adjudicated=False)
                .select_related("record").order_by("-created_at", "-id").first())
        if last is None:
            return None
        record = last.record
        others = list(Annotation.objects.filter(record=record, is_current=True).exclude(id=last.id))
        Annotation.objects.filter(id=last.id).update(is_current=False)
        required = 1
        if others:
            given = {a.label for a in others}
            record.in_conflict = len(given) > 1
            record.label = None if record.in_conflict else given.pop()
            record.labeled_at = None if record.in_conflict else max(a.created_at for a in others)
            required = max(model.overlap_annotators, len({_annotator_of(a) for a in others}) + 1)
        else:
            previous = (Annotation.objects.filter(record=record).exclude(id=last.id).order_by("-created_at", "-id").first())
            if previous is not None:
                Annotation.objects.filter(id=previous.id).update(is_current=True)
                record.label, record.labeled_at = previous.label, previous.created_at
            else:
                record.label, record.labeled_at = None, None
        Record.objects.filter(id=record.id).update(label=record.label, labeled_at=record.labeled_at, in_conflict=record.in_conflict)
        if (record.label is None and not record.in_conflict) or (others and not record.in_conflict):
            Recommendation.objects.update_or_create(
                model=model, record=record,
                defaults={"position": 0, "score": 0.0, "reason": last.reason or RecommendationReason.UNCERTAIN,
                          "version": last.recommended_by_version, "leased_to": user,
                          "lease_expires_at": now + lease_duration()},
                create_defaults={"position": 0, "score": 0.0, "reason": last.reason or RecommendationReason.UNCERTAIN,
                                 "version": last.recommended_by_version, "leased_to": user,
                                 "lease_expires_at": now + lease_duration(), "required_annotations": required})
    return record


# --- selectors ---------------------------------------------------------------------------------------

def labeled_total_for(*, model) -> int:
    """Records of the model's dataset whose current label is in its label set (both splits)."""
    return Record.objects.filter(dataset_id=model.dataset_id, label__in=list(model.labels)).count()


def labeled_counts(*, model, split: str | None = Split.POOL, labels: list[str] | None = None) -> np.ndarray:
    """Labels per class (in `labels` order, default `model.labels`) among the records of `split` (None: both splits)."""
    labels = list(model.labels) if labels is None else list(labels)
    records = Record.objects.filter(dataset_id=model.dataset_id, label__in=labels)
    if split is not None:
        records = records.filter(split=split)
    by_label = dict(records.values_list("label").annotate(n=Count("id")).values_list("label", "n"))
    return np.array([by_label.get(label, 0) for label in labels], dtype=np.int64)


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


def overlap_rows(*, record_ids: list[int], share: float, salt: int) -> np.ndarray:
    """Which of these queue rows are overlap rows: exactly round(share * n) of them, chosen by a hash of
    (salt, record id), so the choice is deterministic and a recompute picks mostly the same records."""
    n = len(record_ids)
    count = int(round(max(0.0, min(1.0, share)) * n))
    chosen = np.zeros(n, dtype=bool)
    if count == 0:
        return chosen
    # splitmix64 of the record id mixed with the salt: spread evenly whatever the ids' pattern.
    with np.errstate(over="ignore"):
        x = np.asarray(record_ids, dtype=np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    chosen[np.argsort(x, kind="stable")[:count]] = True
    return chosen


@dataclass
class QueueStats:
    version: int
    pool_size: int
    written: int
    kept_leases: int


POOL_BLOCK = 65_536


def _predict_in_blocks(head, vectors: np.ndarray, texts: list[str] | None) -> np.ndarray:
    """The head's float32 probabilities over the pool, a block of rows at a time (float32 vectors for the head's
    matrix products, and no pool-sized float64 intermediate)."""
    proba = None
    for start in range(0, len(vectors), POOL_BLOCK):
        block = head.predict_proba(np.asarray(vectors[start:start + POOL_BLOCK], dtype=np.float32),
                                   None if texts is None else texts[start:start + POOL_BLOCK])
        if proba is None:
            proba = np.empty((len(vectors), block.shape[1]), dtype=np.float32)
        proba[start:start + len(block)] = block
    return proba


def _pool_texts(record_ids: list[int]) -> list[str]:
    texts = dict(Record.objects.filter(id__in=record_ids).values_list("id", "text"))
    return [texts[record_id] for record_id in record_ids]


def queue_recompute(*, model, version=None, max_threads: int = 1) -> QueueStats:
    """Ranks the unlabeled pool with `version` (default: the newest) and rewrites the model's queue.

    The slow part (reading vectors, predicting, ranking) runs outside any transaction; the write is one
    short transaction that drops the rows nobody holds, keeps live leases, and skips records labeled
    while the ranking ran.
    """
    from labeling.embeddings import vectors_gather
    from models_app.inference import head_for_version
    from models_app.models import ModelType

    from .sampling import rank_pool

    if version is None:
        version = model.versions.order_by("-number").first()
        if version is None:
            raise ValueError(f"model {model.id} has no version to rank with")
    dataset = model.dataset
    pool = list(Record.objects.filter(dataset=dataset, label__isnull=True, excluded=False, in_conflict=False, split=Split.POOL)
                .order_by("row_index").values_list("id", "row_index"))
    ranked = []
    record_ids: list[int] = []
    if pool:
        record_ids = [record_id for record_id, _ in pool]
        rows = np.fromiter((row for _, row in pool), dtype=np.int64, count=len(pool))
        # float16 as stored (768 MB at 1M rows; float32 through the cache would be 1.5 GB, plus a copy for a
        # partly labeled pool): rank_pool takes float16 and the head sees float32 one block at a time.
        vectors = vectors_gather(dataset_id=dataset.id, row_count=dataset.record_count,
                                 chunk_size=dataset.vector_chunk_size, rows=rows)
        head = head_for_version(version)
        # Only fine-tuned heads read the texts (their n-gram features); the others work from vectors alone.
        texts = _pool_texts(record_ids) if version.type == ModelType.FINE_TUNED else None
        proba = _predict_in_blocks(head, vectors, texts)
        # The version's columns are its own labels, which differ from the model's after a label-set change
        # (until the next version): counts and predicted names follow the version.
        ranked = rank_pool(proba=proba, vectors=vectors, labeled_counts=labeled_counts(model=model, labels=version.labels),
                           queue_size=QUEUE_SIZE, evaluation_share=model.evaluation_share,
                           seed=version.number * 100_003 + len(pool), max_threads=max_threads)
    with transaction.atomic():
        from models_app.models import ClassificationModel

        # Serialises concurrent recomputes of one model (a recommend job and a train job's last step).
        # NO KEY UPDATE: a plain FOR UPDATE also blocks the foreign-key check of a label's annotation
        # insert (FOR KEY SHARE on the model row) while that label call holds queue rows this delete
        # needs: a deadlock (found by tests/system/test_worker_faults.py).
        ClassificationModel.objects.select_for_update(no_key=True).filter(pk=model.pk).first()
        now = timezone.now()
        # Overlap records that have their first label wait in the queue for the other annotators. EXISTS, not a
        # join on record: with a join Django deletes by `id IN (SELECT ...)`, and after waiting for a row an
        # annotator was leasing, PostgreSQL rechecks only that the id was in the subquery's snapshot, so it
        # deleted the fresh lease and the record was queued again for a second annotator (seen in
        # tests/system/test_concurrent_annotators.py). A one-table DELETE rechecks the lease on the new row.
        started = Q(Exists(Record.objects.filter(pk=OuterRef("record_id"), label__isnull=False)), required_annotations__gt=1)
        Recommendation.objects.filter(model=model).exclude(lease_expires_at__gte=now).exclude(started).delete()
        # Read after the delete: an annotator may lease a row between two statements (READ COMMITTED),
        # and whatever survived the delete is exactly what must not be written again.
        held = set(Recommendation.objects.filter(model=model).values_list("record_id", flat=True))
        # The waiting overlap records go first: their second opinion is what agreement and review need.
        Recommendation.objects.filter(started, model=model).exclude(lease_expires_at__gte=now).update(position=0)
        candidate_ids = [record_ids[item.row] for item in ranked]
        still_unlabeled = set(Record.objects.filter(id__in=candidate_ids, label__isnull=True, in_conflict=False)
                              .values_list("id", flat=True))
        labels = list(version.labels)
        rows_to_write = []
        for item in ranked:
            record_id = record_ids[item.row]
            if record_id in held or record_id not in still_unlabeled:
                continue
            rows_to_write.append(Recommendation(
                model=model, record_id=record_id, position=len(rows_to_write) + 1, score=float(item.score),
                reason=item.reason, predicted_label=labels[item.predicted], confidence=float(item.confidence),
                version=version.number))
        overlap = overlap_rows(record_ids=[row.record_id for row in rows_to_write], share=model.overlap_share, salt=model.id)
        for row in np.flatnonzero(overlap):
            rows_to_write[row].required_annotations = model.overlap_annotators
        Recommendation.objects.bulk_create(rows_to_write, batch_size=500)
    return QueueStats(version=version.number, pool_size=len(pool), written=len(rows_to_write), kept_leases=len(held))
