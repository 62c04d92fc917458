"""`make run`: migrate, make sure an admin exists, then serve the studio with daphne."""

import asyncio
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Set up the database and serve the studio (pages, WebSockets and, in embedded mode, the model worker)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "8000")))

    def handle(self, *args, host, port, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin()
        # Importing daphne's CLI installs Twisted's asyncio reactor, which the worker shares.
        from daphne.cli import CommandLineInterface
        from twisted.internet import reactor

        from chat.worker import ensure_embedded_worker

        if settings.LLM_EMBEDDED_WORKER:
            # Load the model as soon as the server runs, not on the first page view.
            reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(ensure_embedded_worker))
            mode = f"embedded model worker ({settings.LLM_MODEL}); first start converts the model (~30 s)"
        else:
            mode = "no embedded worker: run `python manage.py llm_worker` beside it"
        self.stdout.write(self.style.SUCCESS(f"Chat & Prompt Studio: http://{host}:{port}/  ({mode})"))
        CommandLineInterface().run(["--bind", host, "--port", str(port), settings.ASGI_APPLICATION.replace(".application", ":application")])

    def ensure_admin(self):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("STUDIO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.WARNING("Created the first admin account (shown once):"))
        self.stdout.write(f"    user name: admin\n    password:  {password if 'STUDIO_ADMIN_PASSWORD' not in os.environ else '(from STUDIO_ADMIN_PASSWORD)'}")
