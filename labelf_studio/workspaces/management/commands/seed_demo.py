"""Creates the demo workspace, its three users and keys, and imports the demo dataset, once.

Running it again reuses what exists: it prints the logins again but never duplicates anything.
Keys are shown only when they are created (only their hashes are stored).
"""
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from labelf_studio.workspaces.models import ApiKey, Plan
from labelf_studio.workspaces.services import api_key_create, membership_set, workspace_get_or_create

DEMO_WORKSPACE = "Demo"
DEMO_USERS = [("admin", "admin", "admin-demo-pass"), ("lead", "lead", "lead-demo-pass"), ("annotator", "annotator", "annotator-demo-pass")]
DEMO_DATASET_NAME = "Customer messages (demo)"


def demo_dataset_path() -> Path:
    shared = settings.BASE_DIR.parent / "shared" / "data" / "banking77" / "train.csv"
    return shared if shared.exists() else settings.BASE_DIR / "labeling" / "demo_data" / "customer_messages.csv"


class Command(BaseCommand):
    help = "Create the demo workspace, users, API keys and dataset (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset-file", default=None, help="CSV/JSONL to import as the demo dataset")

    def handle(self, *args, **options):
        User = get_user_model()
        workspace, _ = workspace_get_or_create(name=DEMO_WORKSPACE, plan=Plan.GROWTH)
        lines = ["", "Demo workspace: " + workspace.name, "Logins (http://127.0.0.1:8000/login/):"]
        for username, role, password in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User.objects.create_user(username=username, password=password, email=f"{username}@example.com")
            membership_set(workspace=workspace, user=user, role=role)
            lines.append(f"  {role:<10} username {username:<10} password {password}")
            if not ApiKey.objects.filter(workspace=workspace, role=role, name=f"demo {role} key").exists():
                _, secret = api_key_create(workspace=workspace, role=role, name=f"demo {role} key", user=user)
                lines.append(f"  {'':<10} API key ({role}, shown once): {secret}")
            else:
                lines.append(f"  {'':<10} API key ({role}): created on the first run; only its hash is kept. "
                             f"New one: python manage.py create_api_key --workspace {workspace.name} --role {role}")
        lines.append(self._ensure_dataset(workspace, options["dataset_file"]))
        self.stdout.write("\n".join(lines) + "\n")

    def _ensure_dataset(self, workspace, dataset_file: str | None) -> str:
        from labeling.models import Dataset

        existing = Dataset.objects.filter(workspace=workspace, name=DEMO_DATASET_NAME).first()
        if existing is not None:
            return f"Demo dataset: {existing.name} ({existing.status}, {existing.record_count} records)"
        try:
            from labeling.services import dataset_create_from_path
        except ImportError:
            return "Demo dataset: importing is not available yet"
        path = Path(dataset_file) if dataset_file else demo_dataset_path()
        dataset = dataset_create_from_path(workspace=workspace, name=DEMO_DATASET_NAME, path=path, user=None)
        return f"Demo dataset: importing {path.name} in the background (dataset {dataset.id})"
