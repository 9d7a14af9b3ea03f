"""Exports one workspace to a `.tar.gz` backup (see labelf_studio/backup.py for what it holds)."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labelf_studio.backup import BackupError, workspace_export
from labelf_studio.workspaces.models import Workspace


class Command(BaseCommand):
    help = "Export a workspace (members, datasets, labels with history, models, versions, vectors) to a .tar.gz backup."

    def add_arguments(self, parser):
        parser.add_argument("workspace", help="workspace name or id")
        parser.add_argument("archive", type=Path, help="the .tar.gz file to write (replaced if it exists)")

    def handle(self, *args, **options):
        workspace = Workspace.objects.filter(name=options["workspace"]).first()
        if workspace is None and options["workspace"].isdigit():
            workspace = Workspace.objects.filter(pk=int(options["workspace"])).first()
        if workspace is None:
            raise CommandError(f"No workspace named {options['workspace']!r}")

        def progress(**kwargs):
            return tqdm(file=self.stderr._out, leave=False, **kwargs)

        try:
            summary = workspace_export(workspace=workspace, destination=options["archive"], progress=progress)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        counts = summary.counts
        self.stderr.write("API keys are not exported (only hashes of their secrets are stored): create new keys after "
                          "importing, e.g. `manage.py create_api_key --workspace NAME --role admin`.")
        self.stdout.write(
            f"Exported workspace {workspace.name!r} to {summary.path} ({summary.bytes / 1e6:.1f} MB): "
            f"{counts['memberships']} members, {counts['datasets']} datasets, {counts['records']} records, "
            f"{counts['annotations']} annotations, {counts['models']} models, {counts['versions']} versions, "
            f"{counts['vector_chunks']} vector chunks, {counts['jobs']} jobs")
