"""`manage.py job_worker`: the Celery workers of the studio's long jobs, by lane (studio/job_lanes.py):
`knowledge` (document ingestion), `evaluations` (evaluations, imports of cases), `training`
(fine-tunes, merges).

Without `--queues` (`make jobs`): one worker process per word of JOB_WORKER_LANES (by default one
per lane), each started again if it dies, as `manage.py serve` does in embedded mode. With
`--queues knowledge,evaluations`: this process is one worker taking those lanes in turn. Each
worker process takes one job at a time (`--pool solo`): a training run uses the whole machine (or
GPU), so one per training lane.
"""

import os
import signal
import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from studio import celery, sweeping
from studio.celery import app
from studio.job_lanes import LaneError, LaneWorkers, lanes_of, queues_of, worker_groups


class Command(BaseCommand):
    help = "Run the job workers (document ingestion, evaluations, fine-tunes) on the studio's job queues."

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument(
            "--queues",
            default=None,
            help="the lanes this process takes, in turn: knowledge (document ingestion), evaluations "
            "(evaluations, imports), training (fine-tunes, merges), or jobs (evaluations and "
            "training, the name before lanes); default: a process per word of JOB_WORKER_LANES",
        )

    def handle(self, *args, loglevel, queues, **options):
        if queues is None:
            try:
                groups = worker_groups()
            except LaneError as exc:
                raise CommandError(str(exc)) from None
            self.run_lanes(groups)
            return
        try:
            lanes = lanes_of(queues)
        except LaneError as exc:
            raise CommandError(f"--queues: {exc}") from None
        # A job worker sweeps too (studio.sweeping): with no model worker up, replies and jobs that
        # lapse are still failed with the reason.
        sweeping.start_thread(max(settings.LLM_LEASE_SECONDS / 3, 0.2))
        queues = queues_of(lanes)
        celery.consume(queues)
        app.worker_main(
            [
                "worker",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "--loglevel",
                loglevel,
                "--queues",
                ",".join(queues),
                "--hostname",
                f"jobs-{'-'.join(lanes)}-{os.getpid()}@{socket.gethostname()}",
                "--without-gossip",
                "--without-mingle",
            ]
        )

    def run_lanes(self, groups: list[list[str]]) -> None:
        workers = LaneWorkers(groups)
        self.stdout.write(f"job workers: {'; '.join(', '.join(group) for group in groups)}")
        # SIGTERM (a service manager stopping it) stops the workers as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: workers.stopping.set())
        workers.start()
        try:
            while not workers.stopping.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            workers.stop()
