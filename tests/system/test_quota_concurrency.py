"""The monthly quota under concurrent requests from several keys of one workspace, on PostgreSQL: the
single row-locking statement of `usage_reserve_texts` (without its FOR NO KEY UPDATE the run went
over the quota: 105-114 texts of 100)."""
import pytest
from django.db import connection

from tests.models_app.test_inference_queries import reserve_from_several_keys_at_once


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_on_postgresql_never_exceed_the_quota():
    assert connection.vendor == "postgresql"
    reserve_from_several_keys_at_once()
