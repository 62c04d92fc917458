"""WebSocket handshakes only from the studio's own pages.

Browsers send cookies with a WebSocket handshake from any page, so the Origin header is what
keeps another site (even `http://localhost:3000` on the same machine) from opening a user's
chat socket. Channels' AllowedHostsOriginValidator compares host names only; this compares
scheme, host and port with the address the socket was opened on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def _socket_scheme(scope, headers: dict) -> str:
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    if settings.SECURE_PROXY_SSL_HEADER:  # behind a TLS proxy that says so
        name, expected = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if headers.get(header, b"").decode("latin-1").strip() == expected:
            return "https"
    return "http"


def origin_allowed(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    origin = _origin_tuple(headers.get(b"origin", b"").decode("latin-1"))
    if origin is None:
        return False
    if any(origin == _origin_tuple(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return origin == _origin_tuple(f"{_socket_scheme(scope, headers)}://{host}")


class SameOriginValidator:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
