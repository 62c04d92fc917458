"""`make run`: migrate, make sure an admin exists, then serve the studio with daphne."""

import asyncio
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Set up the database and serve the studio (pages, WebSockets and, in embedded mode, the model worker)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "8000")))

    def handle(self, *args, host, port, **options):
        admin_password = os.environ.get("STUDIO_ADMIN_PASSWORD")
        if admin_password is not None and not admin_password.strip():
            raise CommandError("STUDIO_ADMIN_PASSWORD is set but empty: set a password, or unset it to have one "
                               "generated and printed on first start.")
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin(admin_password)
        # Importing daphne's CLI installs Twisted's asyncio reactor, which the worker shares.
        from daphne.cli import CommandLineInterface  # noqa: F401
        from twisted.internet import reactor

        from chat.worker import ensure_embedded_worker
        from studio.server import serve

        if settings.LLM_EMBEDDED_WORKER:
            # Load the model as soon as the server runs, not on the first page view.
            reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(ensure_embedded_worker))
            mode = f"embedded model worker ({settings.LLM_MODEL}); first start converts the model (~30 s)"
        else:
            mode = "no embedded worker: run `python manage.py llm_worker` beside it"
        self.stdout.write(self.style.SUCCESS(f"Chat & Prompt Studio: http://{host}:{port}/  ({mode})"))
        serve(host=host, port=port, application=settings.ASGI_APPLICATION.replace(".application", ":application"),
              max_frame_bytes=settings.STUDIO_MAX_FRAME_BYTES)

    def ensure_admin(self, given_password: str | None):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = given_password or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.WARNING("Created the first admin account (shown once):"))
        self.stdout.write(f"    user name: admin\n    password:  {'(from STUDIO_ADMIN_PASSWORD)' if given_password else password}")
