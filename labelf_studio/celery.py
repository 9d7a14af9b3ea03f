import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labelf_studio.settings.dev")

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
