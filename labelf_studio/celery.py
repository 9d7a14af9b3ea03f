import logging
import os

from celery import Celery, Task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labelf_studio.settings.dev")

logger = logging.getLogger("labelf.jobs")

app = Celery("labelf_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _ensure_filesystem_broker_folders() -> None:
    # Celery's filesystem transport needs its folders to exist before anything is sent.
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        from pathlib import Path

        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)


@app.on_after_configure.connect
def _on_configure(sender, **kwargs):
    _ensure_filesystem_broker_folders()


def runs_in_worker(task: Task) -> bool:
    """True when a worker runs the task (not an eager or direct call, which its caller owns)."""
    return not (task.request.is_eager or task.request.called_directly)


class FollowUpTask(Task):
    """A task sent as follow-up work of a request or another task, after that work's commit.

    If the broker is unreachable when it is sent, the sending is logged and skipped instead of failing
    what asked for it (a label, a lease, a new version) after its commit. A job stays `queued` and the
    stale-job sweeper sends it again once the broker is back (the `Job` row is the durable record, the
    message only a nudge); a version's summary (model page only) is then missing.
    """

    def apply_async(self, args=None, kwargs=None, **options):
        from kombu.exceptions import OperationalError

        if self.app.conf.task_always_eager:  # runs inline: its own errors are the caller's
            return super().apply_async(args=args, kwargs=kwargs, **options)
        try:
            return super().apply_async(args=args, kwargs=kwargs, **options)
        except OperationalError:  # kombu's "could not publish" after its own retries
            logger.warning("broker unreachable: %s%s not sent", self.name, tuple(args or ()), exc_info=True)
            return None
