"""Request bodies are bounded before they are read into memory, on every route.

Two layers, both reading `body_limit_for(path)`:
- the ASGI middleware here refuses a declared `Content-Length` over the limit with 413
  before reading a byte, and stops a chunked body once it passes the limit;
- daphne (studio/server.py) refuses the same requests while their headers arrive, so the
  server never spools or queues their bodies either.

Limits: login forms 64 KiB (nobody is logged in yet), the routes in
settings.STUDIO_UPLOAD_ROUTE_BYTES their own (the conversation import), the upload routes in
settings.STUDIO_UPLOAD_PATHS settings.STUDIO_MAX_UPLOAD_BYTES, everything else
settings.STUDIO_MAX_BODY_BYTES. WebSocket messages are capped by daphne
(settings.STUDIO_MAX_FRAME_BYTES).
"""

from __future__ import annotations

import functools
import json
import re

from django.conf import settings

LOGIN_MAX_BODY_BYTES = 64 * 1024
_LOGIN_PATHS = ("/accounts/login/", "/admin/login/")


@functools.cache
def _upload_patterns() -> tuple[re.Pattern, ...]:
    return tuple(re.compile(pattern) for pattern in settings.STUDIO_UPLOAD_PATHS)


@functools.cache
def _route_limits() -> tuple[tuple[re.Pattern, int], ...]:
    return tuple((re.compile(pattern), limit) for pattern, limit in settings.STUDIO_UPLOAD_ROUTE_BYTES.items())


def body_limit_for(path: str) -> int:
    if path in _LOGIN_PATHS:
        return LOGIN_MAX_BODY_BYTES
    for pattern, limit in _route_limits():
        if pattern.match(path):
            return limit
    if any(pattern.match(path) for pattern in _upload_patterns()):
        return settings.STUDIO_MAX_UPLOAD_BYTES
    return settings.STUDIO_MAX_BODY_BYTES


def too_large_message(limit: int) -> str:
    return f"The request is too large: this address takes at most {_human(limit)}. Nothing was read or stored."


def too_large_response(path: str, limit: int) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(status line reason, body, headers) of the 413 answer, JSON for API routes."""
    message = too_large_message(limit)
    if path.startswith("/v1/"):  # OpenAI's error shape, which its clients read
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "request_too_large"}}
        ).encode()
        content_type = b"application/json"
    elif path.startswith("/api/"):
        body = json.dumps({"error": message}).encode()
        content_type = b"application/json"
    else:
        body = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>413 · Chat &amp; Prompt Studio'
            f'</title><link rel="stylesheet" href="/static/css/studio.css"></head><body><main class="page error-page">'
            f'<section class="card error-page__card"><p class="error-page__status">413</p><h1>Too large</h1>'
            f'<p class="error-page__message" role="alert">{message}</p><p><a class="button" href="/chat/">'
            f"Back to the studio</a></p></section></main></body></html>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-studio-error", message.encode("ascii", "replace")),
    ]
    return b"Content Too Large", body, headers


class BodyLimitMiddleware:
    """ASGI middleware: 413 for bodies over the route's limit, before the app reads them (a declared
    length), or as soon as a chunked body passes it. The body is never gathered here: the app reads
    it as it comes (Django spools a large one to disk)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = True
            if too_large:
                return await self._refuse(scope, send, limit)
            return await self.app(scope, receive, send)
        # No length declared (chunked): counted as the app reads it. Past the limit the app is told
        # the client went away (Django reads the whole body before a view runs, so it has answered
        # nothing yet) and the 413 is sent here.
        received, passed, answered = 0, False, False

        async def counted_receive():
            nonlocal received, passed
            if passed:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    passed = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal answered
            answered = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)
        if passed and not answered:
            await self._refuse(scope, send, limit)

    @staticmethod
    async def _refuse(scope, send, limit):
        _, body, headers = too_large_response(scope["path"], limit)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _human(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"
