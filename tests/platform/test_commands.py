"""Management commands: create_api_key for scripts, and the idempotent demo seed."""
import io

import pytest
from django.core.management import call_command

from labelf_studio.workspaces.models import ApiKey, Membership, Workspace
from labelf_studio.workspaces.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def test_create_api_key_creates_the_workspace_and_prints_only_the_key():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--workspace", "Acme", "--role", "admin", "--plan", "enterprise",
                 "--rate-limit", "100000", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert "\n" not in secret and " " not in secret
    api_key = api_key_authenticate(secret=secret)
    workspace = Workspace.objects.get(name="Acme")
    assert api_key.workspace == workspace and api_key.role == "admin"
    assert workspace.plan == "enterprise" and workspace.rate_limit_per_minute == 100000
    call_command("create_api_key", "--workspace", "Acme", "--role", "annotator", stdout=io.StringIO(), stderr=io.StringIO())
    assert Workspace.objects.filter(name="Acme").count() == 1 and ApiKey.objects.count() == 2


def test_seed_demo_is_idempotent(tmp_path, settings):
    demo = tmp_path / "demo.csv"
    demo.write_text("text,channel\nMy card has not arrived yet,email\nHow do I reset my PIN?,chat\n")
    out = io.StringIO()
    call_command("seed_demo", "--dataset-file", str(demo), stdout=out)
    first = out.getvalue()
    assert "admin" in first and "API key (admin, shown once): lf_" in first
    out2 = io.StringIO()
    call_command("seed_demo", "--dataset-file", str(demo), stdout=out2)
    assert "shown once" not in out2.getvalue()
    workspace = Workspace.objects.get(name="Demo")
    assert Membership.objects.filter(workspace=workspace).count() == 3
    assert ApiKey.objects.filter(workspace=workspace).count() == 3
    from labeling.models import Dataset

    assert Dataset.objects.filter(workspace=workspace).count() == 1
    # Imported in-process on the first run: ready at once. A dataset of unknown content gets no demo model.
    assert Dataset.objects.get(workspace=workspace).status == "ready"
    assert "Demo model: none" in first


def test_seed_demo_makes_a_describe_and_classify_model_for_the_shipped_demo_data(settings):
    from labelf_studio.workspaces.management.commands.seed_demo import demo_dataset_path
    from models_app.models import ClassificationModel

    shipped = settings.BASE_DIR / "labeling" / "demo_data" / "customer_messages.csv"
    out = io.StringIO()
    call_command("seed_demo", "--dataset-file", str(shipped), stdout=out)
    model = ClassificationModel.objects.get(name="Contact reason (demo)")
    assert model.type == "describe-and-classify" and model.status == "ready" and len(model.labels) == 8
    assert f"at /models/{model.id}/" in out.getvalue()
    # The shipped demo messages are classified sensibly by the descriptions alone.
    from models_app.inference import classify

    predictions = classify(version=model.latest_version, threshold=0.5,
                           texts=["I can't log in to the app", "Please cancel my subscription"])
    assert [p["label"] for p in predictions] == ["login", "cancellation"]
    call_command("seed_demo", "--dataset-file", str(shipped), stdout=io.StringIO())
    assert ClassificationModel.objects.filter(name="Contact reason (demo)").count() == 1
    assert demo_dataset_path().exists()


def test_seed_demo_imports_banking77_without_its_answers(tmp_path, settings):
    """The gold `category` column would show beside every record on the labeling page: the demo imports the
    texts only (from a copy under var/, the project ships no Banking77 data)."""
    from labeling.models import Dataset, Record

    settings.VAR_DIR = tmp_path / "var"
    banking77 = tmp_path / "banking77"
    banking77.mkdir()
    (banking77 / "train.csv").write_text("text,category\nMy card has not arrived,card_arrival\n"
                                         "What rate do you use?,exchange_rate\n")
    call_command("seed_demo", "--dataset-file", str(banking77 / "train.csv"), stdout=io.StringIO())
    dataset = Dataset.objects.get(name="Customer messages (demo)")
    records = list(Record.objects.filter(dataset=dataset).order_by("row_index"))
    assert [r.text for r in records] == ["My card has not arrived", "What rate do you use?"]
    assert all(not r.metadata and r.label is None for r in records)
