"""Classification models, their immutable versions, and the deploy/archive history."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from labelf_studio.workspaces.models import ApiKey, Workspace


class ModelType(models.TextChoices):
    DESCRIBE_AND_CLASSIFY = "describe-and-classify"
    ACTIVE_LEARNING = "active-learning"
    FINE_TUNED = "fine-tuned"
    PROMPT_TUNED = "prompt-tuned"


class ModelStatus(models.TextChoices):
    DRAFT = "draft"
    TRAINING = "training"
    READY = "ready"
    DEPLOYED = "deployed"
    ARCHIVED = "archived"


class ClassificationModel(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="models")
    dataset = models.ForeignKey("labeling.Dataset", on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=30, choices=ModelType.choices, default=ModelType.DESCRIBE_AND_CLASSIFY)
    status = models.CharField(max_length=20, choices=ModelStatus.choices, default=ModelStatus.READY)
    labels = models.JSONField(default=list)  # ordered label names
    label_descriptions = models.JSONField(default=dict)
    confidence_threshold = models.FloatField(default=0.5)
    # None: serve the newest version; a number pins that version until the next deploy call.
    pinned_version = models.PositiveIntegerField(null=True, blank=True)
    # Denormalised pointers kept by the services (version_create, model_deploy, model_archive) so that
    # inference finds what to serve, and lists render, with one query and no per-model lookups.
    latest_version = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    served_version = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    retrain_every = models.PositiveIntegerField(default=20)
    evaluation_share = models.FloatField(default=0.1)
    # Share of queued records that `overlap_annotators` different annotators label (agreement, review).
    overlap_share = models.FloatField(default=0.1)
    overlap_annotators = models.PositiveSmallIntegerField(default=2)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """Immutable once written: the artifact file is content-addressed by its SHA-256 checksum."""

    model = models.ForeignKey(ClassificationModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    type = models.CharField(max_length=30, choices=ModelType.choices)
    labels = models.JSONField(default=list)
    artifact_path = models.CharField(max_length=500)
    checksum = models.CharField(max_length=64)
    training_examples = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(null=True, blank=True)
    threshold_curve = models.JSONField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)  # calibration, learning-curve point, training options
    job = models.ForeignKey("labeling.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Derived after the version exists (not part of the artifact): predicted label counts over the whole
    # dataset and a few sample predictions, written once by tasks.version_summarise.
    summary = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="unique_model_version")]


class DeploymentEvent(models.Model):
    model = models.ForeignKey(ClassificationModel, on_delete=models.CASCADE, related_name="deployment_events")
    action = models.CharField(max_length=20)  # deploy | archive
    version = models.PositiveIntegerField(null=True, blank=True)
    pinned = models.BooleanField(default=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


# --- data quality: possible label errors and near-duplicate groups ------------------------------------

class ScanStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class LabelIssueScan(models.Model):
    """One run of label-error detection over a model's labeled records (models_app.label_issue_tasks)."""

    model = models.ForeignKey(ClassificationModel, on_delete=models.CASCADE, related_name="label_issue_scans")
    status = models.CharField(max_length=20, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)  # counts, method, out-of-fold accuracy, why nothing was checked
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]


class LabelIssueStatus(models.TextChoices):
    OPEN = "open"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


class LabelIssue(models.Model):
    """A labeled record whose label is probably wrong, with the label the out-of-sample model suggests.

    Open issues of a model are replaced by its next scan; accepted and dismissed ones stay as the review's
    history, and a record dismissed with a given label is not raised again while it keeps that label.
    """

    model = models.ForeignKey(ClassificationModel, on_delete=models.CASCADE, related_name="label_issues")
    scan = models.ForeignKey(LabelIssueScan, on_delete=models.CASCADE, related_name="issues")
    record = models.ForeignKey("labeling.Record", on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()  # 1 = most likely wrong, within its scan
    given_label = models.CharField(max_length=200)
    suggested_label = models.CharField(max_length=200)
    score = models.FloatField()  # probability that given_label is wrong
    status = models.CharField(max_length=20, choices=LabelIssueStatus.choices, default=LabelIssueStatus.OPEN)
    resolved_label = models.CharField(max_length=200, null=True, blank=True)  # the label an accept applied
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["rank", "id"]
        constraints = [models.UniqueConstraint(fields=["scan", "record"], name="unique_label_issue_per_scan")]
        indexes = [models.Index(fields=["model", "status", "rank"])]


class DuplicateScan(models.Model):
    """Near-duplicate groups of one dataset at one similarity threshold (labeling.duplicates), kept as a cache:
    records' texts and vectors never change, so a finished scan stays valid until records are appended."""

    dataset = models.ForeignKey("labeling.Dataset", on_delete=models.CASCADE, related_name="duplicate_scans")
    threshold = models.DecimalField(max_digits=3, decimal_places=2)
    status = models.CharField(max_length=20, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(null=True, blank=True)
    method = models.CharField(max_length=20, blank=True)  # exact | approximate
    groups = models.JSONField(default=list, blank=True)  # [[record id, ...], ...], largest group first
    duplicate_records = models.PositiveIntegerField(default=0)  # records beyond one per group
    # The dataset's size when the groups were computed: records appended later make the scan stale.
    record_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "threshold"], name="unique_duplicate_scan")]
