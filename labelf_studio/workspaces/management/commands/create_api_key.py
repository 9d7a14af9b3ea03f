"""Creates an API key (and the workspace if needed) and prints only the key on stdout, for scripts."""
from django.core.management.base import BaseCommand, CommandError

from labelf_studio.workspaces.models import Plan, Role
from labelf_studio.workspaces.services import api_key_create, workspace_get_or_create


class Command(BaseCommand):
    help = "Create an API key for a workspace (created if missing); prints only the key."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--role", default=Role.ADMIN, choices=[r.value for r in Role])
        parser.add_argument("--plan", choices=[p.value for p in Plan], default=None)
        parser.add_argument("--rate-limit", type=int, default=None, help="requests per minute (enterprise: custom)")
        parser.add_argument("--monthly-quota", type=int, default=None)
        parser.add_argument("--name", default="")

    def handle(self, *args, **options):
        if options["rate_limit"] is not None and options["rate_limit"] < 1:
            raise CommandError("--rate-limit must be at least 1")
        workspace, created = workspace_get_or_create(
            name=options["workspace"], plan=options["plan"], rate_limit=options["rate_limit"],
            monthly_quota=options["monthly_quota"],
        )
        _, secret = api_key_create(workspace=workspace, role=options["role"], name=options["name"] or f"{options['role']} key (cli)")
        if created:
            self.stderr.write(f"created workspace {workspace.name}")
        self.stdout.write(secret)
