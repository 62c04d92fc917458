"""Celery adapters: deliver a fine-tune (or a merge) to a job worker."""

import logging

from django.utils import timezone

from studio.celery import app
from studio.jobs import JobStatus

from .models import FineTuneJob

log = logging.getLogger("finetune")


@app.task(name="finetune.run_fine_tune", ignore_result=True)
def run_fine_tune_task(job_id: int) -> None:
    from .runner import run_fine_tune

    run_fine_tune(job_id)


@app.task(name="finetune.merge_model", ignore_result=True)
def merge_model_task(model_id: int) -> None:
    from .merging import merge_model

    merge_model(model_id)


def dispatch_fine_tune(job_id: int) -> None:
    try:
        run_fine_tune_task.apply_async((job_id,), retry=True)
    except Exception:
        log.warning("could not queue fine-tune %s; it is retried when looked at", job_id, exc_info=True)
        return
    FineTuneJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())


def dispatch_waiting() -> None:
    for job_id in FineTuneJob.objects.filter(status=JobStatus.QUEUED, dispatched_at=None).values_list("pk", flat=True):
        dispatch_fine_tune(job_id)
