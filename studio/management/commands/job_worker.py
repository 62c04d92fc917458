"""`manage.py job_worker`: a Celery worker for the studio's long jobs (evaluations, fine-tunes).

One job at a time (`--pool solo`): a job uses the whole machine (or GPU). Start one per
machine in scaled mode; `manage.py serve` starts one itself in embedded mode.
"""

import socket

from django.conf import settings
from django.core.management.base import BaseCommand

from studio import sweeping
from studio.celery import app


class Command(BaseCommand):
    help = "Run a job worker (evaluations, fine-tunes) on the studio's job queue."

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, loglevel, **options):
        # A job worker sweeps too (studio.sweeping): with no model worker up, replies and jobs that
        # lapse are still failed with the reason.
        sweeping.start_thread(max(settings.LLM_LEASE_SECONDS / 3, 0.2))
        app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--loglevel", loglevel,
                         "--queues", app.conf.task_default_queue, "--hostname", f"jobs-{socket.gethostname()}@%h",
                         "--without-gossip", "--without-mingle"])
