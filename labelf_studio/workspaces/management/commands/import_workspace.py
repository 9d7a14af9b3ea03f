"""Restores a workspace from a backup made by export_workspace, into this database, all or nothing."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labelf_studio.backup import BackupError, workspace_import


class Command(BaseCommand):
    help = "Import a workspace backup (.tar.gz from export_workspace) as a new workspace; ids are remapped."

    def add_arguments(self, parser):
        parser.add_argument("archive", type=Path)
        parser.add_argument("--rename", metavar="NEW_NAME", default=None,
                            help="import under this name (required when a workspace of the backup's name exists)")

    def handle(self, *args, **options):
        def progress(**kwargs):
            return tqdm(file=self.stderr._out, leave=False, **kwargs)

        try:
            summary = workspace_import(archive=options["archive"], rename=options["rename"], progress=progress)
        except BackupError as exc:
            raise CommandError(f"Import refused, nothing was written: {exc}") from None
        workspace, counts = summary.workspace, summary.counts
        if summary.users_created:
            self.stderr.write(
                f"Created {len(summary.users_created)} user(s) without a usable password: "
                f"{', '.join(summary.users_created)}. Set one with `manage.py changepassword USERNAME`.")
        if summary.users_existing:
            self.stderr.write(f"Kept {len(summary.users_existing)} existing user(s) as they were (passwords unchanged): "
                              f"{', '.join(summary.users_existing)}.")
        self.stderr.write(
            f"API keys are not part of backups ({summary.api_keys_not_exported} active in the source workspace): create "
            f"new ones with `manage.py create_api_key --workspace {workspace.name!r} --role admin` or on the API keys page.")
        self.stdout.write(
            f"Imported workspace {workspace.name!r} (id {workspace.pk}): {counts['memberships']} members "
            f"({len(summary.users_created)} users created), {counts['datasets']} datasets, {counts['records']} records, "
            f"{counts['annotations']} annotations, {counts['models']} models, {counts['versions']} versions, "
            f"{counts['vector_chunks']} vector chunks, {counts['jobs']} jobs")
