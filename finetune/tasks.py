"""Celery adapters: deliver a fine-tune (or a merge) to a job worker."""

from studio import jobs
from studio.celery import app

from .models import FineTuneJob


@app.task(name="finetune.run_fine_tune", ignore_result=True)
def run_fine_tune_task(job_id: int) -> None:
    from .runner import run_fine_tune

    run_fine_tune(job_id)


@app.task(name="finetune.merge_model", ignore_result=True)
def merge_model_task(model_id: int) -> None:
    from .merging import merge_model

    merge_model(model_id)


def dispatch_fine_tune(job_id: int) -> None:
    jobs.dispatch(run_fine_tune_task, FineTuneJob, job_id)


def dispatch_waiting() -> None:
    jobs.dispatch_waiting(run_fine_tune_task, FineTuneJob)
