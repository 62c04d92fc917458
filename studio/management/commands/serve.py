"""`make run`: migrate, make sure an admin exists, then serve the studio with daphne."""

import asyncio
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import studio

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections


log = logging.getLogger("studio")


def _die_with_parent():
    # Linux: the child gets SIGTERM when `serve` dies, even by SIGKILL.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedJobWorker:
    """Embedded mode: a `job_worker` child process of `serve`, restarted if it dies."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._keep_running, name="job-worker-supervisor", daemon=True).start()

    def _keep_running(self) -> None:
        package_parent = str(Path(studio.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        delay = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.process = subprocess.Popen([sys.executable, "-m", "studio.cli", "manage", "job_worker"], env=env,
                                            preexec_fn=_die_with_parent)
            code = self.process.wait()
            if self.stopping.is_set():
                return
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.warning("the job worker exited (code %s); starting it again in %.0f s", code, delay)
            self.stopping.wait(delay)

    def stop(self) -> None:
        self.stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Command(BaseCommand):
    help = "Set up the database and serve the studio (pages, WebSockets and, in embedded mode, the model worker)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.STUDIO_HOST)
        parser.add_argument("--port", type=int, default=settings.STUDIO_PORT)

    def handle(self, *args, host, port, **options):
        admin_password = settings.STUDIO_ADMIN_PASSWORD
        if admin_password is not None and not admin_password.strip():
            raise CommandError("STUDIO_ADMIN_PASSWORD is set but empty: set a password, or unset it to have one "
                               "generated and printed on first start.")
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin(admin_password)
        # Back to the pool (scaled mode): this thread serves no request, so it would hold one for good.
        connections.close_all()
        # Importing daphne's CLI installs Twisted's asyncio reactor, which the worker shares.
        from daphne.cli import CommandLineInterface  # noqa: F401
        from twisted.internet import reactor

        from studio.asgi import start_background_work
        from studio.server import serve

        # The embedded model worker loads the model as soon as the server runs, not on the first
        # page view (without one, the sweeper starts).
        reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(start_background_work))
        if settings.LLM_EMBEDDED_WORKER:
            mode = f"embedded model worker ({settings.LLM_MODEL}); first start converts the model (~30 s)"
        else:
            mode = "no embedded worker: run `python manage.py llm_worker` beside it"
        self.stdout.write(self.style.SUCCESS(f"Chat & Prompt Studio: http://{host}:{port}/  ({mode})"))
        job_worker = EmbeddedJobWorker() if settings.JOB_WORKER_EMBEDDED else None
        if job_worker:
            job_worker.start()
        try:
            serve(host=host, port=port, application=settings.ASGI_APPLICATION.replace(".application", ":application"),
                  max_frame_bytes=settings.STUDIO_MAX_FRAME_BYTES)
        finally:
            if job_worker:
                job_worker.stop()

    def ensure_admin(self, given_password: str | None):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = given_password or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.WARNING("Created the first admin account (shown once):"))
        self.stdout.write(f"    user name: admin\n    password:  {'(from STUDIO_ADMIN_PASSWORD)' if given_password else password}")
