"""Workspace backup and restore: export_workspace / import_workspace round-trip a workspace into a
fresh database (migrated in a subprocess) where the restored deployed model answers exactly like the
original; damaged or clashing imports are refused and leave nothing behind."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from labelf_studio.workspaces.models import Membership, Workspace
from labelf_studio.workspaces.services import api_key_create
from labeling.embeddings import vectors_cache_clear, vectors_load
from labeling.models import Annotation, Dataset, Record
from labeling.queue import labels_submit
from labeling.services import dataset_create_from_records
from models_app import inference
from models_app.models import ClassificationModel, DeploymentEvent, ModelVersion
from models_app.services import model_create, model_deploy, model_update
from models_app.training_services import train_request
from tests.factories import make_user, make_workspace

pytestmark = pytest.mark.django_db(transaction=True)  # imports and train jobs run on commit, eagerly

REPO = Path(__file__).resolve().parents[2]
LABELS = [
    {"name": "card_arrival", "description": "The customer is waiting for a new card to arrive in the post"},
    {"name": "exchange_rate", "description": "Questions about currency exchange rates"},
    {"name": "lost_or_stolen_card", "description": "The customer lost their card or it was stolen"},
    {"name": "top_up_failed", "description": "Adding money to the account (a top-up) did not work"},
]
PER_LABEL = 10
PROBE_TEXTS = [
    "My new card still has not arrived, it has been two weeks",
    "What rate do you use when I pay in dollars?",
    "Someone took my wallet with my card in it",
    "I tried adding money but the top up was declined",
    "hello?",
]


def _rows(banking77_dir: str) -> list[tuple[str, str]]:
    wanted = {label["name"] for label in LABELS}
    taken: dict[str, int] = {}
    rows = []
    with open(os.path.join(banking77_dir, "train.csv"), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in wanted and taken.get(row["category"], 0) < PER_LABEL:
                taken[row["category"]] = taken.get(row["category"], 0) + 1
                rows.append((row["text"], row["category"]))
    return rows


@pytest.fixture(autouse=True)
def fresh_caches():
    # Heads and vectors are cached per process by id; a restored workspace gets new ids in this database.
    inference.clear_cache()
    vectors_cache_clear()
    yield
    inference.clear_cache()
    vectors_cache_clear()


@pytest.fixture
def source(settings, banking77_dir):
    """A workspace with members, a 40-record dataset in several vector chunks, a describe-and-classify model
    trained into an active-learning and a fine-tuned version, labels with history, deployed, threshold set."""
    settings.LABELF = {**settings.LABELF, "EMBEDDING_CHUNK_SIZE": 16}
    workspace = make_workspace("Acme Support")
    lead = make_user(workspace, "lead", username="lena")
    lead.email = "lena@example.com"
    lead.save()
    annotator = make_user(workspace, "annotator", username="anna")
    api_key_create(workspace=workspace, role="admin", user=lead)
    rows = _rows(banking77_dir)
    dataset = dataset_create_from_records(
        workspace=workspace, name="tickets", user=lead,
        records=[{"text": text, "metadata": {"channel": "email" if i % 2 else "chat", "n": i},
                  **({"label": category, "split": "evaluation"} if i % 5 == 0 else {})}
                 for i, (text, category) in enumerate(rows)])
    dataset.refresh_from_db()
    assert dataset.status == "ready" and dataset.record_count == len(rows), dataset.error
    model = model_create(workspace=workspace, dataset=dataset, name="Contact reason", labels=LABELS, user=lead)
    ClassificationModel.objects.filter(pk=model.pk).update(retrain_every=500)  # versions only when asked for here
    model.refresh_from_db()
    truth = {record.id: category for record, (_, category) in zip(dataset.records.order_by("row_index"), rows)}
    pool = list(dataset.records.filter(split="pool").order_by("row_index"))
    labels_submit(model=model, labels=[{"record_id": r.id, "label": truth[r.id], "duration_ms": 1500} for r in pool[:-1]],
                  user=annotator)
    # History: the lead relabels one record twice (wrong, then right again).
    relabeled = pool[0]
    wrong = next(label["name"] for label in LABELS if label["name"] != truth[relabeled.id])
    labels_submit(model=model, labels=[{"record_id": relabeled.id, "label": wrong}], user=lead)
    labels_submit(model=model, labels=[{"record_id": relabeled.id, "label": truth[relabeled.id]}], user=lead)
    train_request(model=model, type="active-learning", user=lead)
    train_request(model=model, type="fine-tuned", user=lead)
    model.refresh_from_db()
    assert model.versions.count() == 3
    model_deploy(model=model, version=3, user=lead)  # pinned: the fine-tuned version (uses the texts too)
    model = model_update(model=model, confidence_threshold=0.37, user=lead)
    Record.objects.filter(pk=pool[-1].pk).update(excluded=True)
    assert model.served_version.number == 3 and model.served_version.type == "fine-tuned"
    return workspace, dataset, model


def _export(workspace, path: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_workspace", workspace.name, str(path), stdout=out, stderr=err)
    assert "API keys are not exported" in err.getvalue()
    return out.getvalue()


def _storage_files(media_root) -> set[str]:
    root = Path(media_root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


FRESH_SCRIPT = r"""
import json
import numpy as np
from django.contrib.auth import get_user_model
from labeling.embeddings import vectors_load
from labeling.models import Annotation, Record
from models_app import inference
from models_app.models import ClassificationModel

texts = json.load(open(OUT_DIR + "/probe.json"))
model = ClassificationModel.objects.select_related("served_version", "dataset", "workspace").get(name="Contact reason")
dataset = model.dataset
version = model.served_version
vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
head = inference.head_for_version(version)
record_texts = list(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("text", flat=True))
User = get_user_model()
result = {
    "workspace": [model.workspace.name, model.workspace.plan, model.workspace.rate_limit_per_minute],
    "members": sorted([m.user.username, m.user.email, m.role, m.user.has_usable_password()]
                      for m in model.workspace.memberships.select_related("user")),
    "status": model.status, "type": model.type, "pinned": model.pinned_version, "served": version.number,
    "threshold": model.confidence_threshold, "labels": model.labels, "descriptions": model.label_descriptions,
    "predictions": inference.classify(version=version, texts=texts, threshold=model.confidence_threshold),
    "dataset_proba": head.predict_proba(vectors, record_texts).tolist(),
    "versions": [[v.number, v.type, v.checksum, v.metrics, v.threshold_curve] for v in model.versions.order_by("number")],
    "annotations": Annotation.objects.filter(record__dataset=dataset).count(),
    "history": sorted([a.record.row_index, a.label, a.user.username if a.user else None, a.is_current,
                       a.created_at.isoformat(), a.model_id == model.id]
                      for a in Annotation.objects.filter(record__dataset=dataset).select_related("record", "user")),
    "records": [[r.row_index, r.label, r.split, r.excluded, r.metadata]
                for r in Record.objects.filter(dataset=dataset).order_by("row_index")],
    "deployments": list(model.deployment_events.order_by("created_at", "id").values_list("action", "version", "pinned")),
}
json.dump(result, open(OUT_DIR + "/restored.json", "w"))
"""


def _original_state(model: ClassificationModel) -> dict:
    model.refresh_from_db()
    dataset = model.dataset
    version = model.served_version
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    head = inference.head_for_version(version)
    record_texts = list(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("text", flat=True))
    return {
        "predictions": inference.classify(version=version, texts=PROBE_TEXTS, threshold=model.confidence_threshold),
        "dataset_proba": head.predict_proba(vectors, record_texts).tolist(),
        "versions": [[v.number, v.type, v.checksum, v.metrics, v.threshold_curve] for v in model.versions.order_by("number")],
        "annotations": Annotation.objects.filter(record__dataset=dataset).count(),
        "history": sorted([a.record.row_index, a.label, a.user.username if a.user else None, a.is_current,
                           a.created_at.isoformat(), a.model_id == model.id]
                          for a in Annotation.objects.filter(record__dataset=dataset).select_related("record", "user")),
        "records": [[r.row_index, r.label, r.split, r.excluded, r.metadata]
                    for r in Record.objects.filter(dataset=dataset).order_by("row_index")],
        "deployments": [list(row) for row in
                        model.deployment_events.order_by("created_at", "id").values_list("action", "version", "pinned")],
    }


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def test_round_trip_into_a_fresh_database_serves_identical_predictions(source, tmp_path):
    workspace, dataset, model = source
    archive = tmp_path / "acme.tar.gz"
    summary = _export(workspace, archive)
    assert summary.count("\n") == 1 and "40 records" in summary and "3 versions" in summary
    original = _original_state(model)
    # One label per record imported into the pool but the last (some of them moved to the evaluation split
    # when the queue recommended them as evaluation samples), plus the two superseded ones of the record
    # relabeled twice. Imported evaluation labels have no annotation.
    imported_pool = sum(1 for metadata in dataset.records.values_list("metadata", flat=True) if metadata["n"] % 5)
    assert original["annotations"] == (imported_pool - 1) + 2
    assert sum(1 for row in original["history"] if not row[3]) == 2  # two superseded labels kept

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "probe.json").write_text(json.dumps(PROBE_TEXTS))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.test",
           "DATABASE_URL": f"sqlite:///{fresh / 'fresh.sqlite3'}", "MEDIA_ROOT": str(fresh / "media"),
           "HF_HUB_OFFLINE": "1"}
    _run(["migrate", "--no-input", "-v", "0"], env)
    imported = _run(["import_workspace", str(archive)], env)
    assert imported.stdout.strip().startswith("Imported workspace 'Acme Support'") and imported.stdout.count("\n") == 1
    assert "without a usable password: lena, anna" in imported.stderr or "without a usable password: anna, lena" in imported.stderr
    assert "create_api_key" in imported.stderr
    again = subprocess.run([sys.executable, "manage.py", "import_workspace", str(archive)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "a workspace named 'Acme Support' already exists" in again.stderr
    _run(["shell", "-c", f"OUT_DIR = {str(fresh)!r}\n" + FRESH_SCRIPT], env)
    restored = json.loads((fresh / "restored.json").read_text())

    assert restored["workspace"] == ["Acme Support", "enterprise", 100_000]
    assert restored["members"] == [["anna", "", "annotator", False], ["lena", "lena@example.com", "lead", False]]
    assert (restored["status"], restored["type"], restored["pinned"], restored["served"]) == ("deployed", "fine-tuned", 3, 3)
    assert restored["threshold"] == 0.37 == model.confidence_threshold
    assert restored["labels"] == model.labels and restored["descriptions"] == model.label_descriptions
    for ours, theirs in zip(original["predictions"], restored["predictions"]):
        assert theirs["label"] == ours["label"] and theirs["above_threshold"] == ours["above_threshold"]
        assert theirs["scores"].keys() == ours["scores"].keys()
        for label, score in ours["scores"].items():
            assert abs(theirs["scores"][label] - score) <= 1e-9
    assert np.abs(np.array(restored["dataset_proba"]) - np.array(original["dataset_proba"])).max() <= 1e-9
    assert restored["versions"] == original["versions"]  # checksums, metrics and threshold curves
    assert restored["annotations"] == original["annotations"]
    assert restored["history"] == original["history"]  # who, what, current or not, when, which model
    assert restored["records"] == original["records"]  # labels, splits, excluded, metadata
    assert restored["deployments"] == original["deployments"]


def test_import_refuses_an_existing_name_and_restores_beside_it_with_rename(source, tmp_path, settings):
    workspace, dataset, model = source
    archive = tmp_path / "acme.tar.gz"
    _export(workspace, archive)
    before = _storage_files(settings.MEDIA_ROOT)
    with pytest.raises(CommandError, match="already exists.*--rename"):
        call_command("import_workspace", str(archive), stdout=io.StringIO(), stderr=io.StringIO())
    assert Workspace.objects.filter(name="Acme Support").count() == 1
    assert _storage_files(settings.MEDIA_ROOT) == before

    err = io.StringIO()
    call_command("import_workspace", str(archive), "--rename", "Acme copy", stdout=io.StringIO(), stderr=err)
    assert "Kept 2 existing user(s)" in err.getvalue()
    copy = Workspace.objects.get(name="Acme copy")
    assert get_user_model().objects.get(username="lena").has_usable_password()  # an existing user is left alone
    assert dict(Membership.objects.filter(workspace=copy).values_list("user__username", "role")) == {
        "lena": "lead", "anna": "annotator"}
    copied_model = ClassificationModel.objects.get(workspace=copy)
    assert copied_model.pk != model.pk and copied_model.dataset.pk != dataset.pk
    assert copied_model.served_version.number == 3 and copied_model.served_version.model_id == copied_model.pk
    assert Annotation.objects.filter(record__dataset__workspace=copy).count() == \
        Annotation.objects.filter(record__dataset=dataset).count()
    assert not Annotation.objects.filter(record__dataset__workspace=copy, model=model).exists()
    assert DeploymentEvent.objects.filter(model=copied_model).count() == 1
    # Both workspaces classify from their own files.
    inference.clear_cache()
    assert inference.classify(version=copied_model.served_version, texts=PROBE_TEXTS, threshold=0.37) == \
        inference.classify(version=model.served_version, texts=PROBE_TEXTS, threshold=0.37)


def _rewrite(archive: Path, target: Path, change, *, fix_manifest: bool) -> None:
    """Copies the archive, passing each member through `change(name, bytes)`; optionally re-signs the manifest."""
    members = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            members.append((member.name, tar.extractfile(member).read()))
    members = [(name, change(name, data)) for name, data in members]
    if fix_manifest:
        manifest = json.loads(members[0][1])
        for name, data in members[1:]:
            manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        members[0] = ("manifest.json", json.dumps(manifest).encode())
    with gzip.open(target, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_corrupted_archive_is_refused_and_leaves_nothing_behind(source, tmp_path, settings):
    workspace, _, _ = source
    archive = tmp_path / "acme.tar.gz"
    _export(workspace, archive)
    counts = {m: m.objects.count() for m in (Workspace, Dataset, Record, Annotation, ClassificationModel, ModelVersion)}
    before = _storage_files(settings.MEDIA_ROOT)

    def flip_one_label(name, data):
        return data.replace(b'"label":"card_arrival"', b'"label":"exchange_rate"', 1) if name.startswith("records/") else data

    corrupted = tmp_path / "corrupted.tar.gz"
    _rewrite(archive, corrupted, flip_one_label, fix_manifest=False)
    with pytest.raises(CommandError, match="records/dataset_.*corrupted"):
        call_command("import_workspace", str(corrupted), "--rename", "restored", stdout=io.StringIO(), stderr=io.StringIO())

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CommandError, match="damaged or truncated"):
        call_command("import_workspace", str(truncated), "--rename", "restored", stdout=io.StringIO(), stderr=io.StringIO())

    # A consistent manifest over inconsistent content: the import fails after it has written vector chunks
    # and artifacts to storage, and must remove them again with the rolled-back rows.
    def dangling_annotation(name, data):
        if name != "annotations.jsonl":
            return data
        rows = [json.loads(line) for line in data.splitlines()]
        rows[-1]["row_index"] = 10_000
        return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()

    inconsistent = tmp_path / "inconsistent.tar.gz"
    _rewrite(archive, inconsistent, dangling_annotation, fix_manifest=True)
    with pytest.raises(CommandError, match="record 10000"):
        call_command("import_workspace", str(inconsistent), "--rename", "restored", stdout=io.StringIO(), stderr=io.StringIO())

    assert {m: m.objects.count() for m in counts} == counts
    assert not Workspace.objects.filter(name="restored").exists()
    assert _storage_files(settings.MEDIA_ROOT) == before


def test_an_artifact_changed_on_storage_is_not_exported(source, tmp_path, settings):
    workspace, _, model = source
    version = model.versions.get(number=2)
    path = Path(settings.MEDIA_ROOT) / version.artifact_path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CommandError, match="version 2 does not match its checksum"):
        _export(workspace, tmp_path / "acme.tar.gz")
    assert not any(tmp_path.glob("*acme.tar.gz*"))
