"""The team page and the review page in the browser's session: leads only, escaped texts, the same
services as the API."""
from __future__ import annotations

import pytest
from django.test import Client

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import queue_recompute
from tests.conftest import ApiClient
from tests.factories import make_key, make_user
from tests.labeling.test_review_api import make_conflicts
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(workspace):
    model, _ = random_setup(workspace, n=200)
    queue_recompute(model=model)
    return model


@pytest.fixture
def annotators(workspace):
    return [ApiClient(make_key(workspace, "annotator", make_user(workspace, "annotator", username=name)))
            for name in ("ann", "bob")]


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_annotators_get_403_on_every_team_and_review_page(model, annotator_user, annotators):
    target = make_conflicts(model, annotators, 1)[0]
    client = browser(annotator_user)
    for url in (f"/models/{model.id}/team/", f"/models/{model.id}/review/", f"/models/{model.id}/review/next/"):
        assert client.get(url).status_code == 403, url
    assert client.post(f"/models/{model.id}/review/decide/", {"record_id": target, "label": model.labels[0]}).status_code == 403
    assert client.post(f"/models/{model.id}/team/overlap/", {"overlap_percent": 50, "overlap_annotators": 3}).status_code == 403
    assert Record.objects.get(pk=target).in_conflict
    model.refresh_from_db()
    assert model.overlap_share == 0.1
    # The model page links the pages for leads only.
    assert b"review-link" not in client.get(f"/models/{model.id}/").content


def test_the_review_page_shows_the_conflict_escaped_with_every_label_and_keys(model, annotators, lead_user):
    target = min(make_conflicts(model, annotators, 2))
    client = browser(lead_user)
    assert b'id="review-link"' in client.get(f"/models/{model.id}/").content
    page = client.get(f"/models/{model.id}/review/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-record-id="{target}"' in html
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html  # the record's text, escaped
    assert "<b>&</b>" not in html
    assert html.count('class="given-label"') == 2 and ">ann<" in html and ">bob<" in html
    assert '<kbd>1</kbd><span>billing</span>' in html.replace("\n", "").replace("  ", "")
    assert 'id="review-remaining">2</span> records in conflict' in html
    assert "<script>" not in html  # CSP: no inline scripts


def test_next_skips_the_excluded_and_decide_answers_json(model, annotators, lead_user):
    first, second = sorted(make_conflicts(model, annotators, 2))
    client = browser(lead_user)
    partial = client.get(f"/models/{model.id}/review/next/", {"exclude": f"{first},x"})
    assert f'data-record-id="{second}"'.encode() in partial.content and b"<html" not in partial.content
    answer = client.post(f"/models/{model.id}/review/decide/", {"record_id": second, "label": model.labels[2]})
    assert answer.status_code == 200 and answer.json() == {"record_id": second, "label": model.labels[2], "remaining": 1}
    assert Annotation.objects.get(record_id=second, adjudicated=True).user == lead_user
    again = client.post(f"/models/{model.id}/review/decide/", {"record_id": second, "label": model.labels[0]})
    assert again.status_code == 409 and again.json()["error_code"] == "CONFLICT" and lead_user.username in again.json()["message"]
    bad = client.post(f"/models/{model.id}/review/decide/", {"record_id": first, "label": "nope"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_FIELD"
    empty = client.get(f"/models/{model.id}/review/next/", {"exclude": str(first)})
    assert b'data-empty="1"' in empty.content


def test_the_team_page_shows_kappa_alpha_per_class_and_annotators(model, annotators, lead_user):
    ann, bob = annotators
    agreed = list(Recommendation.objects.filter(model=model, required_annotations__gt=1).order_by("position")
                  .values_list("record_id", flat=True)[10:14])
    for record_id in agreed:
        for api in (ann, bob):
            api.post(f"/v2/models/{model.id}/labels", {"labels": [{"record_id": record_id, "label": model.labels[0],
                                                                   "duration_ms": 3000}]})
    agreed += make_conflicts(model, annotators, 1)  # a billing/technical conflict
    page = browser(lead_user).get(f"/models/{model.id}/team/", {"window": "7d"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="kappa-matrix"' in html and ">ann<" in html and ">bob<" in html
    assert 'id="team-units">5<' in html
    assert 'aria-current="true">Last 7 days' in html
    assert 'id="team-conflicts">1<' in html
    # ann and bob: 5 labels each in 15 s of looking for 4 of them, one without a duration.
    assert html.count("<td class=\"num\">5</td>") >= 2


def test_a_bad_window_shows_an_error_and_all_time(model, lead_user):
    page = browser(lead_user).get(f"/models/{model.id}/team/", {"since": "not a date"})
    assert page.status_code == 400 and b"since: expected an ISO 8601 date" in page.content


def test_the_overlap_form_saves_the_settings(model, lead_user):
    client = browser(lead_user)
    response = client.post(f"/models/{model.id}/team/overlap/", {"overlap_percent": "25", "overlap_annotators": "3"})
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.overlap_share, model.overlap_annotators) == (0.25, 3)
    client.post(f"/models/{model.id}/team/overlap/", {"overlap_percent": "250", "overlap_annotators": "3"})
    client.post(f"/models/{model.id}/team/overlap/", {"overlap_percent": "x", "overlap_annotators": "3"})
    model.refresh_from_db()
    assert (model.overlap_share, model.overlap_annotators) == (0.25, 3)
    page = client.get(f"/models/{model.id}/team/")
    assert b'value="25.0"' in page.content and b'name="overlap_annotators" min="2" max="5" step="1" value="3"' in page.content
