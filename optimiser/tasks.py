"""Celery adapter: an optimisation delivered to a job worker of the `evaluations` lane
(`optimiser.*` is routed there by name, studio/settings.py CELERY_TASK_ROUTES): its candidates are
answered by the model workers' background lane, as an evaluation's cases are. Sent by task name
(studio.jobs.dispatch), so nothing imports this."""

from studio.celery import app


@app.task(name="optimiser.run_optimisation", ignore_result=True)
def run_optimisation_task(optimisation_id: int) -> None:
    from .runner import run_optimisation  # noqa: PLC0415 (a job worker imports the runner only when it runs one)

    run_optimisation(optimisation_id)
