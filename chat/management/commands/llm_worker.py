"""Run a standalone model worker (scaled mode): `python manage.py llm_worker`."""

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.serving.worker import GenerationWorker


class Command(BaseCommand):
    help = "Load the model and serve generation requests from the channel layer (needs REDIS_URL)."

    def handle(self, *args, **options):
        if not settings.REDIS_URL:
            raise CommandError(
                "llm_worker needs REDIS_URL: with the in-memory channel layer only the web process "
                "can reach a worker, and it runs one itself (embedded mode)."
            )
        asyncio.run(self.run_until_signalled())

    async def run_until_signalled(self):
        worker_task = asyncio.create_task(GenerationWorker().run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Cancelling lets the worker mark the reply it is writing as failed at once,
            # instead of leaving the tab to wait for the lease to lapse.
            loop.add_signal_handler(signum, worker_task.cancel)
        try:
            await worker_task
        except asyncio.CancelledError:
            self.stdout.write("model worker stopped")
