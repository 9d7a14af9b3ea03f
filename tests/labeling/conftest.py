"""Fixtures for dataset tests: uploads that run their import and embedding (eager Celery) to the end."""
from __future__ import annotations

import io
import os

import pytest

BAD_DIR = os.path.join(os.path.dirname(__file__), "..", "data", "bad")

CUSTOMER_CSV = (
    "text,label,split,channel\n"
    "I want to cancel my credit card,Cancellation,pool,web\n"
    "Please close my account and cancel the subscription,Cancellation,pool,email\n"
    "Why was I charged twice this month?,Billing,pool,web\n"
    "There is an unknown fee on my invoice,Billing,evaluation,app\n"
    "The app crashes every time I log in,,pool,app\n"
    "My password reset link does not work,,pool,email\n"
)


def bad_file(name: str) -> bytes:
    with open(os.path.join(BAD_DIR, name), "rb") as handle:
        return handle.read()


def named_file(content: bytes, filename: str) -> io.BytesIO:
    handle = io.BytesIO(content)
    handle.name = filename
    return handle


@pytest.fixture
def upload(django_capture_on_commit_callbacks):
    """POSTs a file to /v2/datasets and runs what the commit queues (import, then embedding), eagerly."""

    def _upload(api, content: bytes | str, filename: str = "data.csv", name: str = "Customer messages"):
        if isinstance(content, str):
            content = content.encode("utf-8")
        with django_capture_on_commit_callbacks(execute=True):
            return api.upload("/v2/datasets", {"name": name, "file": named_file(content, filename)})

    return _upload


@pytest.fixture
def ready_dataset(lead_api, upload):
    """A small embedded dataset (six customer messages, two labels, a channel column)."""
    from labeling.models import Dataset

    response = upload(lead_api, CUSTOMER_CSV)
    assert response.status_code == 202, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == "ready", dataset.error
    return dataset
