"""The Python client against the real server (pytest-django's live_server), including its retry strategy."""
from __future__ import annotations

import pytest
from django.http import JsonResponse
from django.urls import path

from labelf_studio import urls as production_urls
from labelf_studio.api import error_response
from labelf_studio.client import (BadRequest, Client, Conflict, ConnectionFailed, Forbidden, NotFound, RateLimited,
                                  ServerError, Unauthorized)
from labelf_studio.workspaces.models import RateLimitCounter
from tests.factories import make_key, make_user, make_workspace
from tests.models_app.conftest import LABELS, banking77_rows, make_ready_dataset

# --- a test-only URLconf: production routes plus an endpoint that fails twice, then succeeds ----------
_flaky_calls = {"count": 0}


def _flaky(request):
    _flaky_calls["count"] += 1
    if _flaky_calls["count"] <= 2:
        return error_response(request, 500, "INTERNAL_ERROR", "simulated crash")
    return JsonResponse({"ok": True, "calls": _flaky_calls["count"]})


urlpatterns = [path("v2/test-flaky", _flaky, name="test_flaky"), *production_urls.urlpatterns]


@pytest.fixture(autouse=True)
def _transactional(transactional_db):
    """The live server runs in another thread: it must see committed rows."""


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def server_data(banking77_dir):
    workspace = make_workspace()
    admin = make_user(workspace, "admin")
    dataset = make_ready_dataset(workspace, banking77_rows(banking77_dir, per_label=6))
    return {"workspace": workspace, "dataset": dataset, "admin_key": make_key(workspace, "admin", admin),
            "annotator_key": make_key(workspace, "annotator")}


def test_model_lifecycle_and_chunked_classify(live_server, server_data):
    sleeps = Sleeps()
    client = Client(live_server.url, server_data["admin_key"], sleep=sleeps)
    created = client.create_model("Contact reason", server_data["dataset"].id,
                                  {label["name"]: label["description"] for label in LABELS})
    assert created["status"] == "ready" and created["version"] == 1
    assert [m["id"] for m in client.models()] == [created["id"]]
    assert client.model(created["id"])["name"] == "Contact reason"
    assert [d["id"] for d in client.datasets()] == [server_data["dataset"].id]

    with pytest.raises(Conflict) as not_deployed:
        client.classify(created["id"], ["hello"])
    assert not_deployed.value.error_code == "MODEL_NOT_DEPLOYED" and not_deployed.value.request_id.startswith("req_")

    assert client.deploy(created["id"])["status"] == "deployed"
    texts = ["I lost my card", "what is the exchange rate", "my top-up failed", "when does my card arrive"] * 5
    predictions = client.classify(created["id"], texts)  # 20 texts: three requests of 8, 8 and 4
    assert len(predictions) == 20
    assert [p["label"] for p in predictions[:4]] == ["lost_or_stolen_card", "exchange_rate", "top_up_failed", "card_arrival"]
    assert predictions[4:8] == predictions[:4]
    assert client.deploy(created["id"], version=1)["version"] == 1
    assert client.archive(created["id"])["status"] == "archived"
    with pytest.raises(Conflict) as archived:
        client.classify(created["id"], ["hello"])
    assert archived.value.error_code == "MODEL_ARCHIVED"
    assert sleeps == []


def test_other_4xx_raise_at_once_with_typed_errors(live_server, server_data):
    sleeps = Sleeps()
    client = Client(live_server.url, server_data["admin_key"], sleep=sleeps)
    with pytest.raises(NotFound) as missing:
        client.model(999_999)
    assert missing.value.status == 404 and missing.value.error_code == "NOT_FOUND"
    with pytest.raises(BadRequest) as bad:
        client.create_model("x", server_data["dataset"].id, [])
    assert bad.value.error_code == "INVALID_FIELD"
    with pytest.raises(Forbidden):
        Client(live_server.url, server_data["annotator_key"], sleep=sleeps).deploy(1)
    with pytest.raises(Unauthorized):
        Client(live_server.url, "lf_not-a-key", sleep=sleeps).models()
    assert sleeps == []


def test_429_waits_retry_after_then_succeeds(live_server, banking77_dir):
    workspace = make_workspace(rate_limit=1)  # one request per minute
    key = make_key(workspace, "admin")

    def time_passes(seconds):
        waits.append(seconds)
        RateLimitCounter.objects.filter(workspace=workspace).delete()  # the window the server named is over

    waits: list[float] = []
    client = Client(live_server.url, key, sleep=time_passes)
    assert client.models() == []
    assert client.models() == []  # rate limited, waited, retried
    assert len(waits) == 1 and 1 <= waits[0] <= 60

    stuck = Sleeps()
    with pytest.raises(RateLimited) as limited:
        Client(live_server.url, key, sleep=stuck).models()
    assert limited.value.status == 429 and limited.value.retry_after >= 1
    assert len(stuck) == 5 and all(wait == limited.value.retry_after or wait >= 1 for wait in stuck)


def test_5xx_backs_off_1_2_then_succeeds(live_server, server_data, settings):
    settings.ROOT_URLCONF = "tests.test_client"
    _flaky_calls["count"] = 0
    sleeps = Sleeps()
    client = Client(live_server.url, server_data["admin_key"], sleep=sleeps)
    assert client.request("GET", "/v2/test-flaky") == {"ok": True, "calls": 3}
    assert sleeps == [1, 2]

    _flaky_calls["count"] = -10  # keeps failing
    sleeps.clear()
    with pytest.raises(ServerError) as failed:
        client.request("GET", "/v2/test-flaky")
    assert failed.value.status == 500 and failed.value.error_code == "INTERNAL_ERROR"
    assert sleeps == [1, 2, 4]


def test_connection_errors_back_off_then_raise():
    sleeps = Sleeps()
    client = Client("http://127.0.0.1:9", "lf_x", timeout=2, sleep=sleeps)  # the discard port: nothing listens
    with pytest.raises(ConnectionFailed):
        client.models()
    assert sleeps == [1, 2, 4]


def test_full_workflow_through_the_client(live_server, banking77_dir, tmp_path):
    """Upload, similarity, describe a model, recommendations, labels, training job: every client method the API serves."""
    workspace = make_workspace()
    client = Client(live_server.url, make_key(workspace, "admin", make_user(workspace, "admin")), sleep=Sleeps())
    rows = banking77_rows(banking77_dir, per_label=8)
    csv_path = tmp_path / "messages.csv"
    csv_path.write_text("text\n" + "".join('"' + text.replace('"', '""') + '"\n' for text, _ in rows))

    dataset = client.upload_dataset("Messages", csv_path)
    assert dataset["status"] in {"processing", "ready"}
    dataset = client.dataset(dataset["id"])  # imports run eagerly in tests
    assert dataset["status"] == "ready" and dataset["record_count"] == len(rows)
    assert [d["id"] for d in client.datasets()] == [dataset["id"]]

    matrix = client.similarity(["lost card", "stolen card", "exchange rate"])
    assert len(matrix) == 3 and matrix[0][1] > matrix[0][2]
    assert len(client.similarity(["a", "b"], queries=["c"])) == 1

    model = client.create_model("Reasons", dataset["id"], LABELS)
    # The first call finds the queue empty and has it computed (eagerly here); the next one draws from it.
    recommended = client.recommendations(model["id"], limit=5) or client.recommendations(model["id"], limit=5)
    assert 0 < len(recommended) <= 5
    label_of = {text: label for text, label in rows}
    answer = client.submit_labels(model["id"], {r["record"]["id"]: label_of[r["record"]["text"]] for r in recommended})
    assert answer["accepted"] == len(recommended)
    job = client.train(model["id"], "active-learning")
    assert client.job(job["id"])["kind"] == "train"
    assert len(client.versions(model["id"])) >= 1
