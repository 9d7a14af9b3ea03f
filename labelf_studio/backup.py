"""Backup and restore of one workspace as a single `.tar.gz` archive.

The archive holds everything a workspace needs to work again in another database: the workspace
(name, plan, limits), its members (by username), datasets with every record, the full label history,
the recommendation queue, models with every version and its artifact file, deployment events, jobs,
the audit log, the vector chunk files and the uploaded source files. API keys are left out on purpose:
only hashes of their secrets are stored, so a restored key could never be used.

Layout (every member listed with its size and SHA-256 in `manifest.json`, the archive's first member):

    manifest.json
    workspace.json               workspace, users (by username), memberships
    datasets.json                datasets; records/dataset_<id>.jsonl one line per record, row order
    records/dataset_<id>.jsonl
    vectors/dataset_<id>/chunk_<i>.npy      the vector store's files, byte for byte
    sources/dataset_<id>/<file>             the uploaded file the dataset was imported from
    models.json                  models, their versions (metrics, curves, details) and deployment events
    artifacts/model_<id>/v<n>.pkl           each version's head, checked against its checksum
    jobs.jsonl, annotations.jsonl, recommendations.jsonl, audit_events.jsonl

Ids in the archive are the source database's; the import remaps every one of them, so the target
database may already hold other workspaces. Records, annotations and recommendations are streamed
(`iterator(chunk_size=2000)` on export, batches on import): a million-record dataset is never held in
memory. The import verifies the whole archive against the manifest before it writes anything, then
writes the rows in one transaction; files it wrote to storage are removed again if that fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from django.contrib.auth import get_user_model
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from labelf_studio.workspaces.models import AuditEvent, Membership, Workspace
from labelf_studio.workspaces.services import audit_record
from labeling.embeddings import vector_chunk_name
from labeling.models import Annotation, Dataset, Job, JobStatus, Recommendation, Record
from models_app.models import ClassificationModel, DeploymentEvent, ModelVersion
from models_app.services import artifact_path

FORMAT = "labelf-workspace-backup"
FORMAT_VERSION = 1
BATCH = 2000
# Row lookups by `row_index IN (...)` stay well under every database's bound parameter limit.
LOOKUP_BATCH = 500
COPY_BUFFER = 1024 * 1024
# Vector chunks (float16) and pickled heads barely compress: level 1 archived a 300k-record workspace
# (307 MB staged) in 19 s instead of 34 s at level 6, for an archive 0.6% larger.
COMPRESS_LEVEL = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_CHUNK_FILE = re.compile(r"^chunk_(\d+)\.npy$")
# Jobs that were waiting or running when the workspace was exported will never be picked up again
# in the restored database: they are restored as failed, with this reason.
INTERRUPTED = "Interrupted: the workspace was exported while this job was {status}; request it again"


class BackupError(Exception):
    """The workspace cannot be exported, or the archive cannot be imported (nothing was written)."""


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


# `progress(desc=..., total=..., unit=...)` returns an object with update(n) and close(): tqdm fits.
ProgressFactory = Callable[..., object]


def _silent(**_kwargs) -> _Silent:
    return _Silent()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


# --- export ------------------------------------------------------------------------------------------

@dataclass
class ExportSummary:
    path: Path
    counts: dict[str, int]
    bytes: int


class _Stage:
    """Archive members written to a staging folder first, each hashed as it is written, so the
    manifest (the archive's first member) can name every member's checksum."""

    def __init__(self, root: Path):
        self.root = root
        self.members: dict[str, dict] = {}

    def _path(self) -> Path:
        return self.root / f"member_{len(self.members)}"

    def _add(self, name: str, path: Path, digest: str) -> None:
        if name in self.members:
            raise BackupError(f"archive member {name} written twice")
        self.members[name] = {"path": path, "sha256": digest, "size": path.stat().st_size}

    def write_json(self, name: str, value) -> None:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        path = self._path()
        path.write_bytes(data)
        self._add(name, path, hashlib.sha256(data).hexdigest())

    def write_jsonl(self, name: str, rows: Iterable[dict], on_row: Callable[[], None] | None = None) -> int:
        path = self._path()
        digest = hashlib.sha256()
        count = 0
        with path.open("wb") as handle:
            for row in rows:
                line = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                digest.update(line)
                handle.write(line)
                count += 1
                if on_row is not None:
                    on_row()
        self._add(name, path, digest.hexdigest())
        return count

    def copy_from_storage(self, name: str, storage_name: str) -> str:
        """Copies a storage file into the stage and returns its SHA-256."""
        path = self._path()
        digest = hashlib.sha256()
        with default_storage.open(storage_name, "rb") as source, path.open("wb") as target:
            while block := source.read(COPY_BUFFER):
                digest.update(block)
                target.write(block)
        self._add(name, path, digest.hexdigest())
        return digest.hexdigest()


def _users_by_id(user_ids: set[int]) -> dict[int, dict]:
    users = get_user_model().objects.filter(pk__in=user_ids).values("id", "username", "email", "first_name", "last_name")
    return {user["id"]: user for user in users}


def _referenced_user_ids(workspace: Workspace) -> set[int]:
    """Members and every user the workspace's history names (a former member's labels keep their author)."""
    ids: set[int] = set(Membership.objects.filter(workspace=workspace).values_list("user_id", flat=True))
    sources = [
        (Dataset.objects.filter(workspace=workspace), "created_by_id"),
        (ClassificationModel.objects.filter(workspace=workspace), "created_by_id"),
        (Job.objects.filter(workspace=workspace), "created_by_id"),
        (DeploymentEvent.objects.filter(model__workspace=workspace), "user_id"),
        (AuditEvent.objects.filter(workspace=workspace), "actor_id"),
        (Annotation.objects.filter(record__dataset__workspace=workspace), "user_id"),
    ]
    for queryset, column in sources:
        ids.update(queryset.exclude(**{column: None}).order_by().values_list(column, flat=True).distinct())
    return ids


def _vector_chunks(dataset_id: int) -> list[tuple[int, str]]:
    directory = PurePosixPath(vector_chunk_name(dataset_id, 0)).parent.as_posix()
    try:
        _, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return []
    chunks = [(int(match.group(1)), f"{directory}/{name}") for name in files if (match := _CHUNK_FILE.match(name))]
    return sorted(chunks)


@contextmanager
def _read_snapshot():
    """One consistent view of the database that does not hold up writers while the export reads.

    PostgreSQL: a read-only REPEATABLE READ transaction. SQLite: a deferred transaction, which in WAL
    mode reads one snapshot without taking the write lock (Django's `atomic` would, because the
    settings open transactions IMMEDIATE). Inside a caller's transaction, that transaction is the view.
    """
    if connection.in_atomic_block:
        yield
    elif connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:  # only a transaction's first statement may set its isolation
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield
    elif connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("COMMIT")
    else:
        with transaction.atomic():
            yield


def workspace_export(*, workspace: Workspace, destination: Path, progress: ProgressFactory = _silent) -> ExportSummary:
    """Writes `workspace` to the archive `destination` (replaced atomically: never a partial archive).

    The rows are read from one snapshot (`_read_snapshot`), so the archive is consistent even while
    annotators keep labeling.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".export-") as staging:
        stage = _Stage(Path(staging))
        with _read_snapshot():
            counts = _export_rows(workspace=workspace, stage=stage, progress=progress)
        partial = destination.with_name(f".{destination.name}.partial")
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": _iso(timezone.now()),
            "workspace": workspace.name, "counts": counts,
            "members": {name: {"sha256": entry["sha256"], "size": entry["size"]} for name, entry in stage.members.items()},
        }
        manifest_path = Path(staging) / MANIFEST
        manifest_path.write_bytes(json.dumps(manifest, indent=1).encode("utf-8"))
        total = sum(entry["size"] for entry in stage.members.values())
        bar = progress(desc="archive", total=total, unit="B", unit_scale=True)
        try:
            with tarfile.open(partial, "w:gz", compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT) as archive:
                archive.add(manifest_path, arcname=MANIFEST, recursive=False)
                for name, entry in stage.members.items():
                    info = tarfile.TarInfo(name)
                    info.size = entry["size"]
                    info.mtime = int(timezone.now().timestamp())
                    info.mode = 0o644
                    with entry["path"].open("rb") as handle:
                        archive.addfile(info, handle)
                    bar.update(entry["size"])
            os.replace(partial, destination)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    return ExportSummary(path=destination, counts=counts, bytes=destination.stat().st_size)


def _export_rows(*, workspace: Workspace, stage: _Stage, progress: ProgressFactory) -> dict[str, int]:
    counts: dict[str, int] = {}
    users = _users_by_id(_referenced_user_ids(workspace))

    def username(user_id: int | None) -> str | None:
        return users[user_id]["username"] if user_id is not None else None

    stage.write_json("workspace.json", {
        "workspace": {
            "name": workspace.name, "plan": workspace.plan, "rate_limit_override": workspace.rate_limit_override,
            "monthly_quota_override": workspace.monthly_quota_override,
            "billing_cycle_day": workspace.billing_cycle_day, "created_at": _iso(workspace.created_at),
        },
        "users": [{key: user[key] for key in ("username", "email", "first_name", "last_name")} for user in users.values()],
        "memberships": [
            {"username": username(m.user_id), "role": m.role, "created_at": _iso(m.created_at)}
            for m in Membership.objects.filter(workspace=workspace).order_by("id")
        ],
        "api_keys_not_exported": workspace.api_keys.filter(revoked_at=None).count(),
    })
    counts["users"] = len(users)
    counts["memberships"] = Membership.objects.filter(workspace=workspace).count()

    datasets = list(Dataset.objects.filter(workspace=workspace).order_by("id"))
    dataset_rows = []
    record_total = sum(dataset.record_count for dataset in datasets)
    bar = progress(desc="records", total=record_total, unit="rec")
    counts["records"] = 0
    counts["vector_chunks"] = 0
    for dataset in datasets:
        source = None
        if dataset.source_file and default_storage.exists(dataset.source_file):
            source = f"sources/dataset_{dataset.id}/{PurePosixPath(dataset.source_file).name}"
            stage.copy_from_storage(source, dataset.source_file)
        dataset_rows.append({
            "id": dataset.id, "name": dataset.name, "status": dataset.status, "record_count": dataset.record_count,
            "progress": dataset.progress, "phase": dataset.phase, "error": dataset.error,
            "source_file": source, "source_format": dataset.source_format, "metadata_columns": dataset.metadata_columns,
            "embedded_count": dataset.embedded_count, "vector_chunk_size": dataset.vector_chunk_size,
            "created_by": username(dataset.created_by_id), "created_at": _iso(dataset.created_at),
        })
        rows = (
            {"row_index": row_index, "text": text, "metadata": metadata, "label": label, "split": split,
             "labeled_at": _iso(labeled_at), "excluded": excluded, "in_conflict": in_conflict}
            for row_index, text, metadata, label, split, labeled_at, excluded, in_conflict in
            Record.objects.filter(dataset=dataset).order_by("row_index")
            .values_list("row_index", "text", "metadata", "label", "split", "labeled_at", "excluded", "in_conflict")
            .iterator(chunk_size=BATCH)
        )
        counts["records"] += stage.write_jsonl(f"records/dataset_{dataset.id}.jsonl", rows, on_row=lambda: bar.update(1))
        for chunk_index, storage_name in _vector_chunks(dataset.id):
            stage.copy_from_storage(f"vectors/dataset_{dataset.id}/chunk_{chunk_index}.npy", storage_name)
            counts["vector_chunks"] += 1
    bar.close()
    stage.write_json("datasets.json", dataset_rows)
    counts["datasets"] = len(dataset_rows)

    models = list(ClassificationModel.objects.filter(workspace=workspace).order_by("id"))
    versions = list(ModelVersion.objects.filter(model__workspace=workspace).order_by("model_id", "number"))
    bar = progress(desc="artifacts", total=len(versions), unit="file")
    version_rows = []
    for version in versions:
        member = f"artifacts/model_{version.model_id}/v{version.number}.pkl"
        try:
            digest = stage.copy_from_storage(member, version.artifact_path)
        except FileNotFoundError:
            raise BackupError(f"the artifact of model {version.model_id} version {version.number} "
                              f"({version.artifact_path}) is missing from storage") from None
        if digest != version.checksum:
            raise BackupError(f"the artifact of model {version.model_id} version {version.number} does not match its "
                              f"checksum ({digest[:12]}… on storage, {version.checksum[:12]}… recorded): not exporting it")
        version_rows.append({
            "model": version.model_id, "number": version.number, "type": version.type, "labels": version.labels,
            "artifact": member, "checksum": version.checksum, "training_examples": version.training_examples,
            "metrics": version.metrics, "threshold_curve": version.threshold_curve, "details": version.details,
            "job": version.job_id, "summary": version.summary, "created_at": _iso(version.created_at),
        })
        bar.update(1)
    bar.close()
    versions_by_id = {version.id: version.number for version in versions}
    stage.write_json("models.json", {
        "models": [{
            "id": model.id, "dataset": model.dataset_id, "name": model.name, "type": model.type, "status": model.status,
            "labels": model.labels, "label_descriptions": model.label_descriptions,
            "confidence_threshold": model.confidence_threshold, "pinned_version": model.pinned_version,
            "latest_version": versions_by_id.get(model.latest_version_id),
            "served_version": versions_by_id.get(model.served_version_id),
            "retrain_every": model.retrain_every, "evaluation_share": model.evaluation_share,
            "overlap_share": model.overlap_share, "overlap_annotators": model.overlap_annotators,
            "created_by": username(model.created_by_id), "created_at": _iso(model.created_at),
        } for model in models],
        "versions": version_rows,
        "deployment_events": [{
            "model": event.model_id, "action": event.action, "version": event.version, "pinned": event.pinned,
            "user": username(event.user_id), "created_at": _iso(event.created_at),
        } for event in DeploymentEvent.objects.filter(model__workspace=workspace).order_by("id")],
    })
    counts["models"] = len(models)
    counts["versions"] = len(version_rows)
    counts["deployment_events"] = DeploymentEvent.objects.filter(model__workspace=workspace).count()

    counts["jobs"] = stage.write_jsonl("jobs.jsonl", (
        {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress, "error": job.error,
         "result": job.result, "params": job.params, "dataset": job.dataset_id, "model": job.model_id,
         "created_by": username(job.created_by_id), "created_at": _iso(job.created_at),
         "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at), "attempts": job.attempts}
        for job in Job.objects.filter(workspace=workspace).order_by("id").iterator(chunk_size=BATCH)
    ))

    annotations = Annotation.objects.filter(record__dataset__workspace=workspace)
    bar = progress(desc="annotations", total=annotations.count(), unit="ann")
    counts["annotations"] = stage.write_jsonl("annotations.jsonl", (
        {"dataset": dataset_id, "row_index": row_index, "model": model_id, "user": username(user_id), "label": label,
         "recommended_by_version": version, "reason": reason, "duration_ms": duration_ms, "is_current": is_current,
         "adjudicated": adjudicated, "created_at": _iso(created_at)}
        for dataset_id, row_index, model_id, user_id, label, version, reason, duration_ms, is_current, adjudicated, created_at in
        annotations.order_by("id").values_list(
            "record__dataset_id", "record__row_index", "model_id", "user_id", "label", "recommended_by_version",
            "reason", "duration_ms", "is_current", "adjudicated", "created_at").iterator(chunk_size=BATCH)
    ), on_row=lambda: bar.update(1))
    bar.close()

    # Leases are per session and short-lived: the queue is restored without them.
    counts["recommendations"] = stage.write_jsonl("recommendations.jsonl", (
        {"model": model_id, "dataset": dataset_id, "row_index": row_index, "position": position, "score": score,
         "reason": reason, "predicted_label": predicted_label, "confidence": confidence, "version": version,
         "required_annotations": required}
        for model_id, dataset_id, row_index, position, score, reason, predicted_label, confidence, version, required in
        Recommendation.objects.filter(model__workspace=workspace).order_by("model_id", "position").values_list(
            "model_id", "record__dataset_id", "record__row_index", "position", "score", "reason", "predicted_label",
            "confidence", "version", "required_annotations").iterator(chunk_size=BATCH)
    ))
    counts["audit_events"] = stage.write_jsonl("audit_events.jsonl", (
        {"actor": username(event.actor_id), "action": event.action, "target": event.target, "details": event.details,
         "created_at": _iso(event.created_at)}
        for event in AuditEvent.objects.filter(workspace=workspace).order_by("id").iterator(chunk_size=BATCH)
    ))
    return counts


# --- import ------------------------------------------------------------------------------------------

@dataclass
class ImportSummary:
    workspace: Workspace
    counts: dict[str, int]
    users_created: list[str] = field(default_factory=list)
    users_existing: list[str] = field(default_factory=list)
    api_keys_not_exported: int = 0


class _Verified:
    """The archive's members, extracted to a scratch folder and checked against the manifest."""

    def __init__(self, manifest: dict, paths: dict[str, Path]):
        self.manifest = manifest
        self.paths = paths

    def json(self, name: str):
        return json.loads(self.file(name).read_bytes())

    def jsonl(self, name: str) -> Iterator[dict]:
        with self.file(name).open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def file(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise BackupError(f"the archive has no member {name}") from None


def _verify_archive(archive: Path, scratch: Path, progress: ProgressFactory) -> _Verified:
    """Reads the archive once, front to back, and checks every member's size and SHA-256 against the
    manifest. Members are extracted under generated names, never under the names in the archive."""
    paths: dict[str, Path] = {}
    manifest = None
    bar = progress(desc="verify", total=archive.stat().st_size, unit="B", unit_scale=True)
    read = 0
    try:
        with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            for member in tar:
                bar.update(raw.tell() - read)
                read = raw.tell()
                if not member.isfile():
                    raise BackupError(f"unexpected archive entry {member.name!r} (only regular files belong in a backup)")
                if manifest is None:
                    if member.name != MANIFEST:
                        raise BackupError("this is not a workspace backup: its first member is not manifest.json")
                    if member.size > MAX_MANIFEST_BYTES:
                        raise BackupError("manifest.json is implausibly large")
                    manifest = _read_manifest(tar.extractfile(member).read())
                    continue
                expected = manifest["members"].get(member.name)
                if expected is None:
                    raise BackupError(f"archive member {member.name!r} is not listed in the manifest")
                if member.name in paths:
                    raise BackupError(f"archive member {member.name!r} appears twice")
                path = scratch / f"member_{len(paths)}"
                digest = hashlib.sha256()
                size = 0
                source = tar.extractfile(member)
                with path.open("wb") as target:
                    while block := source.read(COPY_BUFFER):
                        digest.update(block)
                        size += len(block)
                        target.write(block)
                if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
                    raise BackupError(f"archive member {member.name} is corrupted: its checksum does not match the manifest")
                paths[member.name] = path
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not archive.exists():
            raise BackupError(f"no such file: {archive}") from None
        raise BackupError(f"the archive is damaged or truncated ({exc})") from None
    finally:
        bar.close()
    if manifest is None:
        raise BackupError("the archive is empty")
    missing = sorted(set(manifest["members"]) - set(paths))
    if missing:
        raise BackupError(f"the archive is incomplete: {len(missing)} member(s) missing, e.g. {missing[0]}")
    return _Verified(manifest, paths)


def _read_manifest(data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BackupError("manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("this is not a Labelf Studio workspace backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format version {manifest.get('format_version')!r} is not supported "
                          f"(this version reads format {FORMAT_VERSION})")
    if not isinstance(manifest.get("members"), dict):
        raise BackupError("manifest.json lists no members")
    return manifest


def _bulk_insert(model, fields: list[str], rows: list[tuple]) -> None:
    """Inserts prepared rows with one executemany, without the ORM's per-object work and without
    `auto_now_add` overwriting the created_at values the archive carries."""
    if not rows:
        return
    concrete = [model._meta.get_field(name) for name in fields]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in concrete)
    placeholders = ", ".join(["%s"] * len(concrete))
    prepared = [tuple(f.get_db_prep_save(value, connection) for f, value in zip(concrete, row)) for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES ({placeholders})", prepared)


def _batched(rows: Iterable, size: int = BATCH) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _record_ids(dataset_id: int, row_indexes: Iterable[int]) -> dict[int, int]:
    wanted = sorted(set(row_indexes))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), LOOKUP_BATCH):
        found.update(Record.objects.filter(dataset_id=dataset_id, row_index__in=wanted[start:start + LOOKUP_BATCH])
                     .values_list("row_index", "id"))
    return found


def workspace_import(*, archive: Path, rename: str | None = None, progress: ProgressFactory = _silent) -> ImportSummary:
    """Restores the archive as a new workspace (named `rename` if given). All or nothing.

    Raises BackupError, with nothing written, if the archive is damaged, of another format, or if a
    workspace of that name exists already.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"no such file: {archive}")
    with tempfile.TemporaryDirectory(prefix="labelf-import-") as scratch:
        verified = _verify_archive(archive, Path(scratch), progress)
        workspace_data = verified.json("workspace.json")
        name = (rename or workspace_data["workspace"]["name"]).strip()
        if not name:
            raise BackupError("the workspace name must not be empty")
        if len(name) > Workspace._meta.get_field("name").max_length:
            raise BackupError(f"workspace name {name!r} is too long")
        if Workspace.objects.filter(name=name).exists():
            raise BackupError(f"a workspace named {name!r} already exists; import under another name with --rename NEW_NAME")
        written: list[str] = []
        try:
            with transaction.atomic():
                summary = _import_rows(verified=verified, name=name, written=written, progress=progress)
        except BaseException as exc:
            for storage_name in written:
                default_storage.delete(storage_name)
            if isinstance(exc, IntegrityError) and Workspace.objects.filter(name=name).exists():
                raise BackupError(f"a workspace named {name!r} already exists; import under another name with --rename NEW_NAME") from None
            if isinstance(exc, (KeyError, TypeError, ValueError)):
                # The checksums matched, so the archive was written like this: it names things it does not hold.
                raise BackupError(f"the archive's content is inconsistent ({exc!r})") from None
            raise
    return summary


def _store(*, verified: _Verified, member: str, storage_name: str, written: list[str]) -> None:
    """Copies a verified member to storage under exactly `storage_name`, recording it for cleanup."""
    if default_storage.exists(storage_name):
        # Only a content-addressed artifact may already be there (same name, same bytes); anything
        # else at a fresh id's path is a leftover that must not be mixed with this workspace.
        raise BackupError(f"storage already holds {storage_name}; refusing to overwrite it")
    with verified.file(member).open("rb") as handle:
        saved = default_storage.save(storage_name, File(handle))
    written.append(saved)
    if saved != storage_name:
        raise BackupError(f"storage saved {storage_name} as {saved}")


def _import_rows(*, verified: _Verified, name: str, written: list[str], progress: ProgressFactory) -> ImportSummary:
    User = get_user_model()
    counts: dict[str, int] = {}
    data = verified.json("workspace.json")
    source = data["workspace"]
    workspace = Workspace.objects.create(
        name=name, plan=source["plan"], rate_limit_override=source["rate_limit_override"],
        monthly_quota_override=source["monthly_quota_override"], billing_cycle_day=source["billing_cycle_day"])
    Workspace.objects.filter(pk=workspace.pk).update(created_at=_when(source["created_at"]))

    user_ids: dict[str, int] = {}
    created, existing = [], []
    for user in data["users"]:
        found = User.objects.filter(username=user["username"]).first()
        if found is None:
            # No password travels in a backup: the user sets one (changepassword) before logging in.
            found = User.objects.create_user(username=user["username"], email=user["email"], password=None,
                                             first_name=user["first_name"], last_name=user["last_name"])
            created.append(user["username"])
        else:
            existing.append(user["username"])
        user_ids[user["username"]] = found.pk

    def user_id(username: str | None) -> int | None:
        return user_ids[username] if username is not None else None

    _bulk_insert(Membership, ["workspace", "user", "role", "created_at"], [
        (workspace.pk, user_id(m["username"]), m["role"], _when(m["created_at"])) for m in data["memberships"]])
    counts["memberships"] = len(data["memberships"])

    dataset_ids: dict[int, int] = {}
    datasets = verified.json("datasets.json")
    bar = progress(desc="records", total=sum(d["record_count"] for d in datasets), unit="rec")
    counts["records"] = counts["vector_chunks"] = 0
    record_fields = ["dataset", "row_index", "text", "metadata", "label", "split", "labeled_at", "excluded", "in_conflict"]
    for d in datasets:
        dataset = Dataset.objects.create(
            workspace=workspace, name=d["name"], status=d["status"], record_count=d["record_count"],
            progress=d["progress"], phase=d["phase"], error=d["error"], source_format=d["source_format"],
            metadata_columns=d["metadata_columns"], embedded_count=d["embedded_count"],
            vector_chunk_size=d["vector_chunk_size"], created_by_id=user_id(d["created_by"]))
        dataset_ids[d["id"]] = dataset.pk
        source_file = ""
        if d["source_file"]:
            source_file = f"uploads/workspace_{workspace.pk}/restored_dataset_{dataset.pk}_{PurePosixPath(d['source_file']).name}"
            _store(verified=verified, member=d["source_file"], storage_name=source_file, written=written)
        Dataset.objects.filter(pk=dataset.pk).update(created_at=_when(d["created_at"]), source_file=source_file)
        for batch in _batched(verified.jsonl(f"records/dataset_{d['id']}.jsonl")):
            _bulk_insert(Record, record_fields, [
                (dataset.pk, r["row_index"], r["text"], r["metadata"], r["label"], r["split"], _when(r["labeled_at"]),
                 r["excluded"], r.get("in_conflict", False)) for r in batch])
            counts["records"] += len(batch)
            bar.update(len(batch))
        prefix = f"vectors/dataset_{d['id']}/"
        for member in verified.manifest["members"]:
            if member.startswith(prefix) and (match := _CHUNK_FILE.match(member[len(prefix):])):
                _store(verified=verified, member=member, written=written,
                       storage_name=vector_chunk_name(dataset.pk, int(match.group(1))))
                counts["vector_chunks"] += 1
    bar.close()
    counts["datasets"] = len(datasets)

    models_data = verified.json("models.json")
    model_ids: dict[int, int] = {}
    for m in models_data["models"]:
        model = ClassificationModel.objects.create(
            workspace=workspace, dataset_id=dataset_ids[m["dataset"]], name=m["name"], type=m["type"],
            status=m["status"], labels=m["labels"], label_descriptions=m["label_descriptions"],
            confidence_threshold=m["confidence_threshold"], pinned_version=m["pinned_version"],
            retrain_every=m["retrain_every"], evaluation_share=m["evaluation_share"],
            overlap_share=m.get("overlap_share", 0.1), overlap_annotators=m.get("overlap_annotators", 2),
            created_by_id=user_id(m["created_by"]))
        ClassificationModel.objects.filter(pk=model.pk).update(created_at=_when(m["created_at"]))
        model_ids[m["id"]] = model.pk
    counts["models"] = len(model_ids)

    job_ids: dict[int, int] = {}
    counts["jobs"] = 0
    for j in verified.jsonl("jobs.jsonl"):
        status, error = j["status"], j["error"]
        if status in (JobStatus.QUEUED, JobStatus.RUNNING):
            status, error = JobStatus.FAILED, INTERRUPTED.format(status=status)
        job = Job.objects.create(
            workspace=workspace, kind=j["kind"], status=status, progress=j["progress"], error=error, result=j["result"],
            params=j["params"], dataset_id=dataset_ids.get(j["dataset"]), model_id=model_ids.get(j["model"]),
            created_by_id=user_id(j["created_by"]), started_at=_when(j["started_at"]),
            finished_at=_when(j["finished_at"]), attempts=j["attempts"])
        Job.objects.filter(pk=job.pk).update(created_at=_when(j["created_at"]))
        job_ids[j["id"]] = job.pk
        counts["jobs"] += 1

    version_ids: dict[tuple[int, int], int] = {}
    bar = progress(desc="artifacts", total=len(models_data["versions"]), unit="file")
    for v in models_data["versions"]:
        model_id = model_ids[v["model"]]
        storage_name = artifact_path(model_id=model_id, number=v["number"], digest=v["checksum"])
        # The manifest checked the member's bytes; this checks they are the bytes the version was made of.
        if _sha256_file(verified.file(v["artifact"])) != v["checksum"]:
            raise BackupError(f"artifact {v['artifact']} does not match the checksum of its version")
        _store(verified=verified, member=v["artifact"], storage_name=storage_name, written=written)
        version = ModelVersion.objects.create(
            model_id=model_id, number=v["number"], type=v["type"], labels=v["labels"], artifact_path=storage_name,
            checksum=v["checksum"], training_examples=v["training_examples"], metrics=v["metrics"],
            threshold_curve=v["threshold_curve"], details=v["details"], job_id=job_ids.get(v["job"]), summary=v["summary"])
        ModelVersion.objects.filter(pk=version.pk).update(created_at=_when(v["created_at"]))
        version_ids[(model_id, v["number"])] = version.pk
        bar.update(1)
    bar.close()
    counts["versions"] = len(version_ids)
    for m in models_data["models"]:
        model_id = model_ids[m["id"]]
        ClassificationModel.objects.filter(pk=model_id).update(
            latest_version_id=version_ids.get((model_id, m["latest_version"])),
            served_version_id=version_ids.get((model_id, m["served_version"])))

    _bulk_insert(DeploymentEvent, ["model", "action", "version", "pinned", "user", "created_at"], [
        (model_ids[e["model"]], e["action"], e["version"], e["pinned"], user_id(e["user"]), _when(e["created_at"]))
        for e in models_data["deployment_events"]])
    counts["deployment_events"] = len(models_data["deployment_events"])

    bar = progress(desc="annotations", total=verified.manifest.get("counts", {}).get("annotations"), unit="ann")
    counts["annotations"] = 0
    annotation_fields = ["record", "model", "user", "label", "recommended_by_version", "reason", "duration_ms",
                         "is_current", "adjudicated", "created_at"]
    for batch in _batched(verified.jsonl("annotations.jsonl")):
        records = _records_for(batch, dataset_ids)
        _bulk_insert(Annotation, annotation_fields, [
            (records[(a["dataset"], a["row_index"])], model_ids.get(a["model"]), user_id(a["user"]), a["label"],
             a["recommended_by_version"], a["reason"], a["duration_ms"], a["is_current"], a.get("adjudicated", False),
             _when(a["created_at"]))
            for a in batch])
        counts["annotations"] += len(batch)
        bar.update(len(batch))
    bar.close()

    counts["recommendations"] = 0
    recommendation_fields = ["model", "record", "position", "score", "reason", "predicted_label", "confidence", "version",
                             "required_annotations"]
    for batch in _batched(verified.jsonl("recommendations.jsonl")):
        records = _records_for(batch, dataset_ids)
        _bulk_insert(Recommendation, recommendation_fields, [
            (model_ids[r["model"]], records[(r["dataset"], r["row_index"])], r["position"], r["score"], r["reason"],
             r["predicted_label"], r["confidence"], r["version"], r.get("required_annotations", 1)) for r in batch])
        counts["recommendations"] += len(batch)

    counts["audit_events"] = 0
    for batch in _batched(verified.jsonl("audit_events.jsonl")):
        _bulk_insert(AuditEvent, ["workspace", "actor", "action", "target", "details", "created_at"], [
            (workspace.pk, user_id(e["actor"]), e["action"], e["target"], e["details"], _when(e["created_at"]))
            for e in batch])
        counts["audit_events"] += len(batch)

    expected = verified.manifest.get("counts", {})
    for key, value in counts.items():
        if key in expected and expected[key] != value:
            raise BackupError(f"the archive holds {value} {key} but its manifest says {expected[key]}")
    audit_record(workspace=workspace, action="workspace.import", target=f"workspace {workspace.pk} ({workspace.name})",
                 details={"source_workspace": source["name"], "backup_created_at": verified.manifest.get("created_at"),
                          "users_created": created, **counts})
    return ImportSummary(workspace=workspace, counts=counts, users_created=created, users_existing=existing,
                         api_keys_not_exported=data.get("api_keys_not_exported", 0))


def _records_for(batch: list[dict], dataset_ids: dict[int, int]) -> dict[tuple[int, int], int]:
    """(archive dataset id, row_index) → new record id for every row a batch refers to."""
    by_dataset: dict[int, set[int]] = {}
    for row in batch:
        by_dataset.setdefault(row["dataset"], set()).add(row["row_index"])
    found: dict[tuple[int, int], int] = {}
    for archive_dataset, rows in by_dataset.items():
        for row_index, record_id in _record_ids(dataset_ids[archive_dataset], rows).items():
            found[(archive_dataset, row_index)] = record_id
    missing = [row for row in batch if (row["dataset"], row["row_index"]) not in found]
    if missing:
        raise BackupError(f"the archive refers to record {missing[0]['row_index']} of dataset {missing[0]['dataset']}, "
                          "which it does not contain")
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(COPY_BUFFER):
            digest.update(block)
    return digest.hexdigest()
