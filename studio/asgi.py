"""ASGI entry point: pages over HTTP, chat over WebSocket (served by daphne).

Wiring: it starts the embedded model worker (embedded mode) or, where no model worker lives in
this process, the sweeper (studio.sweeping), on the server's event loop.
"""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_http_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from studio import sweeping  # noqa: E402
from studio.origins import SameOriginValidator  # noqa: E402
from studio.request_limits import BodyLimitMiddleware  # noqa: E402

_started: dict[int, asyncio.Task] = {}  # event loop id → its embedded worker or sweeper


def start_background_work() -> None:
    """Once per event loop: the embedded model worker (which sweeps in its lease loop), or the
    sweeper alone. Daphne has no lifespan events, so the first request or socket calls this
    (`manage.py serve` calls it as soon as the server runs)."""
    loop = asyncio.get_running_loop()
    task = _started.get(id(loop))
    if task is not None and not task.done():
        return
    if settings.LLM_EMBEDDED_WORKER:
        # The worker's model code (torch) loads only in a process that serves the model (embedded mode)
        from chat.serving.worker import GenerationWorker  # noqa: PLC0415

        _started[id(loop)] = loop.create_task(GenerationWorker().run(), name="embedded-llm-worker")
    else:
        _started[id(loop)] = loop.create_task(_sweep_forever(), name="studio-sweeper")


async def _sweep_forever() -> None:
    interval = max(settings.LLM_LEASE_SECONDS / 3, 0.2)
    while True:
        await asyncio.sleep(interval)
        await database_sync_to_async(sweeping.sweep_all)()


async def http_app(scope, receive, send):
    start_background_work()
    await django_http_app(scope, receive, send)


async def websocket_app(scope, receive, send):
    start_background_work()
    await SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))(scope, receive, send)


application = ProtocolTypeRouter({"http": BodyLimitMiddleware(http_app), "websocket": websocket_app})
