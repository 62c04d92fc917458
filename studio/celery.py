"""The Celery app of the job workers (evaluations, fine-tunes).

Embedded mode: a broker that needs no server (kombu's filesystem transport, in the data
directory; its SQLAlchemy transport loses messages on a locked SQLite), and `manage.py serve`
starts one job worker beside the web process. Scaled mode: Redis, and `manage.py job_worker`
on any machine. Celery only delivers jobs: each job's row holds its state (studio/jobs.py).
"""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

app = Celery("studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _limit_threads(**kwargs):
    from django.conf import settings

    if settings.JOB_TORCH_THREADS:
        import torch

        torch.set_num_threads(settings.JOB_TORCH_THREADS)
