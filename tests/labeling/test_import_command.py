"""`manage.py import_dataset` runs the upload's import and embedding path in-process."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from labeling.models import Dataset, Job, Record
from tests.labeling.conftest import BAD_DIR

DEMO = Path(settings.BASE_DIR) / "labeling" / "demo_data" / "customer_messages.csv"


def test_imports_and_embeds_the_demo_dataset(workspace):
    out = io.StringIO()
    call_command("import_dataset", str(DEMO), workspace=workspace.name, name="Demo", stdout=out, stderr=io.StringIO())
    dataset = Dataset.objects.get(name="Demo")
    assert (dataset.status, dataset.record_count, dataset.embedded_count) == ("ready", 300, 300)
    assert dataset.metadata_columns == ["channel", "created_at", "customer_tier", "language"]
    assert not Record.objects.filter(dataset=dataset, label__isnull=False).exists()
    assert set(Job.objects.filter(dataset=dataset).values_list("kind", "status")) == {("import", "succeeded"), ("embed", "succeeded")}
    assert "Imported 300 records" in out.getvalue()


def test_skip_embedding_leaves_the_embed_job_queued(workspace):
    call_command("import_dataset", str(DEMO), workspace=str(workspace.id), name="Fast", skip_embedding=True,
                 stdout=io.StringIO(), stderr=io.StringIO())
    dataset = Dataset.objects.get(name="Fast")
    assert dataset.record_count == 300 and dataset.status == "processing" and dataset.embedded_count == 0
    assert Job.objects.get(dataset=dataset, kind="embed").status == "queued"


@pytest.mark.parametrize("filename, message", [
    ("missing_text_column.csv", '"text" column is required'),
    ("ragged.csv", "Line 3 has 2 fields"),
])
def test_bad_files_fail_with_the_reason(workspace, filename, message):
    with pytest.raises(CommandError, match=message):
        call_command("import_dataset", str(Path(BAD_DIR) / filename), workspace=workspace.name, name="Bad",
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert not Record.objects.exists()


def test_unknown_workspace(db):
    with pytest.raises(CommandError, match="No workspace"):
        call_command("import_dataset", str(DEMO), workspace="nope", name="x", stdout=io.StringIO())
