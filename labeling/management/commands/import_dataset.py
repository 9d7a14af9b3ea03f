"""Imports a CSV/JSONL file as a dataset through the same path as an upload, with progress bars.

By default the import and the embedding run in this process (a CLI should finish what it starts
and show its progress); `--background` hands them to the Celery workers instead, like an upload.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labelf_studio.workspaces.models import Workspace
from labeling import services
from labeling.importers import ImportFileError
from labeling.models import Dataset, Job, JobKind


class Command(BaseCommand):
    help = "Import a CSV or JSONL file as a dataset (text column required; label, split and metadata optional)."
    # The system checks import every URL module (and with them scikit-learn and scipy: ~7 s and
    # 100 MB) that an import never uses.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--workspace", required=True, help="workspace name or id")
        parser.add_argument("--name", required=True, help="dataset name")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--sync", action="store_true", default=True,
                          help="run the import and the embedding in this process (the default)")
        mode.add_argument("--background", action="store_true", help="queue the import for the Celery workers and return")
        parser.add_argument("--skip-embedding", action="store_true",
                            help="stop after inserting the records (the embed job stays queued); for benchmarks")
        parser.add_argument("--json", action="store_true", help="print a JSON summary with timings as the last line")

    def handle(self, *args, **options):
        workspace = self._workspace(options["workspace"])
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        started = time.perf_counter()
        if options["background"]:
            dataset = self._create(workspace, options["name"], path)
            self.stdout.write(f"Dataset {dataset.id} queued; follow it at /datasets/{dataset.id}/")
            return
        dataset = self._create(workspace, options["name"], path, queue=False)
        job = Job.objects.get(dataset=dataset, kind=JobKind.IMPORT)
        size = path.stat().st_size
        with tqdm(total=size, unit="B", unit_scale=True, desc="import", disable=options["json"]) as bar:
            def advance(done, total):
                bar.update(done - bar.n)

            embed_job = services.dataset_import_run(job_id=job.id, on_progress=advance)
            bar.update(size - bar.n)
        import_seconds = time.perf_counter() - started
        dataset.refresh_from_db()
        if embed_job is None:
            raise CommandError(f"Import failed: {dataset.error}")
        summary = {"dataset_id": dataset.id, "records": dataset.record_count, "import_seconds": round(import_seconds, 2),
                   "rows_per_second": round(dataset.record_count / import_seconds, 1)}
        self.stdout.write(self.style.SUCCESS(
            f"Imported {dataset.record_count} records in {import_seconds:.1f} s ({summary['rows_per_second']:.0f} rows/s)"))
        if not options["skip_embedding"]:
            embed_started = time.perf_counter()
            chunks = services.embed_job_chunks(embed_job)
            for chunk_index in tqdm(chunks, unit="chunk", desc="embed", disable=options["json"]):
                services.dataset_embed_chunk(job_id=embed_job.id, chunk_index=chunk_index)
            dataset.refresh_from_db()
            summary["embed_seconds"] = round(time.perf_counter() - embed_started, 2)
            if dataset.status != "ready":
                raise CommandError(f"Embedding failed: {dataset.error}")
            self.stdout.write(self.style.SUCCESS(f"Embedded {dataset.embedded_count} records in {summary['embed_seconds']:.1f} s"))
        else:
            self.stdout.write(f"Embedding skipped: embed job {embed_job.id} stays queued")
        if options["json"]:
            self.stdout.write(json.dumps(summary))

    def _workspace(self, value: str) -> Workspace:
        workspace = Workspace.objects.filter(name=value).first()
        if workspace is None and value.isdigit():
            workspace = Workspace.objects.filter(pk=int(value)).first()
        if workspace is None:
            raise CommandError(f"No workspace named {value!r}")
        return workspace

    def _create(self, workspace, name: str, path: Path, queue: bool = True) -> Dataset:
        try:
            return services.dataset_create_from_path(workspace=workspace, name=name, path=path, user=None,
                                                     queue_import=queue)
        except ImportFileError as exc:
            raise CommandError(f"{path.name}: {exc}") from None
