"""The evaluation page, the records behind a confusion-matrix cell, saving the threshold, and the compare page,
on real Banking77 data imported through the pipeline, with a real active-learning version."""
from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from models_app.models import ClassificationModel
from models_app.services import model_create
from tests.evaluation.conftest import CATEGORIES, DESCRIPTIONS, EVALUATION_RECORDS, HOSTILE
from tests.evaluation.oracle import evaluation_predictions

pytestmark = [pytest.mark.django_db(transaction=True)]

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>")


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def json_block(content: str, block_id: str):
    match = re.search(rf'<script id="{block_id}" type="application/json">(.*?)</script>', content, re.S)
    assert match, f"no JSON block {block_id}"
    return json.loads(match.group(1))


def linked_cells(content: str) -> dict[tuple[str, str], int]:
    cells = re.findall(r'data-cell="([^"|]*)\|([^"]*)">(\d+)</a>', content)
    return {(html.unescape(gold), html.unescape(predicted)): int(count) for gold, predicted, count in cells}


def test_evaluation_page_shows_metrics_per_class_table_heatmap_threshold_and_calibration(world, annotator_user):
    model = world.model
    version = model.versions.get(number=2)
    response = browser(annotator_user).get(reverse("model_evaluation", args=[model.id]))
    assert response.status_code == 200
    content = response.content.decode()
    assert not INLINE_SCRIPT.search(content)  # the CSP forbids inline scripts
    assert "evaluation.js" in content and "chart-4.6.1.umd.min.js" in content
    # Default: the newest version (the model is not deployed).
    assert "Evaluation of Card intents, version 2" in content
    assert f"holdout: {EVALUATION_RECORDS} evaluation labels never trained on" in content
    assert f"{version.metrics['accuracy']:.3f}" in content and f"{version.metrics['f1_macro']:.3f}" in content
    table = content[content.index('id="per-class"'):content.index("</table>", content.index('id="per-class"'))]
    for label in CATEGORIES:
        row = version.metrics["per_class"][label]
        assert f'data-value="{label}"' in table and f'<td data-value="{row["support"]}">{row["support"]}</td>' in table
    # The heatmap: every non-empty cell of the stored matrix is a link with its count.
    matrix = version.metrics["confusion_matrix"]
    expected = {(gold, predicted): count for gold, counts in zip(matrix["labels"], matrix["matrix"])
                for predicted, count in zip(matrix["labels"], counts) if count}
    assert linked_cells(content) == expected and sum(expected.values()) == EVALUATION_RECORDS
    # The threshold chart reads the stored curve; the numbers at the model's threshold (0.5) are rendered too.
    assert json_block(content, "threshold-curve") == version.threshold_curve
    at_half = next(p for p in version.threshold_curve if p["threshold"] == 0.5)
    assert f'data-metric="coverage">{at_half["coverage"]:.3f}<' in content
    # Calibration: an active-learning version stores no calibration step, so only "as is" is shown.
    calibration = json_block(content, "calibration-data")
    assert calibration["before"] is None and calibration["evaluated_on"] == EVALUATION_RECORDS
    assert sum(b["count"] for b in calibration["after"]["diagram"]) == EVALUATION_RECORDS
    assert 0 <= calibration["after"]["ece"] <= 1 and 'id="ece-before"' not in content

    # The picker: version 1 (describe-and-classify) stored no curve; one is computed from its predictions.
    first = browser(annotator_user).get(reverse("model_evaluation", args=[model.id]), {"version": 1}).content.decode()
    assert "version 1" in first and "computed from this version&#x27;s predictions on the 41 evaluation records" in first
    curve = json_block(first, "threshold-curve")
    assert len(curve) == 101 and curve[0]["coverage"] == 1.0
    assert curve[0]["precision"] == pytest.approx(model.versions.get(number=1).metrics["accuracy"], abs=1e-6)
    assert browser(annotator_user).get(reverse("model_evaluation", args=[model.id]), {"version": 9}).status_code == 404
    for bad in ("x", "²", str(2**70)):
        assert browser(annotator_user).get(reverse("model_evaluation", args=[model.id]), {"version": bad}).status_code == 404


def test_target_helper_answers_without_javascript(world, annotator_user):
    from models_app.ml.thresholds import threshold_for_target

    model = world.model
    curve = model.versions.get(number=2).threshold_curve
    content = browser(annotator_user).get(reverse("model_evaluation", args=[model.id]),
                                          {"version": 2, "target": "90"}).content.decode()
    expected = threshold_for_target(curve, min_precision=0.9)
    assert f"Threshold <strong>{expected['threshold']}</strong> gives precision {expected['precision']:.3f}" in content
    bad = browser(annotator_user).get(reverse("model_evaluation", args=[model.id]), {"target": "140"}).content.decode()
    assert "must be between 0 and 100 percent" in bad


def test_a_class_without_evaluation_records_is_marked_not_divided_by_zero(world, annotator_user):
    labels = [{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES]
    labels.append({"name": "refund_not_showing_up", "description": "A refund has not appeared on the account"})
    model = model_create(workspace=world.model.workspace, dataset=world.dataset, name="Five intents", labels=labels)
    content = browser(annotator_user).get(reverse("model_evaluation", args=[model.id])).content.decode()
    row = re.search(r'<tr class="muted">\s*<td data-value="refund_not_showing_up">.*?</tr>', content, re.S)
    assert row and "no support" in row.group(0) and "—" in row.group(0)
    assert not re.search(r"\b(nan|NaN|inf)\b", content)
    assert re.search(r'<tr class="no-support">\s*<th scope="row" class="gold" title="refund_not_showing_up[^"]*">refund_not_showing_up', content)


def test_a_cell_opens_exactly_the_records_with_that_gold_and_predicted_label(world, annotator_user, other_workspace):
    model = world.model
    version = model.versions.get(number=2)
    predictions = evaluation_predictions(version, world.dataset)
    client = browser(annotator_user)
    url = reverse("model_evaluation_cell", args=[model.id])
    cells = {(p["gold"], p["predicted"]) for p in predictions}
    assert any(gold != predicted for gold, predicted in cells) or len(cells) == len(CATEGORIES)
    for gold, predicted in cells:
        content = client.get(url, {"version": 2, "gold": gold, "predicted": predicted}).content.decode()
        listed = {int(i) for i in re.findall(r'data-record-id="(\d+)"', content)}
        assert listed == {p["id"] for p in predictions if p["gold"] == gold and p["predicted"] == predicted}
        assert content.count("<html") == 1  # a full page without htmx
    hostile = next(p for p in predictions if p["text"] == HOSTILE["text"])
    partial = client.get(url, {"version": 2, "gold": hostile["gold"], "predicted": hostile["predicted"]},
                         HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;my new card" in partial
    assert "<script>alert" not in partial
    # An empty cell says so; an unknown label is a 404; another workspace's model is a 404.
    assert client.get(url, {"version": 2, "gold": "nope", "predicted": CATEGORIES[0]}).status_code == 404
    from tests.factories import make_user

    stranger = browser(make_user(other_workspace, "admin"))
    assert stranger.get(url, {"version": 2, "gold": CATEGORIES[0], "predicted": CATEGORIES[0]}).status_code == 404
    assert stranger.get(reverse("model_evaluation", args=[model.id])).status_code == 404


def test_saving_the_threshold_changes_what_inference_calls_above_threshold(world, lead_user, annotator_user, admin_api):
    model = world.model
    assert admin_api.post(f"/v2/models/{model.id}/deploy", {}).status_code == 200
    text = "I still haven't received my new card, when will it come?"
    confidence = admin_api.post(f"/v2/models/{model.id}/inference", {"texts": [text]}).json()["predictions"][0]["confidence"]
    url = reverse("model_threshold_save", args=[model.id])
    lead = browser(lead_user)

    above = round(min(1.0, confidence + 0.001), 6)
    response = lead.post(url, {"confidence_threshold": str(above), "version": "2"})
    assert response.status_code == 302 and response["Location"] == reverse("model_evaluation", args=[model.id]) + "?version=2"
    model.refresh_from_db()
    assert model.confidence_threshold == above
    prediction = admin_api.post(f"/v2/models/{model.id}/inference", {"texts": [text]}).json()["predictions"][0]
    assert prediction["above_threshold"] is False
    followed = lead.get(response["Location"]).content.decode()
    assert "Saved: the threshold is now" in followed

    lead.post(url, {"confidence_threshold": str(round(confidence - 0.001, 6)), "version": "2"})
    assert admin_api.post(f"/v2/models/{model.id}/inference", {"texts": [text]}).json()["predictions"][0]["above_threshold"] is True

    saved = ClassificationModel.objects.get(pk=model.pk).confidence_threshold
    for bad in ("1.5", "-0.1", "abc", "nan", ""):
        response = lead.post(url, {"confidence_threshold": bad, "version": "2"}, follow=True)
        assert "Not saved: the confidence threshold must be a number between 0 and 1" in response.content.decode()
        assert ClassificationModel.objects.get(pk=model.pk).confidence_threshold == saved
    assert browser(annotator_user).post(url, {"confidence_threshold": "0.9"}).status_code == 403
    assert ClassificationModel.objects.get(pk=model.pk).confidence_threshold == saved
    assert lead.get(url).status_code == 405


def test_model_page_links_partial(world):
    from django.template.loader import render_to_string

    model = world.model
    rendered = render_to_string("models_app/partials/_evaluation_links.html", {"model": model, "version": model.latest_version})
    assert f'href="{reverse("model_evaluation", args=[model.id])}?version=2"' in rendered
    assert f'href="{reverse("model_compare", args=[model.id])}"' in rendered


def test_evaluation_page_query_count_is_pinned(world, annotator_user, django_assert_num_queries):
    client = browser(annotator_user)
    url = reverse("model_evaluation", args=[world.model.id])
    for number in (1, 2):  # warm the prediction cache, as any visit after the first finds it
        assert client.get(url, {"version": number}).status_code == 200
    for number in (1, 2):
        with django_assert_num_queries(8):
            client.get(url, {"version": number})
    with django_assert_num_queries(7):  # the default version comes with the model row
        client.get(url)


def test_compare_page_shows_verdict_deltas_matrices_disagreements_and_learning_curve(world, annotator_user):
    model = world.model
    v1, v2 = model.versions.get(number=1), model.versions.get(number=2)
    response = browser(annotator_user).get(reverse("model_compare", args=[model.id]))  # default: v1 against v2
    assert response.status_code == 200
    content = response.content.decode()
    assert not INLINE_SCRIPT.search(content)
    assert "Compare Card intents v1 with v2" in content and "McNemar" in content
    assert re.search(r"the difference (is|is not) statistically significant", content)
    p1 = {p["id"]: p for p in evaluation_predictions(v1, world.dataset)}
    p2 = {p["id"]: p for p in evaluation_predictions(v2, world.dataset)}
    wrong = {rid for rid in p1 if p1[rid]["predicted"] != p1[rid]["gold"] or p2[rid]["predicted"] != p2[rid]["gold"]}
    assert {int(i) for i in re.findall(r'data-record-id="(\d+)"', content)} == wrong
    if any(p["text"] == HOSTILE["text"] for rid, p in p1.items() if rid in wrong):
        assert "&lt;script&gt;alert(1)" in content
    assert "<script>alert" not in content
    assert content.count('class="heatmap"') == 2
    chart = json_block(content, "compare-data")
    assert chart["labels"] == CATEGORIES and len(chart["deltas"]) == len(CATEGORIES)
    assert [p["version"] for p in chart["curves"][0]["points"]] == [1, 2]
    assert [p["training_examples"] for p in chart["curves"][0]["points"]] == [0, v2.training_examples]

    same = model_create(workspace=model.workspace, dataset=world.dataset, name="Same intents",
                        labels=[{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES])
    switched = browser(annotator_user).get(reverse("model_compare", args=[model.id]), {"a": 2, "other_model": same.id, "b": 2})
    assert switched.status_code == 200 and "Same intents has no version 2; showing its newest, version 1" in switched.content.decode()
    assert browser(annotator_user).get(reverse("model_compare", args=[model.id]), {"a": 2, "b": 7}).status_code == 404

    labels = [{"name": c, "description": DESCRIPTIONS[c]} for c in CATEGORIES[:3]]
    other = model_create(workspace=model.workspace, dataset=world.dataset, name="Three intents", labels=labels)
    mismatch = browser(annotator_user).get(reverse("model_compare", args=[model.id]), {"other_model": other.id, "b": 1})
    assert mismatch.status_code == 400
    assert "different label sets" in mismatch.content.decode() and "top_up_failed" in mismatch.content.decode()


def test_a_fine_tuned_version_shows_calibration_before_and_after(world, lead_user):
    from models_app.training_services import train_request

    from labeling.models import Record

    model = world.model
    # A third of the pool's labels removed: those records are the unlabeled pool the version self-trains on.
    pool_ids = list(Record.objects.filter(dataset=model.dataset, split="pool").order_by("row_index")
                    .values_list("id", flat=True))
    Record.objects.filter(id__in=pool_ids[::3]).update(label=None)
    job, _ = train_request(model=model, type="fine-tuned")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    version = model.versions.get(number=3)
    stored = version.details["head"]["calibration"]
    content = browser(lead_user).get(reverse("model_evaluation", args=[model.id]), {"version": 3}).content.decode()
    calibration = json_block(content, "calibration-data")
    assert calibration["calibrated"] and calibration["temperature"] == version.details["head"]["temperature"]
    for side in ("before", "after"):
        assert sum(b["count"] for b in calibration[side]["diagram"]) == EVALUATION_RECORDS
    # Undoing the temperature changes confidences but never a prediction: both diagrams have the same accuracy.
    def correct(diagram):
        return sum(b["accuracy"] * b["count"] for b in diagram if b["count"])
    assert correct(calibration["before"]["diagram"]) == pytest.approx(correct(calibration["after"]["diagram"]))
    assert calibration["before"]["diagram"] != calibration["after"]["diagram"]
    assert 'id="ece-before"' in content and 'id="ece-after"' in content
    assert f"{stored['ece_before']:.3f} → {stored['ece_after']:.3f}" in content
    # The page says what the version learned from: its labels and the pool records it pseudo-labeled.
    self_training = version.details["head"]["self_training"]
    assert self_training["pool"] == len(pool_ids[::3])
    assert (f"Trained on {version.training_examples} training labels, plus {self_training['pseudo_labels']} of "
            f"{self_training['pool']} sampled unlabeled records") in content


def test_an_evaluation_label_added_after_training_is_flagged_and_listed(world, annotator_user):
    from labeling.models import Record

    model = world.model
    moved = Record.objects.filter(dataset=world.dataset, split="pool", label="exchange_rate").order_by("row_index").first()
    Record.objects.filter(pk=moved.pk).update(split="evaluation")
    client = browser(annotator_user)
    content = client.get(reverse("model_evaluation", args=[model.id]), {"version": 2}).content.decode()
    assert f"measured on {EVALUATION_RECORDS} evaluation labels; {EVALUATION_RECORDS + 1} exist now" in content
    predicted = next(p["predicted"] for p in evaluation_predictions(model.versions.get(number=2), world.dataset)
                     if p["id"] == moved.pk)
    cell = client.get(reverse("model_evaluation_cell", args=[model.id]),
                      {"version": 2, "gold": "exchange_rate", "predicted": predicted}).content.decode()
    assert f'data-record-id="{moved.pk}"' in cell
