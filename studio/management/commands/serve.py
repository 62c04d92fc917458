"""`make run`: migrate, make sure an admin exists, then serve the studio with daphne."""

import asyncio
import secrets

# Importing daphne's CLI installs Twisted's asyncio reactor, which the worker shares (before
# twisted.internet.reactor is read; the daphne app has installed it already when Django is set up).
from daphne.cli import CommandLineInterface  # noqa: F401
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from twisted.internet import reactor

from studio.asgi import start_background_work
from studio.job_lanes import LaneError, LaneWorkers, worker_groups
from studio.server import serve


class Command(BaseCommand):
    help = "Set up the database and serve the studio (pages, WebSockets and, in embedded mode, the model worker)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.STUDIO_HOST)
        parser.add_argument("--port", type=int, default=settings.STUDIO_PORT)

    def handle(self, *args, host, port, **options):
        admin_password = settings.STUDIO_ADMIN_PASSWORD
        if admin_password is not None and not admin_password.strip():
            raise CommandError(
                "STUDIO_ADMIN_PASSWORD is set but empty: set a password, or unset it to have one "
                "generated and printed on first start."
            )
        # A JOB_WORKER_LANES that names no lane is refused before anything starts.
        job_worker_groups = self.job_worker_groups() if settings.JOB_WORKER_EMBEDDED else None
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin(admin_password)
        # Back to the pool (scaled mode): this thread serves no request, so it would hold one for good.
        connections.close_all()
        # The embedded model worker loads the model as soon as the server runs, not on the first
        # page view (without one, the sweeper starts).
        reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(start_background_work))
        if settings.LLM_EMBEDDED_WORKER:
            mode = f"embedded model worker ({settings.LLM_MODEL}); first start converts the model (~30 s)"
        else:
            mode = "no embedded worker: run `python manage.py llm_worker` beside it"
        self.stdout.write(self.style.SUCCESS(f"Chat & Prompt Studio: http://{host}:{port}/  ({mode})"))
        # Embedded mode: a job worker process per lane (studio/job_lanes.py), restarted if it dies.
        job_workers = LaneWorkers(job_worker_groups) if job_worker_groups else None
        if job_workers:
            job_workers.start()
        try:
            serve(
                host=host,
                port=port,
                application=settings.ASGI_APPLICATION.replace(".application", ":application"),
                max_frame_bytes=settings.STUDIO_MAX_FRAME_BYTES,
            )
        finally:
            if job_workers:
                job_workers.stop()

    @staticmethod
    def job_worker_groups() -> list[list[str]]:
        try:
            return worker_groups()
        except LaneError as exc:
            raise CommandError(str(exc)) from None

    def ensure_admin(self, given_password: str | None):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = given_password or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.WARNING("Created the first admin account (shown once):"))
        self.stdout.write(
            f"    user name: admin\n    password:  {'(from STUDIO_ADMIN_PASSWORD)' if given_password else password}"
        )
