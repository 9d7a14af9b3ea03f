"""A queue recompute that meets a lease being taken keeps the lease (PostgreSQL, READ COMMITTED).

The recompute deletes the queue rows nobody holds. If an annotator is leasing one of them at that moment, the
DELETE waits for the row; when the lease commits, the row must survive, or the record goes back into the
queue and a second annotator is handed it (the 20-annotator test once saw exactly that). This pins the order
of events: the lease's transaction holds its row until the recompute's DELETE is seen waiting on it.
"""
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from labeling.models import Recommendation
from labeling.queue import lease_duration, queue_recompute
from tests.factories import make_user, make_workspace
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def _someone_waits_for_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def test_a_lease_committed_while_the_recompute_deletes_stays_with_its_annotator():
    assert connection.vendor == "postgresql"
    workspace = make_workspace()
    model, _ = random_setup(workspace, n=60)
    queue_recompute(model=model)
    annotator = make_user(workspace, "annotator")
    head = Recommendation.objects.filter(model=model).order_by("position").first()
    locked, outcome = threading.Event(), {}

    def lease_slowly():
        try:
            with transaction.atomic():
                row = Recommendation.objects.select_for_update(skip_locked=True).get(pk=head.pk)
                row.leased_to, row.lease_expires_at = annotator, timezone.now() + lease_duration()
                row.save(update_fields=["leased_to", "lease_expires_at"])
                locked.set()
                deadline = time.time() + 20
                while not _someone_waits_for_a_lock():  # the recompute's DELETE, waiting for this row
                    assert time.time() < deadline, "the recompute never waited for the leased row"
                    time.sleep(0.02)
            outcome["committed"] = True
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = error
        finally:
            connection.close()

    annotator_thread = threading.Thread(target=lease_slowly)
    annotator_thread.start()
    assert locked.wait(10)
    queue_recompute(model=model)  # blocks in its DELETE until the lease commits
    annotator_thread.join(30)
    assert outcome.get("committed"), outcome

    rows = list(Recommendation.objects.filter(model=model, record_id=head.record_id))
    assert len(rows) == 1 and rows[0].pk == head.pk, "the leased row was deleted and its record queued again"
    assert rows[0].leased_to_id == annotator.id and rows[0].lease_expires_at > timezone.now()
