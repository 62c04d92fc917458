"""ASGI entry point: pages over HTTP, chat over WebSocket (served by daphne)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_http_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.dispatch import ensure_embedded_worker  # noqa: E402
from studio.origins import SameOriginValidator  # noqa: E402
from studio.request_limits import BodyLimitMiddleware  # noqa: E402


async def http_app(scope, receive, send):
    # Daphne has no lifespan events: the first request starts the embedded model worker
    # (`manage.py serve` starts it earlier, as soon as the server runs).
    ensure_embedded_worker()
    await django_http_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": BodyLimitMiddleware(http_app),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
