"""The labeling page's endpoints (session auth) and the training panel."""
from __future__ import annotations

import pytest
from django.test import Client

from labeling.models import Annotation, Job, Record, Recommendation
from labeling.queue import queue_recompute
from models_app.models import ClassificationModel, ModelStatus
from tests.factories import make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, _ = random_setup(workspace, n=60)
    # One annotator per record: these tests are about the plain queue (overlap: test_overlap.py).
    model.overlap_share = 0.0
    model.save(update_fields=["overlap_share"])
    queue_recompute(model=model)
    return model


def browser(user):
    client = Client()
    client.force_login(user)
    return client


def record_id_of(html: str) -> int:
    marker = 'data-record-id="'
    start = html.index(marker) + len(marker)
    return int(html[start:html.index('"', start)])


def test_the_page_shows_one_leased_record_escaped_with_prediction_reason_and_keys(model, annotator_user):
    response = browser(annotator_user).get(f"/models/{model.id}/label/")
    assert response.status_code == 200
    html = response.content.decode()
    head = Recommendation.objects.filter(model=model).order_by("position").first()
    assert record_id_of(html) == head.record_id
    assert Recommendation.objects.get(pk=head.pk).leased_to == annotator_user
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>&</b>" not in html  # the text is escaped
    assert head.predicted_label in html and f"{round(head.confidence * 100)}% confident" in html
    assert f'data-reason="{head.reason}"' in html
    for i, label in enumerate(model.labels):
        assert f'data-label="{label}" data-key="{i + 1}"' in html
    assert "labeling.js" in html and "<script>" not in html  # no inline script (CSP)
    assert 'id="count-session"' in html and 'id="model-version">1<' in html


def test_evaluation_records_are_labeled_blind(model, annotator_user):
    # Shown the model's guess (and an Enter that accepts it), annotators agree with it more often: evaluation labels
    # taken that way would overstate the accuracy they measure.
    head = Recommendation.objects.filter(model=model).order_by("position").first()
    Recommendation.objects.filter(pk=head.pk).update(reason="evaluation")
    html = browser(annotator_user).get(f"/models/{model.id}/label/").content.decode()
    assert record_id_of(html) == head.record_id and 'data-reason="evaluation"' in html
    assert 'data-predicted=""' in html and 'id="label-blind"' in html
    assert "% confident" not in html and "accepts it" not in html


def test_next_skips_what_the_page_holds_and_submit_stores_the_label_with_its_duration(model, annotator_user):
    client = browser(annotator_user)
    first = record_id_of(client.get(f"/models/{model.id}/label/").content.decode())
    second = record_id_of(client.get(f"/models/{model.id}/label/next/", {"exclude": str(first)}).content.decode())
    assert second != first
    answer = client.post(f"/models/{model.id}/label/submit/", {"record_id": first, "label": model.labels[1], "duration_ms": "2345"})
    assert answer.status_code == 200
    assert answer.json()["labeled_total"] == 1 and answer.json()["stats"]["version"] == 1
    annotation = Annotation.objects.get(record_id=first)
    assert annotation.user == annotator_user and annotation.duration_ms == 2345 and annotation.label == model.labels[1]
    bad = client.post(f"/models/{model.id}/label/submit/", {"record_id": second, "label": "nope"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_FIELD"


def test_skip_releases_and_undo_shows_the_record_again(model, annotator_user):
    client = browser(annotator_user)
    first = record_id_of(client.get(f"/models/{model.id}/label/").content.decode())
    assert client.post(f"/models/{model.id}/label/skip/", {"record_id": first}).json() == {"released": True}
    assert Recommendation.objects.get(model=model, record_id=first).leased_to is None
    second = record_id_of(client.get(f"/models/{model.id}/label/next/").content.decode())
    assert second != first
    client.post(f"/models/{model.id}/label/submit/", {"record_id": second, "label": model.labels[0]})
    undone = client.post(f"/models/{model.id}/label/undo/")
    assert undone.status_code == 200 and record_id_of(undone.content.decode()) == second
    record = Record.objects.get(pk=second)
    assert record.label is None
    assert list(Annotation.objects.filter(record=record).values_list("is_current", flat=True)) == [False]
    assert Recommendation.objects.get(model=model, record=record).leased_to == annotator_user
    assert client.post(f"/models/{model.id}/label/undo/").status_code == 204  # nothing left to undo


def test_undo_restores_the_previous_label(model, annotator_user, lead_user):
    record = Record.objects.filter(dataset=model.dataset).first()
    browser(lead_user).post(f"/models/{model.id}/label/submit/", {"record_id": record.id, "label": model.labels[0]})
    client = browser(annotator_user)
    client.post(f"/models/{model.id}/label/submit/", {"record_id": record.id, "label": model.labels[2]})
    assert client.post(f"/models/{model.id}/label/undo/").status_code == 204  # relabeled: nothing to show
    record.refresh_from_db()
    assert record.label == model.labels[0]
    assert Annotation.objects.get(record=record, is_current=True).user == lead_user


def test_pages_need_a_member_of_the_models_workspace(model, other_workspace, annotator_user):
    outsider = make_user(other_workspace, "admin")
    assert browser(outsider).get(f"/models/{model.id}/label/").status_code == 404
    assert browser(outsider).post(f"/models/{model.id}/label/submit/", {"record_id": 1, "label": "x"}).status_code == 404
    assert Client().get(f"/models/{model.id}/label/").status_code == 302  # to the login page


def test_an_archived_model_cannot_be_labeled_in_the_browser(model, annotator_user):
    ClassificationModel.objects.filter(pk=model.pk).update(status=ModelStatus.ARCHIVED)
    client = browser(annotator_user)
    assert "archived" in client.get(f"/models/{model.id}/label/").content.decode()
    record = Record.objects.filter(dataset=model.dataset).first()
    answer = client.post(f"/models/{model.id}/label/submit/", {"record_id": record.id, "label": model.labels[0]})
    assert answer.status_code == 409 and answer.json()["error_code"] == "MODEL_ARCHIVED"


def test_training_panel_shows_the_curve_and_only_a_lead_can_train(model, annotator_user, lead_user,
                                                                  django_capture_on_commit_callbacks):
    panel = browser(annotator_user).get(f"/models/{model.id}/training/", HTTP_HX_REQUEST="true")
    assert panel.status_code == 200 and "Retrain now" not in panel.content.decode()
    assert browser(annotator_user).post(f"/models/{model.id}/training/", {"type": "active-learning"}).status_code == 403
    assert not Job.objects.filter(kind="train").exists()

    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index")[:12])
    for i, record in enumerate(records):
        Record.objects.filter(pk=record.pk).update(label=model.labels[i % 3])
    lead = browser(lead_user)
    assert "Retrain now" in lead.get(f"/models/{model.id}/training/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        answer = lead.post(f"/models/{model.id}/training/", {"type": "active-learning"}, HTTP_HX_REQUEST="true")
    assert answer.status_code == 200 and "queued" in answer.content.decode()
    html = lead.get(f"/models/{model.id}/training/", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="learning-curve"' in html and "<polyline" in html and 'id="stopping-signal"' in html
    point = model.versions.order_by("-number").first().details["learning_curve"]
    # Labels given, then what the version trained on (the model's "training examples"; evaluation labels held out).
    assert f"<td>{point['labels']}</td><td>{point['training_examples']}</td>" in html
    assert "hx-trigger=\"every 3s\"" not in html  # the job finished: polling stops
    Record.objects.filter(dataset=model.dataset, label=model.labels[2]).update(label=None)
    short = lead.post(f"/models/{model.id}/training/", {"type": "fine-tuned"})
    assert short.status_code == 400 and model.labels[2] in short.content.decode()
    in_panel = lead.post(f"/models/{model.id}/training/", {"type": "fine-tuned"}, HTTP_HX_REQUEST="true")
    assert in_panel.status_code == 200 and "error-text" in in_panel.content.decode()
    assert Job.objects.filter(kind="train").count() == 1


def test_training_panel_says_imported_labels_wait_for_retrain_now(model, annotator_user, lead_user):
    # Labels that came with the file start no training; the panel must not say "after 20 labels" beside 40 of them.
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index")[:40])
    Record.objects.filter(pk__in=[r.pk for r in records]).update(label=model.labels[0])
    html = browser(lead_user).get(f"/models/{model.id}/training/", HTTP_HX_REQUEST="true").content.decode()
    assert "40 records are labeled" in html and "press <strong>Retrain now</strong>" in html
    assert "the first one is trained after" not in html
    html = browser(annotator_user).get(f"/models/{model.id}/training/", HTTP_HX_REQUEST="true").content.decode()
    assert "a lead can train on them now" in html


def test_a_large_label_set_gets_a_filter_box_instead_of_keys(workspace, annotator_user):
    labels = tuple(f"intent_{i:02d}" for i in range(40))
    model, _ = random_setup(workspace, n=80, labels=labels)
    queue_recompute(model=model)
    html = browser(annotator_user).get(f"/models/{model.id}/label/").content.decode()
    assert 'id="label-filter"' in html and 'data-filter-mode="1"' in html
    # Every key types into the filter box, so no label button shows a key (a "1" badge that only
    # typed "1" into the filter misled annotators), and the long list scrolls inside its card.
    assert 'data-label="intent_00" data-key=""' in html and 'data-label="intent_39" data-key=""' in html
    buttons = html[html.index('id="label-buttons"'):html.index('data-action="skip"')]
    assert "<kbd>" not in buttons and 'class="label-buttons label-list-long"' in html
    assert 'data-key="s"' not in html and 'data-key="u"' not in html  # the command keys stay free


def test_training_panel_says_how_many_records_measured_a_version_and_reloads_the_model_page_when_done(
        model, lead_user, django_capture_on_commit_callbacks):
    records = list(Record.objects.filter(dataset=model.dataset).order_by("row_index")[:15])
    for i, record in enumerate(records):
        Record.objects.filter(pk=record.pk).update(label=model.labels[i % 3])
    Record.objects.filter(pk__in=[r.pk for r in records[12:]]).update(split="evaluation")  # a holdout of 3
    lead = browser(lead_user)
    with django_capture_on_commit_callbacks(execute=True):
        lead.post(f"/models/{model.id}/training/", {"type": "active-learning"}, HTTP_HX_REQUEST="true")
    job = Job.objects.get(kind="train")
    model_page = f"http://testserver/models/{model.id}/"

    polled = lead.get(f"/models/{model.id}/training/", {"polling": job.id}, HTTP_HX_REQUEST="true",
                      HTTP_HX_CURRENT_URL=model_page)
    html = polled.content.decode()
    assert "<td>active-learning</td>" in html and "holdout · 3 records" in html and 'id="few-evaluation"' in html and "only 3 evaluation" in html
    assert "<circle" in html  # one marker per version, visible even when versions share a label count
    # The job it was polling has finished: the model page reloads once to show the new version everywhere...
    assert polled.headers.get("HX-Refresh") == "true"
    # ...but not the labeling page (an annotator's record stays), nor a panel that was not polling a job.
    on_label_page = lead.get(f"/models/{model.id}/training/", {"polling": job.id}, HTTP_HX_REQUEST="true",
                             HTTP_HX_CURRENT_URL=f"http://testserver/models/{model.id}/label/")
    first_load = lead.get(f"/models/{model.id}/training/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=model_page)
    assert "HX-Refresh" not in on_label_page.headers and "HX-Refresh" not in first_load.headers
