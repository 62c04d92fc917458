"""Long jobs (document ingestion, evaluations, fine-tunes): one way to keep their state and show
their progress.

The job's own database row is the truth: status, progress, the cancel flag and a heartbeat.
Celery only delivers the job to a worker of its lane (studio/job_lanes.py). A worker killed mid-job never gets its task back,
so a running job whose heartbeat stopped is failed by the sweeper (studio.sweeping), and what
it stored so far stays. Pages show progress from the row (`studio/templates/_job_progress.html`),
so closing the browser loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from .celery import app


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # `error` says why
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
WORKER_LOST = (
    "The job worker stopped while running this job (it was killed or ran out of memory). "
    "What it finished is kept; start the job again for the rest."
)


class JobRecord(models.Model):
    TASK = ""  # the Celery task that runs it, by name ("evals.run_evaluation")

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=300, blank=True)  # what it is doing now ("paused: chat comes first")
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)  # host:pid of the worker running it
    dispatched_at = models.DateTimeField(null=True, blank=True)  # handed to the job queue
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else (100 if not self.active else 0)

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    @property
    def remaining_s(self) -> float | None:
        """A straight-line estimate from the pace so far."""
        if self.status != JobStatus.RUNNING or not self.done or not self.elapsed_s:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)

    def progress_dict(self) -> dict:
        return {
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "note": self.note,
            "error": self.error,
            "elapsed_s": _round(self.elapsed_s),
            "remaining_s": _round(self.remaining_s),
        }


def _round(value):
    return None if value is None else round(value, 1)


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_claim(job: JobRecord) -> bool:
    """queued → running, atomically: a job delivered twice runs once."""
    now = timezone.now()
    claimed = (
        type(job)
        .objects.filter(pk=job.pk, status=JobStatus.QUEUED)
        .update(status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, worker=this_worker())
    )
    job.refresh_from_db()
    return claimed == 1


def job_progress(job: JobRecord, *, done: int | None = None, note: str | None = None, **fields) -> bool:
    """Store progress and beat the heart; True when someone asked to cancel."""
    changes = {"heartbeat_at": timezone.now(), **fields}
    if done is not None:
        changes["done"] = done
    if note is not None:
        changes["note"] = note[:300]
    type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(**changes)
    return type(job).objects.filter(pk=job.pk, cancel_requested=True).exists()


def job_end(job: JobRecord, status: str, *, error: str = "", **fields) -> None:
    type(job).objects.filter(pk=job.pk, status__in=ACTIVE).update(
        status=status, error=error, note="", finished_at=timezone.now(), **fields
    )
    job.refresh_from_db()


def job_cancel(job: JobRecord) -> None:
    """A queued job is cancelled at once; a running one at its next step."""
    type(job).objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True, note="cancelling…")
    job.refresh_from_db()


def fail_jobs_of_lost_workers(model: type[JobRecord]) -> list[int]:
    """Running jobs whose worker stopped beating: failed, with what they stored kept. Returns their ids."""
    stale = timezone.now() - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    lost = list(model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale).values_list("pk", flat=True))
    failed = []
    for job_id in lost:  # conditional: a job that beat its heart meanwhile stays
        if model.objects.filter(pk=job_id, status=JobStatus.RUNNING, heartbeat_at__lt=stale).update(
            status=JobStatus.FAILED, error=WORKER_LOST, note="", finished_at=timezone.now()
        ):
            failed.append(job_id)
    return failed


log = logging.getLogger("studio")


def dispatch(model: type[JobRecord], job_id: int) -> None:
    """Hand a queued job to the job queue (Celery), by the name of its task (`model.TASK`: no
    app imports its Celery tasks to send one; the name routes it to its lane's queue). When the broker is unreachable (Redis restarting)
    the job stays queued and undispatched, and the sweeper (`jobs_sweep`) sends it again."""
    try:
        app.send_task(model.TASK, (job_id,), retry=True)
    except Exception:
        log.warning("could not queue %s %s; the sweeper tries again", model.TASK, job_id, exc_info=True)
        return
    model.objects.filter(pk=job_id).update(dispatched_at=timezone.now())


def jobs_sweep(model: type[JobRecord]) -> list[int]:
    """The sweeper's part for one kind of job: queued jobs the job queue never got are sent again,
    running jobs whose worker died are failed. Returns the ids of the jobs it failed."""
    for job_id in model.objects.filter(status=JobStatus.QUEUED, dispatched_at=None).values_list("pk", flat=True):
        dispatch(model, job_id)
    return fail_jobs_of_lost_workers(model)
