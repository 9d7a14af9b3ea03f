"""The evaluation page in a real browser: the threshold slider updates the numbers from the stored curve without a
round trip, "Save threshold" stores it on the model, and a confusion-matrix cell opens the records behind it."""
import pytest
from playwright.sync_api import expect

from models_app.models import ClassificationModel
from tests.evaluation.conftest import build_world, fresh_caches  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_slider_moves_numbers_save_stores_threshold_and_cell_opens_records(login, live_server, workspace, lead_user,
                                                                           banking77_dir):
    world = build_world(workspace, banking77_dir)
    model = world.model
    curve = {round(p["threshold"], 2): p for p in model.versions.get(number=2).threshold_curve}
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/evaluation/?version=2")
    numbers = page.locator("#threshold-numbers")
    expect(numbers.locator("[data-metric=threshold]")).to_have_text("0.50")

    requests = []
    page.on("request", lambda request: requests.append(request.url))
    slider = page.locator("#threshold-slider")
    slider.focus()
    page.keyboard.press("End")
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
    point = curve[0.8]
    expect(numbers.locator("[data-metric=threshold]")).to_have_text("0.80")
    expect(numbers.locator("[data-metric=precision]")).to_have_text(f"{point['precision']:.3f}")
    expect(numbers.locator("[data-metric=coverage]")).to_have_text(f"{point['coverage']:.3f}")
    expect(page.locator("#threshold-input")).to_have_value("0.8")
    assert requests == []  # the numbers came from the curve already on the page

    page.click("#save-threshold")
    expect(page.locator(".messages")).to_contain_text("Saved: the threshold is now 0.8")
    assert ClassificationModel.objects.get(pk=model.pk).confidence_threshold == pytest.approx(0.8)

    # The helper box answers a typed target at once, by the same rule as the API.
    page.fill("#target-input", "90")
    expect(page.locator("#target-answer")).to_contain_text("gives precision")

    cell = page.locator("table.heatmap a[data-cell]").first
    count = int(cell.inner_text())
    cell.click()
    expect(page.locator("#cell-records #cell-records-table tbody tr")).to_have_count(count)
    expect(page.locator("#cell-records h3")).to_contain_text("predicted")


def test_a_confusion_matrix_of_many_long_labels_keeps_one_line_per_row(login, live_server, workspace, lead_user):
    # 60 long snake_case labels: the names used to wrap a letter or two per line, rows grew hundreds of pixels tall.
    from tests.training.helpers import random_setup

    labels = tuple(f"intent_{i:02d}_reported_through_the_mobile_application_channel" for i in range(60))
    model, _ = random_setup(workspace, n=120, labels=labels)
    version = model.latest_version
    matrix = [[2 if gold == predicted else (1 if predicted == (gold + 1) % 60 else 0) for predicted in range(60)]
              for gold in range(60)]
    version.metrics = {
        "accuracy": 2 / 3, "macro_f1": 2 / 3, "evaluation": "holdout", "evaluated_on": 180,
        "per_class": {label: {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3} for label in labels},
        "confusion_matrix": {"labels": list(labels), "matrix": matrix}}
    version.save(update_fields=["metrics"])
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/evaluation/?version={version.number}")
    table = page.locator("table.heatmap")
    expect(table).to_be_visible()
    first_row = table.locator("tbody tr").first
    assert first_row.bounding_box()["height"] < 60
    assert table.bounding_box()["height"] < 60 * 40 + 400
    gold = first_row.locator("th.gold")
    assert gold.get_attribute("title") == labels[0]  # the full name when the cell cuts it
    header = table.locator("thead th.predicted").first
    assert header.get_attribute("title") == labels[0] and header.bounding_box()["width"] < 60
