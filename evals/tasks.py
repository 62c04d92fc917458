"""Celery adapters: deliver an evaluation to a job worker; the runner does the work."""

from studio import jobs
from studio.celery import app

from .models import Evaluation, ImportDraft


@app.task(name="evals.run_evaluation", ignore_result=True)
def run_evaluation_task(evaluation_id: int) -> None:
    from .runner import run_evaluation

    run_evaluation(evaluation_id)


def dispatch_evaluation(evaluation_id: int) -> None:
    jobs.dispatch(run_evaluation_task, Evaluation, evaluation_id)


def dispatch_waiting() -> None:
    jobs.dispatch_waiting(run_evaluation_task, Evaluation)


@app.task(name="evals.import_cases", ignore_result=True)
def import_cases_task(draft_id: int) -> None:
    from .importing import import_run

    import_run(draft_id)


def dispatch_import(draft_id: int) -> None:
    jobs.dispatch(import_cases_task, ImportDraft, draft_id)
