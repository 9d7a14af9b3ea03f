"""An annotator labels records by keyboard, undoes one and skips one, in Chromium."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import queue_recompute
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Chromium's launch arguments come from tests/browser/conftest.py (browser_type_launch_args).


def eventually(check, timeout: float = 20.0):
    """The page shows the next record before its label/skip request has finished (that is what
    makes labeling instant), so the database is read once those requests have landed."""
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "the page's requests did not reach the server in time"
        time.sleep(0.1)


def shown_record(page) -> int:
    return int(page.locator("#label-record").get_attribute("data-record-id"))


def wait_for_new_record(page, previous: int) -> int:
    expect(page.locator("#label-record")).not_to_have_attribute("data-record-id", str(previous))
    return shown_record(page)


def test_annotator_labels_by_keyboard_undoes_and_skips(login, live_server, workspace, annotator_user):
    model, _ = random_setup(workspace, n=300)
    queue_recompute(model=model)
    # Evaluation samples are labeled blind (no prediction, nothing for Enter to accept: test_queue_pages.py); this
    # test presses Enter on whatever comes second, so its queue holds none.
    Recommendation.objects.filter(model=model, reason="evaluation").update(reason="uncertain")
    page = login(annotator_user.username)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    expect(page.locator("#label-record .label-prediction")).to_be_visible()

    first = shown_record(page)
    predicted_second = None
    page.keyboard.press("1")  # first label
    second = wait_for_new_record(page, first)
    predicted_second = page.locator("#label-record").get_attribute("data-predicted")
    page.keyboard.press("Enter")  # accept the prediction
    third = wait_for_new_record(page, second)
    page.keyboard.press("3")
    fourth = wait_for_new_record(page, third)
    expect(page.locator("#count-session")).to_have_text("3")
    expect(page.locator("#count-total")).to_have_text("3")

    page.keyboard.press("u")  # undo the last label: the third record comes back
    expect(page.locator("#label-record")).to_have_attribute("data-record-id", str(third))
    expect(page.locator("#count-session")).to_have_text("2")
    page.keyboard.press("2")  # label it again, differently
    after_relabel = wait_for_new_record(page, third)
    assert after_relabel == fourth  # the record that was on screen before the undo

    page.keyboard.press("s")  # skip it
    fifth = wait_for_new_record(page, fourth)
    page.keyboard.press("?")
    expect(page.locator("#label-help")).to_be_visible()
    expect(page.locator("#count-session")).to_have_text("3")

    eventually(lambda: Record.objects.filter(id__in=[first, second, third], label__isnull=False).count() == 3
               and not Recommendation.objects.filter(model=model, record_id=fourth, leased_to__isnull=False).exists())
    labels = dict(Record.objects.filter(id__in=[first, second, third]).values_list("id", "label"))
    assert labels == {first: model.labels[0], second: predicted_second, third: model.labels[1]}
    history = list(Annotation.objects.filter(record_id=third).order_by("created_at", "id")
                   .values_list("label", "is_current"))
    assert history == [(model.labels[2], False), (model.labels[1], True)]
    assert all(a.duration_ms is not None and a.user_id == annotator_user.id for a in Annotation.objects.all())
    skipped = Recommendation.objects.get(model=model, record_id=fourth)
    assert skipped.leased_to_id is None and Record.objects.get(pk=fourth).label is None
    assert Recommendation.objects.get(model=model, record_id=fifth).leased_to_id == annotator_user.id
    assert not errors
    assert re.search(r"\d", page.locator("#count-rate").inner_text())


def test_a_large_label_set_is_labeled_by_typing_to_filter(login, live_server, workspace, annotator_user):
    labels = tuple(f"intent_{i:02d}" for i in range(40))
    model, _ = random_setup(workspace, n=200, labels=labels)
    queue_recompute(model=model)
    page = login(annotator_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    first = shown_record(page)
    page.keyboard.type("ent_3")  # the filter box has the focus: ten labels match
    expect(page.locator("#label-buttons button:visible")).to_have_count(10)
    page.keyboard.press("Enter")  # several matches: nothing is labeled
    expect(page.locator("#label-status")).to_contain_text("Several labels match")
    page.keyboard.type("7")
    expect(page.locator("#label-buttons button:visible")).to_have_count(1)
    page.keyboard.press("Enter")
    second = wait_for_new_record(page, first)
    expect(page.locator("#label-filter")).to_have_value("")
    page.keyboard.press("Escape")  # command keys: skip
    page.keyboard.press("s")
    wait_for_new_record(page, second)
    eventually(lambda: Record.objects.get(pk=first).label is not None
               and Recommendation.objects.get(model=model, record_id=second).leased_to_id is None)
    assert Record.objects.get(pk=first).label == "intent_37"
    assert Recommendation.objects.get(model=model, record_id=second).leased_to_id is None


def test_a_lead_pressing_retrain_with_no_labels_reads_why_nothing_happens(login, live_server, workspace, lead_user):
    # The panel answers htmx with the reason inside it (htmx swaps only 2xx answers).
    model, _ = random_setup(workspace, n=40)
    page = login(lead_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    page.wait_for_function("window.htmx !== undefined")
    page.get_by_role("button", name="Retrain now").click()
    expect(page.get_by_text("There are no labels to train on yet")).to_be_visible()
    assert page.url.endswith(f"/models/{model.id}/label/")  # swapped in place, no page load
    assert model.versions.count() == 1


def test_a_label_contained_in_longer_labels_is_chosen_by_typing_its_whole_name(login, live_server, workspace,
                                                                               annotator_user):
    # "intent_3" is part of "intent_30".."intent_39": typing it whole must still label with it.
    labels = tuple(f"intent_{i}" for i in range(40))
    model, _ = random_setup(workspace, n=200, labels=labels)
    queue_recompute(model=model)
    page = login(annotator_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    first = shown_record(page)
    page.keyboard.type("INTENT_3")
    expect(page.locator("#label-buttons button:visible")).to_have_count(11)
    page.keyboard.press("Enter")
    wait_for_new_record(page, first)
    eventually(lambda: Record.objects.get(pk=first).label is not None)
    assert Record.objects.get(pk=first).label == "intent_3"


def test_enter_on_a_button_reached_with_tab_presses_that_button_not_accept(login, live_server, workspace,
                                                                           annotator_user):
    model, _ = random_setup(workspace, n=100)
    queue_recompute(model=model)
    page = login(annotator_user.username)
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    first = shown_record(page)
    page.locator("button[data-action=skip]").focus()
    page.keyboard.press("Enter")  # the Skip button, as a keyboard user reaches it
    wait_for_new_record(page, first)
    eventually(lambda: Recommendation.objects.get(model=model, record_id=first).leased_to_id is None)
    assert Record.objects.get(pk=first).label is None  # skipped, not labeled with the prediction
    assert not Annotation.objects.filter(record_id=first).exists()


def test_a_long_message_scrolls_in_its_box_and_the_labels_stay_on_screen(login, live_server, workspace,
                                                                         annotator_user):
    model, _ = random_setup(workspace, n=60)
    long_text = "\n\n".join("The device stopped working after the update and support never answered. " * 12
                            for _ in range(9))
    Record.objects.filter(dataset=model.dataset).update(text=long_text)
    queue_recompute(model=model)
    page = login(annotator_user.username)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/models/{model.id}/label/")
    expect(page.locator("#labeling")).to_have_attribute("data-ready", "1")
    expect(page.locator("#label-record .label-text")).to_contain_text("support never answered")
    assert page.locator("#label-buttons").bounding_box()["y"] < 900  # without scrolling the page
