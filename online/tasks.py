"""Celery adapter: a sampled reply delivered to a job worker of the `evaluations` lane (`online.*`
is routed there by name, studio/settings.py CELERY_TASK_ROUTES); its judge is answered by the model
workers' background lane, as an evaluation's cases are. Sent by task name (studio.jobs.dispatch),
so nothing imports this."""

from studio.celery import app


@app.task(name="online.score_sample", ignore_result=True)
def score_sample_task(sample_id: int) -> None:
    from .scoring import score_sample  # noqa: PLC0415 (a job worker imports the scorers only when it scores)

    score_sample(sample_id)
