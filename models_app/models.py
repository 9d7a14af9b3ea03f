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
