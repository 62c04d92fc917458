"""Celery adapters: a fine-tune, an embedder fine-tune or a merge delivered to a job worker of the `training` lane
(`finetune.*` is routed there by name, studio/job_lanes.py), which runs one at a time. Jobs are
sent by task name (studio.jobs.dispatch, celery's send_task), so nothing imports this."""

from studio.celery import app

from .embedder_runner import run_embedder_fine_tune
from .merging import merge_model
from .runner import run_fine_tune


@app.task(name="finetune.run_fine_tune", ignore_result=True)
def run_fine_tune_task(job_id: int) -> None:
    run_fine_tune(job_id)


@app.task(name="finetune.merge_model", ignore_result=True)
def merge_model_task(model_id: int) -> None:
    merge_model(model_id)


@app.task(name="finetune.run_embedder_fine_tune", ignore_result=True)
def run_embedder_fine_tune_task(job_id: int) -> None:
    run_embedder_fine_tune(job_id)
