"""Training requests and the train job: new versions from the labels, evaluated, then a fresh queue.

Requests (`train_request`): a train job of the same model and type that is still queued absorbs the
request (it trains on every label stored when it starts, which includes this request's); otherwise a
new job is queued, also when one is running (it runs after that one: the task waits for the model's
running job to finish by rescheduling itself). The model row is locked while deciding, so two leads
pressing "Retrain" at once get the same job.

The job (`train_job_run`, Celery task `training_tasks.train_model`):
1. active-learning: `train_active_learning_head` on the stored vectors of every pool-split record
   whose label is in the model's label set, with the model's describe-and-classify head as prior (so
   a version trained on some classes still predicts every label). fine-tuned: `train_fine_tuned_head`, with a
   sample of the unlabeled pool records for self-training (`_self_training_pool`).
2. Evaluation on the evaluation split ("holdout"); with no evaluation labels, out-of-fold predictions
   over the training labels ("cross-validation"). Threshold curve from the same predictions.
3. Learning-curve point and stopping signal into the version's details (see `stability`).
4. `version_create` (a deployed, unpinned model serves it at once), then the queue is recomputed
   from it. Only then is the job `succeeded`, with `result = {"model_id", "version", ...}`.
A failure leaves the previous version serving and the job `failed` with the reason. A redelivered task
re-checks the job first and never writes a second version for the same job.

Model type rule: a fine-tuned job makes the model `fine-tuned`. An active-learning job always stores
an `active-learning` version (that is how it was trained), but the model's type becomes
`active-learning` only once every label has at least 2 training labels; until then the model stays
`describe-and-classify`, because for the classes without labels it still answers from descriptions.
Automatic retrains (every `retrain_every` labels) use the fine-tuned trainer for a fine-tuned model,
the active-learning trainer otherwise.

Model status is `training` while a job runs and returns to what it was (ready/deployed) afterwards.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from labelf_studio.api import ApiError, invalid_field
from labeling.job_maintenance import heartbeat_is_fresh, heartbeat_stamp, job_claimed, job_is_alive
from labeling.models import Job, JobKind, JobStatus, Record, Split

from .models import ClassificationModel, ModelStatus, ModelType, ModelVersion

logger = logging.getLogger("labelf.training")

TRAIN_TYPES = (ModelType.ACTIVE_LEARNING, ModelType.FINE_TUNED)
# Kappa between successive versions' predictions at or above which "predictions have stabilised".
STABLE_KAPPA = 0.99
# Versions compared by the stopping signal (the new one and the two before it: two kappas).
STABILITY_VERSIONS = 3
# Unlabeled pool records the stopping signal compares predictions on (a fixed random sample).
STABILITY_SAMPLE = 2_000
# Seconds a waiting job sleeps before checking again whether the model's running job has finished.
WAIT_FOR_RUNNING_SECONDS = 15
MIN_EXAMPLES_PER_CLASS = 2
# Unlabeled pool records a fine-tuned training may pseudo-label (a fixed random sample; bench/README_fine_tuned.md).
SELF_TRAINING_POOL = 10_000


def short_classes(*, model: ClassificationModel) -> list[str]:
    from labeling.queue import labeled_counts

    counts = labeled_counts(model=model)
    return [label for label, count in zip(model.labels, counts) if count < MIN_EXAMPLES_PER_CLASS]


# The fine-tune refusal names this many short labels, then says how many more (a wall of 20 long names read badly).
SHORT_CLASSES_NAMED = 8


def _has_training_labels(*, model: ClassificationModel) -> bool:
    """Whether any pool record carries one of the model's labels (evaluation-split labels are never trained on)."""
    from labeling.queue import labeled_counts

    return bool(labeled_counts(model=model).sum())


def train_request(*, model: ClassificationModel, type: str, user=None, api_key=None) -> tuple[Job, bool]:
    """The train job for this request and whether it is new (False: absorbed by a queued job)."""
    if type not in TRAIN_TYPES:
        raise invalid_field(f"type: expected one of {', '.join(TRAIN_TYPES)}")
    if model.status == ModelStatus.ARCHIVED:
        raise ApiError(409, "MODEL_ARCHIVED", "This model is archived; deploy it again to train it")
    if type == ModelType.ACTIVE_LEARNING and not _has_training_labels(model=model):
        raise ApiError(409, "CONFLICT", "There are no labels to train on yet: label some records first "
                                        "(the describe-and-classify version keeps serving until then)")
    if type == ModelType.FINE_TUNED:
        short = short_classes(model=model)
        if short:
            named = ", ".join(short[:SHORT_CLASSES_NAMED])
            more = f" and {len(short) - SHORT_CLASSES_NAMED} more" if len(short) > SHORT_CLASSES_NAMED else ""
            raise invalid_field(f"type: fine-tuning needs at least {MIN_EXAMPLES_PER_CLASS} labels per class; "
                                f"{len(short)} of {len(model.labels)} labels have fewer: {named}{more}")
    user = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        locked = ClassificationModel.objects.select_for_update().get(pk=model.pk)
        if locked.status == ModelStatus.ARCHIVED:
            raise ApiError(409, "MODEL_ARCHIVED", "This model is archived; deploy it again to train it")
        queued = (Job.objects.filter(model=locked, kind=JobKind.TRAIN, status=JobStatus.QUEUED, params__type=type)
                  .order_by("created_at", "id").first())
        if queued is not None:
            return queued, False
        job = Job.objects.create(workspace_id=locked.workspace_id, model=locked, dataset_id=locked.dataset_id,
                                 kind=JobKind.TRAIN, params={"type": type}, created_by=user)
        from .training_tasks import train_model

        transaction.on_commit(lambda: train_model.delay(job.id))
    return job, True


# --- the job -----------------------------------------------------------------------------------------

def _set_progress(job_id: int, progress: float) -> None:
    Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(progress=round(float(progress), 4))


def _start(job_id: int) -> tuple[Job | None, str]:
    """Locks the job and its model and decides: "run", "wait" (another job of the model runs) or "done"."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, kind=JobKind.TRAIN).first()
        if job is None or job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return job, "done"
        if job.status == JobStatus.RUNNING and heartbeat_is_fresh(job):
            return job, "done"  # a second delivery while a live worker runs it
        model = ClassificationModel.objects.select_for_update().filter(pk=job.model_id).first()
        if model is None:
            _finish_failed(job, "The model was deleted")
            return job, "done"
        others = Job.objects.filter(model=model, kind=JobKind.TRAIN, status=JobStatus.RUNNING).exclude(pk=job.pk)
        if any(job_is_alive(other) for other in others):  # a dead one (its worker killed) is not waited for
            return job, "wait"
        if model.status == ModelStatus.ARCHIVED:
            _finish_failed(job, "The model was archived before training started")
            return job, "done"
        params = dict(job.params)
        # Kept from the first attempt: a redelivered job finds the model already in "training".
        params.setdefault("previous_status", model.status if model.status != ModelStatus.TRAINING else ModelStatus.READY)
        # version_create sets the model's type to the version's; `_model_type_after` decides it from this.
        params.setdefault("previous_type", model.type)
        job.params = params
        job.status = JobStatus.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.attempts += 1
        job.heartbeat_at = heartbeat_stamp(job.pk)
        job.save(update_fields=["params", "status", "started_at", "attempts", "heartbeat_at"])
        ClassificationModel.objects.filter(pk=model.pk).update(status=ModelStatus.TRAINING)
    job_claimed(job.pk)
    return job, "run"


def _restore_model_status(job: Job) -> None:
    previous = job.params.get("previous_status", ModelStatus.READY)
    # Only undo our own "training": an archive or deploy that happened meanwhile wins.
    ClassificationModel.objects.filter(pk=job.model_id, status=ModelStatus.TRAINING).update(status=previous)


def _finish_failed(job: Job, reason: str) -> None:
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error=reason[:2000], finished_at=timezone.now())
    _restore_model_status(job)


def train_job_run(*, job_id: int) -> str:
    """Runs one train job to the end; returns "done", "wait" (reschedule) or the final status."""
    job, decision = _start(job_id)
    if decision != "run":
        return decision
    model = ClassificationModel.objects.select_related("dataset").get(pk=job.model_id)
    try:
        version = ModelVersion.objects.filter(job=job).first()
        if version is None:
            version = _train_and_store(job=job, model=model)
        _set_progress(job.id, 0.85)
        from labeling.queue import queue_recompute

        queue_stats = queue_recompute(model=model, version=version)
    except Exception as exc:  # the job records any failure; the previous version keeps serving
        logger.exception("train job failed", extra={"job_id": job.id})
        _finish_failed(job, f"{type(exc).__name__}: {exc}")
        return JobStatus.FAILED
    stability = (version.details or {}).get("stability")
    result = {"model_id": model.id, "version": version.number, "type": version.type,
              "training_examples": version.training_examples, "metrics": _headline(version.metrics),
              "stability": stability, "queue": {"written": queue_stats.written, "pool_size": queue_stats.pool_size}}
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=1.0, result=result, finished_at=timezone.now())
        ClassificationModel.objects.filter(pk=model.pk).update(
            type=_model_type_after(type_before=job.params["previous_type"], labels=list(model.labels), version=version))
        _restore_model_status(job)
    return JobStatus.SUCCEEDED


def _headline(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    return {key: metrics.get(key) for key in ("accuracy", "f1_macro", "evaluated_on", "evaluation")}


def _model_type_after(*, type_before: str, labels: list[str], version: ModelVersion) -> str:
    if version.type == ModelType.FINE_TUNED:
        return ModelType.FINE_TUNED
    counts = (version.details or {}).get("training", {}).get("per_class", {})
    if all(counts.get(label, 0) >= MIN_EXAMPLES_PER_CLASS for label in labels):
        return ModelType.ACTIVE_LEARNING
    # Some class still answers from its description alone: the model stays what it was.
    return type_before


def _prior_head(model: ClassificationModel):
    """The model's describe-and-classify head: its newest one while it matches the model's labels and descriptions.

    The trainer needs a prior over exactly the labels it trains, in their order. When the model's label set or
    its descriptions changed after its newest describe-and-classify version (a trained model gets no new
    zero-shot version then: versions are immutable and it keeps serving its trained one), the prior is built
    now from the current labels and descriptions, as that version would have been, so a lead's edit reaches
    the next training. (Versions built before their descriptions were recorded are taken as matching.)"""
    from .inference import head_for_version
    from .ml.zero_shot import descriptions_used

    prior = model.versions.filter(type=ModelType.DESCRIBE_AND_CLASSIFY).order_by("-number").first()
    if prior is None:
        return None
    built_with = (prior.details or {}).get("descriptions")
    current = descriptions_used(model.labels, model.label_descriptions)
    if list(prior.labels) == list(model.labels) and (built_with is None or built_with == current):
        return head_for_version(prior)
    from .services import _zero_shot_build

    return _zero_shot_build(dataset=model.dataset, labels=list(model.labels), descriptions=dict(model.label_descriptions))


def _train_and_store(*, job: Job, model: ClassificationModel) -> ModelVersion:
    from labeling.embeddings import vectors_load

    from .ml.evaluation import cross_validated_proba, evaluate
    from .ml.thresholds import threshold_curve
    from .ml.training import train_active_learning_head
    from .services import version_create

    train_type = job.params.get("type", ModelType.ACTIVE_LEARNING)
    labels = list(model.labels)
    index = {label: i for i, label in enumerate(labels)}
    dataset = model.dataset
    rows = list(Record.objects.filter(dataset=dataset, label__in=labels).order_by("row_index")
                .values_list("id", "row_index", "label", "split"))
    train = [(rid, row, index[label]) for rid, row, label, split in rows if split == Split.POOL]
    held_out = [(rid, row, index[label]) for rid, row, label, split in rows if split == Split.EVALUATION]
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    train_vectors = vectors[[row for _, row, _ in train]] if train else np.zeros((0, vectors.shape[1]), np.float32)
    y_train = np.array([y for _, _, y in train], dtype=np.int64)
    needs_texts = train_type == ModelType.FINE_TUNED
    train_texts = _texts([rid for rid, _, _ in train]) if needs_texts else None
    _set_progress(job.id, 0.1)

    prior = _prior_head(model)  # both types start from what the label descriptions say
    if train_type == ModelType.FINE_TUNED:
        from .ml.fine_tuning import train_fine_tuned_head

        def make_head(v, y, texts):
            return train_fine_tuned_head(labels=labels, texts=texts, vectors=v, y=y, seed=0, max_threads=1,
                                         prior_head=prior)

        pool_texts, pool_vectors = _self_training_pool(model=model, vectors=vectors, labels_count=len(train))
        head = train_fine_tuned_head(labels=labels, texts=train_texts, vectors=train_vectors, y=y_train, seed=0,
                                     max_threads=1, progress=lambda p: _set_progress(job.id, 0.1 + 0.5 * float(p)),
                                     prior_head=prior, pool_texts=pool_texts, pool_vectors=pool_vectors)
    else:
        def make_head(v, y, texts):
            return train_active_learning_head(labels=labels, vectors=v, y=y, prior_head=prior, seed=0, max_threads=1)

        head = make_head(train_vectors, y_train, None)
    _set_progress(job.id, 0.6)

    if held_out:
        y_true = np.array([y for _, _, y in held_out], dtype=np.int64)
        held_out_texts = _texts([rid for rid, _, _ in held_out]) if needs_texts else None
        proba = head.predict_proba(vectors[[row for _, row, _ in held_out]], held_out_texts)
        evaluation = "holdout"
    elif len(train) >= 2 and (getattr(head, "details", None) or {}).get("self_training"):
        # The self-trained head's own out-of-fold probabilities are already honest: each training record was
        # scored by a model that saw neither its label nor pseudo-labels derived from it. Cross-validating the
        # whole self-training again would cost five trainings.
        y_true, evaluation, proba = y_train, "cross-validation", head.out_of_fold_proba
    elif len(train) >= 2:
        y_true, evaluation = y_train, "cross-validation"
        try:
            proba = cross_validated_proba(make_head=make_head, vectors=train_vectors, y=y_train, n_classes=len(labels),
                                          texts=train_texts, seed=0)
        except ValueError as exc:
            # A fine-tuned head refuses a fold where some class has < 2 examples (TooFewExamples): with so few
            # labels and no evaluation split there is no honest measurement, so the version has no metrics.
            logger.info("no cross-validation for job %s: %s", job.id, exc)
            y_true, proba, evaluation = None, None, None
    else:
        y_true, proba, evaluation = None, None, None
    metrics = curve = None
    if evaluation is not None:
        metrics = evaluate(labels=labels, y_true=y_true, proba=proba, evaluation=evaluation)
        curve = threshold_curve(y_true=y_true, proba=proba)
    _set_progress(job.id, 0.75)

    per_class = {label: int(n) for label, n in zip(labels, np.bincount(y_train, minlength=len(labels)))}
    details: dict[str, Any] = {
        "training": {"type": train_type, "job_id": job.id, "per_class": per_class, "evaluation_labels": len(held_out)},
        "learning_curve": {"labels": len(train) + len(held_out), "training_examples": len(train),
                           "accuracy": metrics["accuracy"] if metrics else None,
                           "f1_macro": metrics["f1_macro"] if metrics else None, "evaluation": evaluation,
                           "evaluated_on": (len(held_out) if evaluation == "holdout" else len(train)) if metrics else None},
        "head": getattr(head, "details", None) or {},
    }
    with transaction.atomic():
        # The model row lock orders this check with any duplicate delivery of the same job.
        ClassificationModel.objects.select_for_update().filter(pk=model.pk).first()
        existing = ModelVersion.objects.filter(job=job).first()
        if existing is not None:
            return existing
        details["stability"] = stability(model=model, new_head=head, new_type=train_type)
        return version_create(model=model, head=head, type=train_type, training_examples=len(train), metrics=metrics,
                              threshold_curve=curve, details=details, job=job)


def _self_training_pool(*, model: ClassificationModel, vectors: np.ndarray,
                        labels_count: int) -> tuple[list[str] | None, np.ndarray | None]:
    """Texts and vectors of a fixed random sample (at most SELF_TRAINING_POOL) of the dataset's unlabeled,
    not excluded pool-split records, for the fine-tuned trainer's self-training; (None, None) when it would not
    self-train anyway. Evaluation-split records are never in it: the metrics must come from records no part of
    the training has read."""
    from .ml.fine_tuning import SELF_TRAINING_MAX_LABELS

    if labels_count >= SELF_TRAINING_MAX_LABELS:
        return None, None
    pool = list(Record.objects.filter(dataset=model.dataset, label__isnull=True, excluded=False, split=Split.POOL)
                .order_by("row_index").values_list("id", "row_index"))
    if not pool:
        return None, None
    rng = np.random.default_rng(model.id)
    chosen = np.sort(rng.choice(len(pool), min(SELF_TRAINING_POOL, len(pool)), replace=False))
    rows = np.array([pool[i][1] for i in chosen], dtype=np.int64)
    return _texts([pool[i][0] for i in chosen]), np.asarray(vectors[rows], dtype=np.float32)


def _texts(record_ids: list[int]) -> list[str]:
    texts = dict(Record.objects.filter(id__in=record_ids).values_list("id", "text"))
    return [texts[record_id] for record_id in record_ids]


# --- stopping signal -------------------------------------------------------------------------------------

def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two label vectors beyond chance; 1.0 when they are identical (even if constant)."""
    from sklearn.metrics import cohen_kappa_score

    if a.size == 0:
        return 1.0
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def stability(*, model: ClassificationModel, new_head, new_type: str) -> dict:
    """Kappa between successive versions' predictions on a fixed sample of the unlabeled pool.

    Compares the new head with the two versions before it (`STABILITY_VERSIONS` = 3): kappas
    [new vs previous, previous vs the one before]. "stable" when every kappa is ≥ 0.99: further labels
    are no longer changing what the model predicts, which is the usual sign to stop labeling.
    """
    from labeling.embeddings import vectors_load

    from .inference import head_for_version

    dataset = model.dataset
    pool = list(Record.objects.filter(dataset=dataset, label__isnull=True, excluded=False, split=Split.POOL)
                .order_by("row_index").values_list("id", "row_index"))
    previous_versions = list(model.versions.order_by("-number")[:STABILITY_VERSIONS - 1])
    if not pool or not previous_versions:
        return {"kappas": [], "versions": [], "stable": False, "sample": len(pool)}
    rng = np.random.default_rng(model.id)
    chosen = np.sort(rng.choice(len(pool), min(STABILITY_SAMPLE, len(pool)), replace=False))
    record_ids = [pool[i][0] for i in chosen]
    rows = np.array([pool[i][1] for i in chosen], dtype=np.int64)
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)[rows]
    uses_texts = new_type == ModelType.FINE_TUNED or any(v.type == ModelType.FINE_TUNED for v in previous_versions)
    texts = _texts(record_ids) if uses_texts else None
    predictions = [new_head.predict_proba(vectors, texts).argmax(axis=1)]
    for version in previous_versions:
        predictions.append(head_for_version(version).predict_proba(vectors, texts).argmax(axis=1))
    kappas = [round(cohen_kappa(predictions[i], predictions[i + 1]), 6) for i in range(len(predictions) - 1)]
    newest = (previous_versions[0].number + 1)
    return {"kappas": kappas, "versions": [newest] + [v.number for v in previous_versions],
            "stable": len(kappas) == STABILITY_VERSIONS - 1 and min(kappas) >= STABLE_KAPPA, "sample": int(len(rows))}


# --- reads for the training panel --------------------------------------------------------------------------

def learning_curve(*, model: ClassificationModel) -> list[dict]:
    """One point per trained version: labels, accuracy, macro-F1 and what they were measured on."""
    points = []
    for number, kind, details in model.versions.order_by("number").values_list("number", "type", "details"):
        point = (details or {}).get("learning_curve")
        if point:
            points.append({"version": number, "type": kind, **point})
    return points
