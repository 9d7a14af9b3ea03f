"""Creates the demo workspace, its three users and keys, and imports the demo dataset, once.

Running it again reuses what exists: it prints the logins again but never duplicates anything.
Keys are shown only when they are created (only their hashes are stored).
"""
import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from labelf_studio.workspaces.models import ApiKey, Plan
from labelf_studio.workspaces.services import api_key_create, membership_set, workspace_get_or_create

DEMO_WORKSPACE = "Demo"
DEMO_USERS = [("admin", "admin", "admin-demo-pass"), ("lead", "lead", "lead-demo-pass"), ("annotator", "annotator", "annotator-demo-pass")]
DEMO_DATASET_NAME = "Customer messages (demo)"


DEMO_MODEL_NAME = "Contact reason (demo)"


def demo_dataset_path() -> Path:
    shared = settings.BASE_DIR.parent / "shared" / "data" / "banking77" / "train.csv"
    return shared if shared.exists() else settings.BASE_DIR / "labeling" / "demo_data" / "customer_messages.csv"


def _without_answers(path: Path) -> Path:
    """Banking77's `category` column is the gold label: imported, it would become metadata shown beside every
    record on the labeling page, answering the question the demo asks. The demo imports its texts only, from
    a copy written under var/ (the project ships no Banking77 data)."""
    if path.parent.name != "banking77":
        return path
    import csv

    texts_only = Path(settings.VAR_DIR) / "demo" / f"{path.stem}_texts.csv"
    texts_only.parent.mkdir(parents=True, exist_ok=True)
    with open(path, newline="", encoding="utf-8") as source, open(texts_only, "w", newline="", encoding="utf-8") as target:
        writer = csv.writer(target)
        writer.writerow(["text"])
        writer.writerows([row["text"]] for row in csv.DictReader(source))
    return texts_only


def demo_label_descriptions(dataset_path: Path) -> dict[str, str] | None:
    """The demo model's labels for the two known demo datasets (our own one-line descriptions); None otherwise."""
    if dataset_path.name == "customer_messages.csv":
        source = settings.BASE_DIR / "labeling" / "demo_data" / "customer_messages_labels.json"
    elif dataset_path.parent.name == "banking77":
        # Written for the zero-shot benchmark; the demo shows the same describe-and-classify model.
        source = settings.BASE_DIR / "bench" / "data" / "banking77_descriptions.json"
    else:
        return None
    return json.loads(source.read_text(encoding="utf-8")) if source.exists() else None


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
        path = Path(options["dataset_file"]) if options["dataset_file"] else demo_dataset_path()
        lines.append(self._ensure_dataset(workspace, path))
        lines.append(self._ensure_model(workspace, path))
        self.stdout.write("\n".join(lines) + "\n")

    def _ensure_dataset(self, workspace, path: Path) -> str:
        from django.core.management import call_command

        from labeling.models import Dataset

        existing = Dataset.objects.filter(workspace=workspace, name=DEMO_DATASET_NAME).first()
        if existing is not None:
            return f"Demo dataset: {existing.name} ({existing.status}, {existing.record_count} records)"
        # Imported and embedded here, once, with progress bars, so the demo model can be made at once.
        self.stdout.write(f"Importing the demo dataset {path.name} (first run only)...")
        call_command("import_dataset", str(_without_answers(path)), "--workspace", str(workspace.id),
                     "--name", DEMO_DATASET_NAME, stdout=self.stdout)
        dataset = Dataset.objects.get(workspace=workspace, name=DEMO_DATASET_NAME)
        return f"Demo dataset: {dataset.name} ({dataset.status}, {dataset.record_count} records)"

    def _ensure_model(self, workspace, path: Path) -> str:
        from labeling.models import Dataset, DatasetStatus
        from models_app.models import ClassificationModel
        from models_app.services import model_create

        existing = ClassificationModel.objects.filter(workspace=workspace, name=DEMO_MODEL_NAME).first()
        if existing is not None:
            return f"Demo model: {existing.name} ({existing.status}) at /models/{existing.id}/"
        descriptions = demo_label_descriptions(path)
        dataset = Dataset.objects.filter(workspace=workspace, name=DEMO_DATASET_NAME).first()
        if descriptions is None or dataset is None or dataset.status != DatasetStatus.READY:
            return "Demo model: none (describe your own labels under Models)"
        lead = get_user_model().objects.filter(username="lead").first()
        model = model_create(workspace=workspace, dataset=dataset, name=DEMO_MODEL_NAME, user=lead,
                             labels=[{"name": name, "description": text} for name, text in descriptions.items()])
        return f"Demo model: {model.name}, describe-and-classify with {len(model.labels)} labels, at /models/{model.id}/"
