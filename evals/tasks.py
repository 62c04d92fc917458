"""Celery adapters: deliver an evaluation to a job worker; the runner does the work."""

import logging

from django.utils import timezone

from studio.celery import app
from studio.jobs import JobStatus

from .models import Evaluation

log = logging.getLogger("evals")


@app.task(name="evals.run_evaluation", ignore_result=True)
def run_evaluation_task(evaluation_id: int) -> None:
    from .runner import run_evaluation

    run_evaluation(evaluation_id)


def dispatch_evaluation(evaluation_id: int) -> None:
    """Hand a queued evaluation to the job queue. When the broker is unreachable (Redis
    restarting) it stays queued and undispatched; `dispatch_waiting` tries again."""
    try:
        run_evaluation_task.apply_async((evaluation_id,), retry=True)
    except Exception:
        log.warning("could not queue evaluation %s; it is retried when looked at", evaluation_id, exc_info=True)
        return
    Evaluation.objects.filter(pk=evaluation_id).update(dispatched_at=timezone.now())


def dispatch_waiting() -> None:
    for evaluation_id in Evaluation.objects.filter(status=JobStatus.QUEUED, dispatched_at=None).values_list(
            "pk", flat=True):
        dispatch_evaluation(evaluation_id)
