"""`manage.py job_worker`: a Celery worker for the studio's long jobs (evaluations, fine-tunes, imports,
document ingestion).

One job at a time (`--pool solo`): a job uses the whole machine (or GPU). Start one per
machine in scaled mode; `manage.py serve` starts one itself in embedded mode.
"""

import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from studio import sweeping
from studio.celery import app


class Command(BaseCommand):
    help = "Run a job worker (evaluations, fine-tunes) on the studio's job queue."

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument("--queues", default="jobs,knowledge",
                            help="which job queues it takes from, in turn: jobs (evaluations, fine-tunes, imports), "
                                 "knowledge (document ingestion); default both")

    def handle(self, *args, loglevel, queues, **options):
        names = [name.strip() for name in queues.split(",") if name.strip()]
        unknown = [name for name in names if name not in settings.JOB_QUEUES]
        if unknown or not names:
            raise CommandError(f"--queues: {', '.join(unknown) or '(none)'} is not a job queue; choose from "
                               f"{', '.join(settings.JOB_QUEUES)}")
        # A job worker sweeps too (studio.sweeping): with no model worker up, replies and jobs that
        # lapse are still failed with the reason.
        sweeping.start_thread(max(settings.LLM_LEASE_SECONDS / 3, 0.2))
        app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--loglevel", loglevel,
                         "--queues", ",".join(settings.JOB_QUEUES[name] for name in names), "--hostname", f"jobs-{socket.gethostname()}@%h",
                         "--without-gossip", "--without-mingle"])
