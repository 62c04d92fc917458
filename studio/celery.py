"""The Celery app of the job workers (document ingestion, evaluations, fine-tunes).

Embedded mode: a broker that needs no server (kombu's filesystem transport, in the data
directory; its SQLAlchemy transport loses messages on a locked SQLite), and `manage.py serve`
starts a job worker per lane beside the web process (studio/job_lanes.py). Scaled mode: Redis,
and `manage.py job_worker` on any machine. Celery only delivers jobs: each job's row holds its
state (studio/jobs.py). A task's lane is its queue, routed by its name (settings.CELERY_TASK_ROUTES).
"""

import logging
import os

from celery import Celery, Task
from celery.signals import worker_process_init
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

log = logging.getLogger("studio")

# The queues this process's worker consumes (set by `manage.py job_worker`); empty elsewhere.
consumed_queues: frozenset[str] = frozenset()


class LaneTask(Task):
    """A job's task runs on a worker of its lane. A message that reached a worker of another lane
    (left in the queue before lanes by an older studio) is sent on to its lane by name, not run
    here, so a fine-tune never runs in the evaluations lane. The job's row is the truth, so a
    message sent twice still runs the job once (studio.jobs.job_claim)."""

    def __call__(self, *args, **kwargs):
        if consumed_queues and not self.request.called_directly:
            lane_queue = self.app.amqp.router.route({}, self.name)["queue"].name
            if lane_queue not in consumed_queues:
                log.info("%s came on a queue of another lane: sent on to %s", self.name, lane_queue)
                self.app.send_task(self.name, args, kwargs, retry=True)
                return None
        return super().__call__(*args, **kwargs)


app = Celery("studio", task_cls=LaneTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def consume(queues: list[str]) -> None:
    """This process is the worker of these queues (before `app.worker_main`)."""
    global consumed_queues
    consumed_queues = frozenset(queues)


@worker_process_init.connect
def _limit_threads(**kwargs):
    if settings.JOB_TORCH_THREADS:
        import torch  # noqa: PLC0415 - only in a job worker's process: every process that sends a job reads this module

        torch.set_num_threads(settings.JOB_TORCH_THREADS)
