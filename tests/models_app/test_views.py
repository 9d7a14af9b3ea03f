"""Model pages with Django's test client: create form, try-it partial, deploy/archive with confirmation, roles."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from models_app.models import ClassificationModel, DeploymentEvent, ModelStatus
from tests.models_app.conftest import LABELS


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def model(created_model):
    return ClassificationModel.objects.get(pk=created_model["id"])


def test_create_page_post_builds_a_ready_model_from_rows_and_pasted_lines(lead_user, ready_dataset):
    client = browser(lead_user)
    page = client.get(reverse("model_create"))
    assert page.status_code == 200 and b'name="label_name"' in page.content and b"models.js" in page.content
    assert b"<script>" not in page.content  # no inline scripts (CSP)
    response = client.post(reverse("model_create"), {
        "name": "Reasons", "dataset": ready_dataset.id,
        "label_name": ["lost_or_stolen_card", "", "exchange_rate"],
        "label_description": ["Card lost or stolen", "", "Currency exchange rates"],
        "pasted_labels": "card_arrival\n\n top_up_failed \n",
    })
    model = ClassificationModel.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("model_detail", args=[model.id])
    assert model.status == ModelStatus.READY and model.latest_version.number == 1
    assert model.labels == ["lost_or_stolen_card", "exchange_rate", "card_arrival", "top_up_failed"]
    assert model.label_descriptions == {"lost_or_stolen_card": "Card lost or stolen",
                                        "exchange_rate": "Currency exchange rates", "card_arrival": "", "top_up_failed": ""}


def test_create_page_shows_errors_and_writes_nothing(lead_user, ready_dataset):
    response = browser(lead_user).post(reverse("model_create"), {
        "name": "Dupes", "dataset": ready_dataset.id, "label_name": ["a", "a"], "label_description": ["x", "y"]})
    assert response.status_code == 400 and b"duplicate label" in response.content
    assert b'value="a"' in response.content  # the rows the lead typed are kept
    assert not ClassificationModel.objects.exists()


def test_describe_a_model_from_a_dataset_page_starts_with_its_imported_labels(lead_user, ready_dataset):
    from django.db.models import Count

    from labeling.models import Record

    client = browser(lead_user)
    records = list(Record.objects.filter(dataset=ready_dataset).order_by("row_index")[:6])
    for record, label in zip(records, ["refund", "card_arrival", "refund", "card_arrival", "refund", "exchange_rate"]):
        Record.objects.filter(pk=record.pk).update(label=label)
    counts = dict(Record.objects.filter(dataset=ready_dataset, label__isnull=False).values_list("label")
                  .annotate(n=Count("id")).values_list("label", "n"))
    assert len(counts) > 1
    dataset_page = client.get(reverse("dataset_detail", args=[ready_dataset.id])).content.decode()
    link = f'{reverse("model_create")}?dataset={ready_dataset.id}'
    assert link in dataset_page and f"with its {len(counts)} labels" in dataset_page
    page = client.get(link).content.decode()
    assert f'<option value="{ready_dataset.id}" selected>' in page and 'id="labels-from-dataset"' in page
    shown = [chunk.split('"')[0] for chunk in page.split('name="label_name" placeholder="Label name" aria-label="Label name" maxlength="200" value="')[1:]]
    assert shown == sorted(counts, key=lambda label: (-counts[label], label))  # most frequent first
    plain = client.get(reverse("model_create")).content.decode()
    assert 'id="labels-from-dataset"' not in plain and plain.count('name="label_name"') == 3 + 1  # 3 rows + template


def test_the_create_page_names_datasets_still_importing(lead_user, ready_dataset):
    from labeling.models import Dataset

    Dataset.objects.create(workspace=ready_dataset.workspace, name="Still coming", status="processing")
    page = browser(lead_user).get(reverse("model_create")).content.decode()
    assert 'id="datasets-processing"' in page and "Still coming" in page


def test_annotator_cannot_open_the_create_page(annotator_user, ready_dataset):
    client = browser(annotator_user)
    assert client.get(reverse("model_create")).status_code == 403
    assert client.post(reverse("model_create"), {"name": "x", "dataset": ready_dataset.id}).status_code == 403


def test_list_and_detail_pages(annotator_user, model, other_workspace):
    client = browser(annotator_user)
    listing = client.get(reverse("model_list"))
    assert listing.status_code == 200 and model.name.encode() in listing.content
    detail = client.get(reverse("model_detail", args=[model.id]))
    assert detail.status_code == 200
    for label in LABELS:
        assert label["description"].encode() in detail.content
    assert b"v1" in detail.content and b'id="deploy-form"' not in detail.content  # annotators do not deploy
    # The dataset is named (not shown as its bare id) and linked.
    assert f'href="{reverse("dataset_detail", args=[model.dataset_id])}">{model.dataset.name}</a>'.encode() in detail.content

    from tests.factories import make_user
    outsider = make_user(other_workspace, "admin")
    assert browser(outsider).get(reverse("model_detail", args=[model.id])).status_code == 404
    assert client.get(reverse("model_detail", args=[2**70])).status_code == 404


def test_last_trained_is_shown_as_a_date_not_an_iso_string(annotator_user, model):
    from models_app.models import ModelVersion

    version = model.latest_version
    ModelVersion.objects.filter(pk=version.pk).update(type="active-learning")
    stamp = timezone.localtime(version.created_at).strftime("%Y-%m-%d %H:%M")
    client = browser(annotator_user)
    for url in (reverse("model_list"), reverse("model_detail", args=[model.id])):
        html = client.get(url).content.decode()
        assert stamp in html and version.created_at.strftime("T%H:%M") not in html


def test_try_it_answers_the_htmx_partial_and_a_full_page_without_htmx(lead_user, model):
    client = browser(lead_user)
    url = reverse("model_try", args=[model.id])
    partial = client.post(url, {"text": "I lost my card on the train"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    html = partial.content.decode()
    assert html.lstrip().startswith('<div id="try-result"') and "<html" not in html
    assert '<strong class="try-label">lost_or_stolen_card</strong>' in html
    assert html.count('class="bar-row"') == len(LABELS)

    full = client.post(url, {"text": "what exchange rate do you use"})
    assert full.status_code == 200 and b"<html" in full.content and b"try-label\">exchange_rate" in full.content
    assert b"Type a text" in client.post(url, {"text": "  "}, HTTP_HX_REQUEST="true").content


def test_try_it_is_refused_on_an_archived_model_and_does_not_use_the_quota(admin_user, model):
    from labelf_studio.workspaces.models import UsagePeriod

    client = browser(admin_user)
    client.post(reverse("model_try", args=[model.id]), {"text": "hello"}, HTTP_HX_REQUEST="true")
    assert not UsagePeriod.objects.filter(texts_classified__gt=0).exists()
    client.post(reverse("model_archive", args=[model.id]))
    answer = client.post(reverse("model_try", args=[model.id]), {"text": "hello"}, HTTP_HX_REQUEST="true")
    assert b"archived" in answer.content and b"try-label" not in answer.content


def test_admin_deploys_and_archives_with_a_confirmation(admin_user, model):
    client = browser(admin_user)
    page = client.get(reverse("model_detail", args=[model.id])).content.decode()
    assert 'id="deploy-form"' in page and 'data-confirm="Deploy this model?' in page
    assert 'id="archive-form"' in page and 'data-confirm="Archive this model?' in page

    response = client.post(reverse("model_deploy", args=[model.id]), {"version": "1"})
    assert response.status_code == 302
    model.refresh_from_db()
    assert model.status == ModelStatus.DEPLOYED and model.pinned_version == 1
    client.post(reverse("model_archive", args=[model.id]))
    model.refresh_from_db()
    assert model.status == ModelStatus.ARCHIVED
    events = DeploymentEvent.objects.filter(model=model, user=admin_user)
    assert [e.action for e in events.order_by("id")] == ["deploy", "archive"]
    history = client.get(reverse("model_detail", args=[model.id])).content.decode()
    assert "deploy version 1 (pinned) · alice" in history and "archive · alice" in history


def test_lead_cannot_deploy_or_archive(lead_user, model):
    client = browser(lead_user)
    assert client.post(reverse("model_deploy", args=[model.id]), {}).status_code == 403
    assert client.post(reverse("model_archive", args=[model.id])).status_code == 403
    model.refresh_from_db()
    assert model.status == ModelStatus.READY and not DeploymentEvent.objects.exists()


def test_predictions_partial_polls_until_the_summary_exists(annotator_user, model):
    client = browser(annotator_user)
    url = reverse("model_predictions", args=[model.id])
    waiting = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in waiting  # the summary task was queued on commit, not run in this test

    from models_app.tasks import version_summarise
    version_summarise(model.latest_version_id)
    ready = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in ready and "Sample predictions" in ready
    assert ready.count("<tr><td class=\"record-text\">") == 20


def test_predictions_stop_polling_when_the_summary_never_came(annotator_user, model):
    # A lost summary task must not leave the page polling every 2 s forever.
    from datetime import timedelta

    from django.utils import timezone

    from models_app.models import ModelVersion

    ModelVersion.objects.filter(pk=model.latest_version_id).update(created_at=timezone.now() - timedelta(hours=2))
    client = browser(annotator_user)
    partial = client.get(reverse("model_predictions", args=[model.id]), HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in partial and "did not finish" in partial
    page = client.get(reverse("model_detail", args=[model.id])).content.decode()
    assert "every 2s" not in page


def test_lead_changes_the_threshold(lead_user, model):
    client = browser(lead_user)
    client.post(reverse("model_settings", args=[model.id]), {"name": "Renamed", "confidence_threshold": "0.7"})
    model.refresh_from_db()
    assert model.name == "Renamed" and model.confidence_threshold == 0.7
    client.post(reverse("model_settings", args=[model.id]), {"name": "Renamed", "confidence_threshold": "7"})
    model.refresh_from_db()
    assert model.confidence_threshold == 0.7


def test_lead_edits_descriptions_and_gets_a_new_zero_shot_version(lead_user, annotator_user, model):
    client = browser(lead_user)
    page = client.get(reverse("model_detail", args=[model.id])).content.decode()
    assert 'id="labels-form"' in page and 'name="label_description"' in page
    new = {"label_name": [label["name"] for label in LABELS], "label_description": [label["description"] for label in LABELS]}
    new["label_description"][1] = "How much one currency is worth in another; conversion rates"
    response = client.post(reverse("model_labels", args=[model.id]), new)
    assert response.status_code == 302
    model.refresh_from_db()
    assert model.label_descriptions["exchange_rate"] == new["label_description"][1]
    assert model.versions.count() == 2 and model.latest_version.number == 2
    # Annotators see the descriptions but cannot change them.
    assert 'name="label_description"' not in browser(annotator_user).get(reverse("model_detail", args=[model.id])).content.decode()
    assert browser(annotator_user).post(reverse("model_labels", args=[model.id]), new).status_code == 403


def test_model_page_lists_labels_without_evaluation_records_apart(annotator_user, model):
    """Zeros for a label no evaluation record carries say nothing: the page names those labels instead of
    showing them as 0.000 rows among the measured ones."""
    from models_app.models import ModelVersion

    names = [label["name"] for label in LABELS]
    measured = {"precision": 0.75, "recall": 0.6, "f1": 0.666667, "support": 5}
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "no_support": True}
    metrics = {"accuracy": 0.8, "f1_macro": 0.7, "evaluated_on": 5, "evaluation": "holdout",
               "per_class": {names[0]: empty, names[1]: measured, names[2]: empty, names[3]: measured}}
    ModelVersion.objects.filter(pk=model.latest_version.pk).update(metrics=metrics)
    html = browser(annotator_user).get(reverse("model_detail", args=[model.id])).content.decode()
    table = html[html.index("<h2>Evaluation</h2>"):html.index('id="unsupported-labels"')]
    assert f">{names[1]}<" in table and f">{names[3]}<" in table and "0.750" in table
    assert names[0] not in table and names[2] not in table
    note = html[html.index('id="unsupported-labels"'):]
    assert "2 labels with no evaluation record" in note and names[0] in note and names[2] in note
