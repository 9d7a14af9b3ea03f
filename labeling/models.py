"""Datasets, records, labels (with history), the recommendation queue and background jobs.

Labels live on records: every model on a dataset trains on the records whose current label is in
its label set, and `Annotation` keeps every label ever given (who, when, which version
recommended it, how long the annotator looked), so relabeling never loses history.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from labelf_studio.workspaces.models import ApiKey, Workspace


class DatasetStatus(models.TextChoices):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Dataset(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=DatasetStatus.choices, default=DatasetStatus.PROCESSING)
    record_count = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    phase = models.CharField(max_length=20, default="queued")  # queued | parsing | embedding | done
    error = models.TextField(null=True, blank=True)
    source_file = models.CharField(max_length=500, blank=True)  # storage path of the uploaded file
    source_format = models.CharField(max_length=10, blank=True)  # csv | jsonl | json
    metadata_columns = models.JSONField(default=list, blank=True)
    embedded_count = models.PositiveIntegerField(default=0)
    # Rows per vector chunk file, fixed when embedding starts (chunk i holds rows [i*size, (i+1)*size)).
    vector_chunk_size = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class Split(models.TextChoices):
    POOL = "pool"
    EVALUATION = "evaluation"


class Record(models.Model):
    # No index of its own: unique_record_row (dataset, row_index) leads with it. Every index here is
    # maintained for each of a million imported rows, so only the ones queries use are kept.
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="records", db_index=False)
    # Position in the dataset; also the row of this record's vector in the dataset's vector store.
    row_index = models.PositiveIntegerField()
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    label = models.CharField(max_length=200, null=True, blank=True)  # indexed with the dataset, below
    split = models.CharField(max_length=20, choices=Split.choices, default=Split.POOL)
    labeled_at = models.DateTimeField(null=True, blank=True)
    # Near-duplicates a lead chose to keep out of the recommendation pool.
    excluded = models.BooleanField(default=False)
    # Overlap annotators disagreed: no label (training skips it) until a lead adjudicates (labeling/review.py).
    in_conflict = models.BooleanField(default=False)

    class Meta:
        ordering = ["row_index"]
        constraints = [models.UniqueConstraint(fields=["dataset", "row_index"], name="unique_record_row")]
        indexes = [models.Index(fields=["dataset", "label"]), models.Index(fields=["dataset", "split"]),
                   # Partial: conflicts are few, and the review queue must not scan a million-row dataset.
                   models.Index(fields=["dataset"], condition=models.Q(in_conflict=True), name="record_conflicts")]


class Annotation(models.Model):
    """One label given to one record: the full history; `is_current` marks the record's label.

    Several annotations of one record are current at once when overlap annotators labeled it (their
    agreeing labels, or the conflicting ones awaiting review). A lead's review decision is an annotation
    with `adjudicated=True`; it becomes the only current one and the others stay in the history.
    """

    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="annotations")
    model = models.ForeignKey("models_app.ClassificationModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    label = models.CharField(max_length=200)
    recommended_by_version = models.PositiveIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=20, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    is_current = models.BooleanField(default=True)
    adjudicated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"]), models.Index(fields=["record", "is_current"])]


class RecommendationReason(models.TextChoices):
    UNCERTAIN = "uncertain"
    DIVERSE = "diverse"
    RARE_CLASS = "rare-class"
    EVALUATION = "evaluation"


class Recommendation(models.Model):
    """The ranked queue a recommend job writes; annotators lease its head for a few minutes."""

    model = models.ForeignKey("models_app.ClassificationModel", on_delete=models.CASCADE, related_name="recommendations")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()
    score = models.FloatField()
    reason = models.CharField(max_length=20, choices=RecommendationReason.choices)
    predicted_label = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(default=0.0)
    version = models.PositiveIntegerField(null=True, blank=True)
    leased_to = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Distinct annotators who must label the record (2-5 for the model's overlap share, else 1).
    required_annotations = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["model", "record"], name="unique_recommendation")]
        indexes = [models.Index(fields=["model", "position"])]


class JobKind(models.TextChoices):
    IMPORT = "import"
    EMBED = "embed"
    TRAIN = "train"
    RECOMMEND = "recommend"


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Job(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=20, choices=JobKind.choices)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    error = models.TextField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    model = models.ForeignKey("models_app.ClassificationModel", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Set while a worker runs the job and refreshed every few seconds by it; a running job whose
    # heartbeat stopped lost its worker (killed, out of memory) and is re-queued by the sweeper.
    # Queued jobs: when the task was last sent, so the sweeper re-sends one the broker lost.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
