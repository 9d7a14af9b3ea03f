"""Every periodic task can be scheduled and every task module is registered with the worker."""
import pytest
from django.conf import settings

from labelf_studio.celery import app


@pytest.mark.django_db
def test_every_beat_entry_can_be_sent():
    app.loader.import_default_modules()
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        task = app.tasks[entry["task"]]
        # apply_async validates the task's options (e.g. soft limit <= hard limit) as beat would.
        task.apply_async()


def test_the_worker_knows_every_task_module():
    app.loader.import_default_modules()
    registered = set(app.tasks)
    for expected in ("labeling.dataset_import", "labeling.dataset_embed_chunk",
                     "labeling.queue_tasks.recompute_queue", "models_app.training_tasks.train_model"):
        assert expected in registered, expected
