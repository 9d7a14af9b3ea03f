"""Writes for classification models: create (describe-and-classify), update, versions, deploy, archive.

Business rules live here; the API handlers and the browser views call these functions and turn
`ApiError` into their own answers. Every write that touches more than one row is one transaction.
"""
from __future__ import annotations

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max

from labelf_studio.api import ApiError, invalid_field
from labelf_studio.workspaces.services import audit_record
from labeling.models import Dataset, DatasetStatus, Record, Split

from .ml.artifacts import Head, checksum, dump_head
from .models import ClassificationModel, DeploymentEvent, ModelStatus, ModelType, ModelVersion

MAX_LABELS = 1000
MAX_LABEL_CHARS = 200  # Record.label's column width
MAX_DESCRIPTION_CHARS = 2000
MAX_NAME_CHARS = 200
# The zero-shot head refines itself on a sample of the dataset's vectors; more rows add time, not accuracy.
POOL_SAMPLE_ROWS = 20_000
# Labeled records a describe-and-classify version is measured on when it is created or its descriptions change.
ZERO_SHOT_EVALUATION_ROWS = 20_000


# Larger ids cannot exist and would overflow the database's integer columns (an error, not a 404).
MAX_ID = 2**63 - 1


# --- validation (shared by the API and the browser form) ----------------------------------------

def _check_text(field: str, value: str) -> None:
    # PostgreSQL's text and jsonb refuse NUL characters; refuse them here as bad input.
    if "\x00" in value:
        raise invalid_field(f"{field}: must not contain NUL characters")


def validate_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid_field("name: expected a non-empty string")
    if len(name.strip()) > MAX_NAME_CHARS:
        raise invalid_field(f"name: at most {MAX_NAME_CHARS} characters")
    _check_text("name", name)
    return name.strip()


def validate_labels(labels) -> tuple[list[str], dict[str, str]]:
    """`[{"name", "description"}]` → (ordered names, descriptions). Names are unique, non-empty, at most 1,000."""
    if not isinstance(labels, list):
        raise invalid_field("labels: expected a list of {\"name\", \"description\"} objects")
    if not labels:
        raise invalid_field("labels: at least one label is required")
    if len(labels) > MAX_LABELS:
        raise invalid_field(f"labels: at most {MAX_LABELS} labels, got {len(labels)}")
    names: list[str] = []
    descriptions: dict[str, str] = {}
    seen: set[str] = set()
    for i, item in enumerate(labels):
        if not isinstance(item, dict):
            raise invalid_field(f"labels[{i}]: expected an object with name and description")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid_field(f"labels[{i}].name: expected a non-empty string")
        name = name.strip()
        if len(name) > MAX_LABEL_CHARS:
            raise invalid_field(f"labels[{i}].name: at most {MAX_LABEL_CHARS} characters")
        if name in seen:
            raise invalid_field(f"labels[{i}].name: duplicate label {name!r}")
        _check_text(f"labels[{i}].name", name)
        description = item.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise invalid_field(f"labels[{i}].description: expected a string")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise invalid_field(f"labels[{i}].description: at most {MAX_DESCRIPTION_CHARS} characters")
        _check_text(f"labels[{i}].description", description)
        seen.add(name)
        names.append(name)
        descriptions[name] = description.strip()
    return names, descriptions


def validate_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise invalid_field("confidence_threshold: expected a number between 0 and 1")
    return float(value)


def _validate_descriptions(labels: list[str], value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid_field("label_descriptions: expected an object mapping label names to descriptions")
    for label, description in value.items():
        if label not in labels:
            raise invalid_field(f"label_descriptions: {label!r} is not one of the model's labels")
        if not isinstance(description, str):
            raise invalid_field(f"label_descriptions.{label}: expected a string")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise invalid_field(f"label_descriptions.{label}: at most {MAX_DESCRIPTION_CHARS} characters")
        _check_text(f"label_descriptions.{label}", description)
    return {label: description.strip() for label, description in value.items()}


def _validate_label_set(model: ClassificationModel, labels) -> tuple[list[str], dict[str, str]]:
    """A new ordered label set for `model`, validated exactly as on create → (names, descriptions of those names).

    A label given with a description (a string) gets it; one given without keeps the description it has (a new
    label has none). There is no rename: a new name is a new label, and the old name is removed.
    """
    names, given = validate_labels(labels)
    descriptions = {}
    for item, name in zip(labels, names):  # validate_labels refused any item it could not name
        described = isinstance(item.get("description"), str)
        descriptions[name] = given[name] if described else model.label_descriptions.get(name, "")
    return names, descriptions


def _check_dataset_usable(dataset: Dataset) -> None:
    if dataset.status == DatasetStatus.PROCESSING:
        raise ApiError(409, "DATASET_PROCESSING", "Dataset is still being imported; try again when its status is ready")
    if dataset.status != DatasetStatus.READY:
        raise ApiError(409, "CONFLICT", "Dataset import failed; upload it again")


# --- describe-and-classify ------------------------------------------------------------------------

def _pool_sample(dataset: Dataset, *, seed: int) -> np.ndarray | None:
    from labeling.embeddings import vectors_load

    if dataset.record_count == 0:
        return None
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    if len(vectors) > POOL_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), POOL_SAMPLE_ROWS, replace=False))
        vectors = vectors[rows]
    return vectors


def _zero_shot_build(*, dataset: Dataset, labels: list[str], descriptions: dict[str, str]):
    from labeling.embeddings import embed_texts

    from .ml.zero_shot import build_zero_shot_head

    return build_zero_shot_head(labels=labels, descriptions=descriptions, embed=embed_texts,
                                pool_vectors=_pool_sample(dataset, seed=dataset.id), seed=0)


def _holdout_metrics(*, dataset: Dataset, head: Head) -> dict | None:
    """Metrics of a describe-and-classify head on the dataset's labels, when it has any in the head's label set.

    The evaluation split when it holds labels; otherwise every labeled record (imported labels, say):
    a describe-and-classify head never trains on labels, so each of them is held out from it.
    """
    from labeling.embeddings import vectors_load

    from .ml.evaluation import evaluate

    labeled = Record.objects.filter(dataset=dataset, label__in=head.labels)
    rows = list(labeled.filter(split=Split.EVALUATION).values_list("row_index", "label")[:ZERO_SHOT_EVALUATION_ROWS])
    if not rows:
        rows = list(labeled.order_by("row_index").values_list("row_index", "label")[:ZERO_SHOT_EVALUATION_ROWS])
    if not rows:
        return None
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    indices = np.fromiter((row for row, _ in rows), dtype=np.int64, count=len(rows))
    proba = head.predict_proba(vectors[indices])
    return evaluate(labels=head.labels, y_true=[label for _, label in rows], proba=proba, evaluation="holdout")


def model_create(*, workspace, dataset: Dataset, name: str, labels, user=None, api_key=None) -> ClassificationModel:
    """A describe-and-classify model whose version 1 classifies at once (status ready)."""
    name = validate_name(name)
    names, descriptions = validate_labels(labels)
    if dataset.workspace_id != workspace.id:
        raise ApiError(404, "NOT_FOUND", "Dataset not found")
    _check_dataset_usable(dataset)
    # The slow part (embedding descriptions, reading the pool) happens before the transaction opens.
    head = _zero_shot_build(dataset=dataset, labels=names, descriptions=descriptions)
    metrics = _holdout_metrics(dataset=dataset, head=head)
    with transaction.atomic():
        model = ClassificationModel.objects.create(
            workspace=workspace, dataset=dataset, name=name, type=ModelType.DESCRIBE_AND_CLASSIFY,
            status=ModelStatus.READY, labels=names, label_descriptions=descriptions,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        version_create(model=model, head=head, type=ModelType.DESCRIBE_AND_CLASSIFY, training_examples=0,
                       metrics=metrics, details=getattr(head, "details", None))
        # Rank the pool now, so the first annotator to open the labeling page finds a queue waiting.
        from labeling.queue import queue_request_recompute

        queue_request_recompute(model=model)
        audit_record(workspace=workspace, action="model.create", target=f"model {model.id} ({model.name})",
                     actor=user, actor_key=api_key, details={"labels": len(names), "dataset_id": dataset.id})
    return model


def model_update(*, model: ClassificationModel, name=None, confidence_threshold=None, labels=None,
                 label_descriptions=None, user=None, api_key=None) -> ClassificationModel:
    """Renames, sets the threshold, changes the label set, edits descriptions. All validated before anything is
    written, then one transaction.

    `labels` is the model's full new ordered label set (`[{"name", "description"?}]`, validated as on create):
    new names are added, missing ones removed, and the order is the new one. Records keep their labels (they are
    the dataset's, maybe shared with other models); the model just stops using records whose label left its set.
    An archived model's label set cannot change (409 MODEL_ARCHIVED). `label_descriptions` apply after `labels`.

    When the labels or descriptions change, a describe-and-classify model gets a new zero-shot version at once.
    A trained (active-learning or fine-tuned) model keeps serving its version, whose labels are fixed, and an
    active-learning retrain on the new label set is requested (absorbed by a queued one; skipped while no record
    carries one of the labels). An unchanged label set changes nothing.
    """
    fields: dict = {}
    if name is not None:
        fields["name"] = validate_name(name)
    if confidence_threshold is not None:
        fields["confidence_threshold"] = validate_threshold(confidence_threshold)
    old_labels = list(model.labels)
    old_descriptions = {label: model.label_descriptions.get(label, "") for label in old_labels}
    new_labels, new_descriptions = old_labels, old_descriptions
    if labels is not None:
        _check_labels_editable(model)
        new_labels, new_descriptions = _validate_label_set(model, labels)
    if label_descriptions is not None:
        new_descriptions = {**new_descriptions, **_validate_descriptions(new_labels, label_descriptions)}
    labels_changed = new_labels != old_labels
    descriptions_changed = new_descriptions != old_descriptions
    if labels_changed:
        fields["labels"] = new_labels
    if labels_changed or descriptions_changed or label_descriptions is not None:
        fields["label_descriptions"] = new_descriptions
    head = metrics = None
    if model.type == ModelType.DESCRIBE_AND_CLASSIFY and (labels_changed or descriptions_changed):
        dataset = model.dataset
        _check_dataset_usable(dataset)
        # The slow part (embedding descriptions, reading the pool) happens before the transaction opens.
        head = _zero_shot_build(dataset=dataset, labels=new_labels, descriptions=new_descriptions)
        metrics = _holdout_metrics(dataset=dataset, head=head)
    if not fields:
        return model
    with transaction.atomic():
        locked = ClassificationModel.objects.select_for_update().get(pk=model.pk)
        if "label_descriptions" in fields:
            if labels is not None:
                _check_labels_editable(locked)
            # The new set (and the head) were computed from what this call read: another lead's change since
            # then would be silently undone.
            if list(locked.labels) != old_labels or locked.label_descriptions != model.label_descriptions:
                raise ApiError(409, "CONFLICT", "The model's labels were changed meanwhile; reload and try again")
        ClassificationModel.objects.filter(pk=model.pk).update(**fields)
        for field, value in fields.items():
            setattr(model, field, value)
        if head is not None:
            version_create(model=model, head=head, type=ModelType.DESCRIBE_AND_CLASSIFY, training_examples=0,
                           metrics=metrics, details=getattr(head, "details", None))
            # Rank the pool with the new version, so a new label gets its predictions in the queue too.
            from labeling.queue import queue_request_recompute

            queue_request_recompute(model=model)
        retrain_job = None
        if labels_changed and head is None:  # a trained model
            retrain_job = _request_retrain_after_label_change(model=model, user=user, api_key=api_key)
        if labels_changed:
            kept_old_order = [label for label in old_labels if label in new_labels]
            audit_record(workspace=model.workspace, action="model.labels", target=f"model {model.id} ({model.name})",
                         actor=user, actor_key=api_key, details={
                             "added": [label for label in new_labels if label not in old_labels],
                             "removed": [label for label in old_labels if label not in new_labels],
                             "reordered": [label for label in new_labels if label in old_labels] != kept_old_order,
                             "descriptions_changed": descriptions_changed, "labels": new_labels,
                             "new_version": head is not None, "retrain_job_id": retrain_job.id if retrain_job else None})
        # Other fields (and descriptions edited without a label-set change) keep their usual entry.
        other = sorted(field for field in fields if field not in ("labels", "label_descriptions"))
        if "label_descriptions" in fields and not labels_changed:
            other.append("label_descriptions")
        if other:
            audit_record(workspace=model.workspace, action="model.update", target=f"model {model.id} ({model.name})",
                         actor=user, actor_key=api_key, details={"fields": other, "new_version": head is not None})
    model.refresh_from_db()
    return model


def _check_labels_editable(model: ClassificationModel) -> None:
    if model.status == ModelStatus.ARCHIVED:
        raise ApiError(409, "MODEL_ARCHIVED", "This model is archived; deploy it again to change its labels")


def _request_retrain_after_label_change(*, model: ClassificationModel, user, api_key):
    """A trained model's version keeps its own labels: an active-learning retrain (the one that can learn a label
    without examples yet, from its description) brings the label set in. Absorbed by a queued train job;
    None while no record carries one of the new labels (the next labels request one as usual)."""
    from .training_services import _has_training_labels, train_request

    if not _has_training_labels(model=model):
        return None
    job, _ = train_request(model=model, type=ModelType.ACTIVE_LEARNING, user=user, api_key=api_key)
    return job


# --- versions ---------------------------------------------------------------------------------------

def artifact_path(*, model_id: int, number: int, digest: str) -> str:
    return f"artifacts/model_{model_id}/v{number}-{digest[:12]}.pkl"


def _remove_uncommitted_artifacts(*, path: str, number: int) -> None:
    """Deletes artifact files numbered `number`: under the model's row lock no version holds that number
    yet, so they were left by an attempt that never committed (and may be cut off mid-write)."""
    directory = path.rsplit("/", 1)[0]
    try:
        _, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return
    for name in files:
        if name.startswith(f"v{number}-"):
            default_storage.delete(f"{directory}/{name}")


def version_create(*, model: ClassificationModel, head: Head, type: str, training_examples: int, metrics: dict | None = None,
                   threshold_curve: list | None = None, details: dict | None = None, job=None) -> ModelVersion:
    """Stores `head` as the model's next immutable version and returns it.

    The number is max + 1 under a row lock on the model, so concurrent jobs never collide. The artifact
    is written before the row (inside the same transaction): a version row always has its file. A
    rolled-back transaction, or a worker killed mid-write, leaves an unreferenced (possibly partial)
    file numbered like the next version; the next version_create removes it before writing its own.
    A deployed model that is not pinned serves the new version from the moment the transaction commits.
    """
    ModelType(type)
    data = dump_head(head)
    digest = checksum(data)
    with transaction.atomic():
        locked = ClassificationModel.objects.select_for_update().get(pk=model.pk)
        number = (locked.versions.aggregate(top=Max("number"))["top"] or 0) + 1
        path = artifact_path(model_id=model.pk, number=number, digest=digest)
        _remove_uncommitted_artifacts(path=path, number=number)
        saved = default_storage.save(path, ContentFile(data))
        if saved != path:
            raise RuntimeError(f"storage saved the artifact as {saved}, not {path}")
        version = ModelVersion.objects.create(
            model=locked, number=number, type=type, labels=list(head.labels), artifact_path=path, checksum=digest,
            training_examples=training_examples, metrics=metrics, threshold_curve=threshold_curve,
            details=details or {}, job=job,
        )
        updates = {"latest_version": version, "type": type}
        # served_version is set exactly while the model is deployed (also while a training job marks it
        # `training`), so it, not the status, says whether the new version goes live.
        if locked.served_version_id is not None and locked.pinned_version is None:
            updates["served_version"] = version
        ClassificationModel.objects.filter(pk=model.pk).update(**updates)
        for field, value in updates.items():
            setattr(model, field, value)
        from .tasks import version_summarise

        transaction.on_commit(lambda: version_summarise.delay(version.id))
    return version


# --- deploy and archive ------------------------------------------------------------------------------

def model_deploy(*, model: ClassificationModel, version: int | None = None, user=None, api_key=None) -> ClassificationModel:
    """Serves `version` (pinned until the next deploy call) or, without one, the newest version and every newer one."""
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise invalid_field("version: expected an integer version number")
    with transaction.atomic():
        locked = ClassificationModel.objects.select_for_update().get(pk=model.pk)
        if version is None:
            served = locked.versions.order_by("-number").first()
            if served is None:
                raise ApiError(409, "CONFLICT", "The model has no version to deploy yet")
        else:
            served = locked.versions.filter(number=version).first() if 0 < version <= MAX_ID else None
            if served is None:
                raise ApiError(404, "NOT_FOUND", f"Version {version} not found")
        pinned = served.number if version is not None else None
        ClassificationModel.objects.filter(pk=model.pk).update(
            status=ModelStatus.DEPLOYED, served_version=served, pinned_version=pinned)
        DeploymentEvent.objects.create(model=locked, action="deploy", version=served.number, pinned=pinned is not None,
                                       user=user if getattr(user, "is_authenticated", False) else None, api_key=api_key)
        audit_record(workspace=locked.workspace, action="model.deploy", target=f"model {model.id} ({locked.name})",
                     actor=user, actor_key=api_key, details={"version": served.number, "pinned": pinned is not None})
    model.refresh_from_db()
    return model


def model_archive(*, model: ClassificationModel, user=None, api_key=None) -> ClassificationModel:
    """Stops serving; every version is kept and the model can be deployed again."""
    with transaction.atomic():
        locked = ClassificationModel.objects.select_for_update().get(pk=model.pk)
        ClassificationModel.objects.filter(pk=model.pk).update(
            status=ModelStatus.ARCHIVED, served_version=None, pinned_version=None)
        DeploymentEvent.objects.create(model=locked, action="archive", version=None,
                                       user=user if getattr(user, "is_authenticated", False) else None, api_key=api_key)
        audit_record(workspace=locked.workspace, action="model.archive", target=f"model {model.id} ({locked.name})",
                     actor=user, actor_key=api_key)
    model.refresh_from_db()
    return model
