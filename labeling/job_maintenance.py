"""Job liveness: a running job's heartbeat, the claim that starts a job, and the stale-job sweeper.

Why: tasks are acknowledged late, so a killed worker does not lose its task, but with Redis the
broker hands an unacknowledged task out again only after its visibility timeout (an hour), and a
Redis restart without persistence loses queued tasks altogether. The `Job` row is the durable record
of the work (the task message only says "run job N"), so recovery works from the rows:

- **Claim.** A task starts its job with one conditional write (`job_claim`, or the same rule under the
  row lock in `training_services._start` and `queue_tasks.recompute_queue`): a queued job, or a running
  one whose heartbeat stopped, becomes `running` and counts an attempt. A second delivery of a job
  whose worker is alive (heartbeat fresh) does nothing, so a job never runs twice at once.
- **Heartbeat.** Inside a worker, a thread refreshes `heartbeat_at` every `JOB_HEARTBEAT_SECONDS`
  while the task runs (its own database connection, so it also beats while an import holds its
  transaction open). Eager and direct calls (tests, the request thread) neither stamp nor beat.
- **Sweeper** (`jobs_sweep`, beat every `JOB_SWEEP_SECONDS`): a running job whose heartbeat is older
  than `JOB_STALE_SECONDS` lost its worker: it is queued and sent again, or, after
  `JOB_MAX_ATTEMPTS` starts, failed with the reason (a job that kills its worker every time must not
  loop). A queued job not sent for `JOB_RESEND_SECONDS` is sent again (the broker may have lost it;
  a duplicate message is harmless: the claim refuses it). A running job without a heartbeat (started
  by an eager call, or before heartbeats existed) counts as alive for the task time limit.

Re-running is safe because every job is idempotent: an import is one transaction (a killed one left
nothing), an embed chunk is rewritten whole by rename, a train job never writes a second version.
Clocks: the timestamps come from the processes' clocks, so machines running workers keep them in
sync (NTP); the stale timeout is minutes by default, far above any skew.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import Job, JobKind, JobStatus

logger = logging.getLogger("labelf.jobs")

FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def heartbeat_interval() -> float:
    return float(settings.LABELF["JOB_HEARTBEAT_SECONDS"])


def stale_after() -> timedelta:
    return timedelta(seconds=settings.LABELF["JOB_STALE_SECONDS"])


def resend_after() -> timedelta:
    return timedelta(seconds=settings.LABELF["JOB_RESEND_SECONDS"])


def max_attempts() -> int:
    return int(settings.LABELF["JOB_MAX_ATTEMPTS"])


# --- liveness ------------------------------------------------------------------------------------------

def heartbeat_is_fresh(job: Job, now: datetime | None = None) -> bool:
    """A worker is running this job right now (its heartbeat is recent)."""
    now = now or timezone.now()
    return job.heartbeat_at is not None and job.heartbeat_at >= now - stale_after()


def job_is_alive(job: Job, now: datetime | None = None) -> bool:
    """A running job whose runner is (presumably) still at work."""
    now = now or timezone.now()
    if job.heartbeat_at is not None:
        return heartbeat_is_fresh(job, now)
    # No heartbeat (an eager run, or a job started before heartbeats): alive until the hard time limit.
    started = job.started_at or job.created_at
    return started is not None and started >= now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)


def _stale_running(now: datetime) -> Q:
    limit = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    return Q(status=JobStatus.RUNNING) & (
        Q(heartbeat_at__lt=now - stale_after())
        | Q(heartbeat_at__isnull=True, started_at__lt=limit)
        | Q(heartbeat_at__isnull=True, started_at__isnull=True, created_at__lt=limit))


# --- the heartbeat ---------------------------------------------------------------------------------------

class _Heartbeat:
    """Refreshes one job's `heartbeat_at` from a thread until stopped."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def beat(self) -> None:
        Job.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"job-{self.job_id}-heartbeat", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopped.wait(heartbeat_interval()):
                try:
                    self.beat()
                except Exception as exc:  # a database blip (or SQLite's write lock held by the job): beat again later
                    logger.warning("heartbeat of job %s failed: %s", self.job_id, exc)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


_current: contextvars.ContextVar[_Heartbeat | None] = contextvars.ContextVar("labelf_job_heartbeat", default=None)


@contextmanager
def job_heartbeat(job_id: int, *, enabled: bool):
    """Around a task's body: once the task claims `job_id` (`job_claimed`), its heartbeat runs until the body ends.

    `enabled` is False for eager and direct calls: nobody can kill them apart from their caller.
    """
    heartbeat = _Heartbeat(job_id) if enabled else None
    token = _current.set(heartbeat)
    try:
        yield
    finally:
        _current.reset(token)
        if heartbeat is not None:
            heartbeat.stop()


def heartbeat_stamp(job_id: int, now: datetime | None = None) -> datetime | None:
    """What a claim writes into `heartbeat_at`: now inside a worker's heartbeat for this job, else None."""
    heartbeat = _current.get()
    if heartbeat is None or heartbeat.job_id != job_id:
        return None
    return now or timezone.now()


def job_claimed(job_id: int) -> None:
    """The task now runs `job_id`: its heartbeat starts (inside a worker)."""
    heartbeat = _current.get()
    if heartbeat is not None and heartbeat.job_id == job_id:
        heartbeat.start()


def job_claim(*, job_id: int, now: datetime | None = None) -> bool:
    """Starts a queued job, or takes over a running one whose heartbeat stopped; False if another runs it or it is done."""
    now = now or timezone.now()
    alive_elsewhere = Q(status=JobStatus.RUNNING, heartbeat_at__gte=now - stale_after())
    claimed = (Job.objects.filter(pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exclude(alive_elsewhere)
               .update(status=JobStatus.RUNNING, started_at=now, attempts=F("attempts") + 1,
                       heartbeat_at=heartbeat_stamp(job_id, now)))
    if claimed:
        job_claimed(job_id)
    return bool(claimed)


def job_waiting(job_id: int) -> None:
    """A queued job whose task is alive and waiting (rescheduled itself): not lost, so not re-sent."""
    Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(heartbeat_at=timezone.now())


# --- sending and failing, per kind -------------------------------------------------------------------

def job_send(job: Job) -> None:
    """Sends the task(s) that run `job` (raises if the broker is unreachable)."""
    if job.kind == JobKind.IMPORT:
        from .tasks import dataset_import

        dataset_import.delay(job.id)
    elif job.kind == JobKind.EMBED:
        from .services import embed_job_chunks
        from .tasks import dataset_embed_chunk

        done = set(job.result.get("chunks_done", []))
        for chunk_index in embed_job_chunks(job):
            if chunk_index not in done:
                dataset_embed_chunk.delay(job.id, chunk_index)
    elif job.kind == JobKind.TRAIN:
        from models_app.training_tasks import train_model

        train_model.delay(job.id)
    elif job.kind == JobKind.RECOMMEND:
        from .queue_tasks import recompute_queue

        recompute_queue.delay(job.id)
    else:
        raise ValueError(f"unknown job kind {job.kind!r}")


def _fail(job: Job, reason: str) -> None:
    """Fails the job the way its own code fails it (the dataset or model follows)."""
    if job.kind == JobKind.IMPORT:
        from .services import _import_failed

        _import_failed(job_id=job.id, message=reason)
    elif job.kind == JobKind.EMBED:
        from .services import _embed_failed

        _embed_failed(job_id=job.id, message=reason)
    elif job.kind == JobKind.TRAIN:
        from models_app.training_services import _finish_failed

        _finish_failed(job, reason)
    else:
        Job.objects.filter(pk=job.pk).exclude(status__in=FINISHED).update(
            status=JobStatus.FAILED, error=reason, finished_at=timezone.now())


# --- the sweeper ----------------------------------------------------------------------------------------

def jobs_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Re-queues running jobs whose worker died (or fails them after too many starts) and re-sends lost queued jobs."""
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "resent": 0, "send_errors": 0}
    for job in Job.objects.filter(_stale_running(now)).order_by("id"):
        if job.attempts >= max_attempts():
            logger.warning("job %s (%s) lost its worker %s times: failing it", job.id, job.kind, job.attempts)
            _fail(job, f"The worker running this job stopped {job.attempts} times (killed or out of memory); "
                       "it was not started again. Request it again, or contact an admin if it keeps failing")
            counts["failed"] += 1
            continue
        # Conditional on what we read: a heartbeat that arrived meanwhile (a slow but live worker) wins.
        with transaction.atomic():
            requeued = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at).update(
                status=JobStatus.QUEUED, heartbeat_at=now)
        if requeued:
            logger.warning("job %s (%s) lost its worker (attempt %s): queued again", job.id, job.kind, job.attempts)
            counts["requeued"] += 1
            counts["send_errors"] += not _send_logged(job)
    lost = Q(status=JobStatus.QUEUED) & (Q(heartbeat_at__lt=now - resend_after())
                                         | Q(heartbeat_at__isnull=True, created_at__lt=now - resend_after()))
    for job in Job.objects.filter(lost).order_by("id"):
        if Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED, heartbeat_at=job.heartbeat_at).update(heartbeat_at=now):
            counts["resent"] += 1
            counts["send_errors"] += not _send_logged(job)
    return counts


def _send_logged(job: Job) -> bool:
    try:
        job_send(job)
    except Exception:  # the broker is still down: the next sweep tries again
        logger.warning("could not send job %s (%s); the next sweep retries", job.id, job.kind, exc_info=True)
        return False
    return True
