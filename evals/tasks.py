"""Celery adapters: an evaluation, an import or cases to embed (examples chosen per input) delivered to a job worker of the `evaluations` lane
(`evals.*` is routed there by name, studio/job_lanes.py); the runner and the importer do the work.
Jobs are sent by task name (studio.jobs.dispatch), so nothing imports this."""

from studio.celery import app

from .importing import import_run
from .nearest_examples import embed_cases
from .runner import run_evaluation


@app.task(name="evals.run_evaluation", ignore_result=True)
def run_evaluation_task(evaluation_id: int) -> None:
    run_evaluation(evaluation_id)


@app.task(name="evals.import_cases", ignore_result=True)
def import_cases_task(draft_id: int) -> None:
    import_run(draft_id)


@app.task(name="evals.embed_cases", ignore_result=True)
def embed_cases_task(case_ids: list[int]) -> None:
    embed_cases(case_ids)
