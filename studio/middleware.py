"""Django middleware that holds for every route, present and future."""

import logging
from urllib.parse import quote

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader

from .database import database_unavailable
from .input_checks import find_unstorable


def content_security_policy(get_response):
    """Every response carries the CSP (settings.CONTENT_SECURITY_POLICY): no inline script runs."""

    def middleware(request):
        response = get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response

    return middleware


def refuse_unstorable_parameters(get_response):
    """Query and form parameters with a NUL byte are refused with a 400 before any view or query
    sees them (PostgreSQL refuses NUL in text; a lookup with one would answer 500). JSON bodies,
    files and socket frames are checked where they are parsed (studio.input_checks)."""

    def middleware(request):
        for where, parameters in (("query", request.GET), ("form", request.POST)):
            problem = find_unstorable({key: parameters.getlist(key) for key in parameters})
            if problem:
                field = problem[0].split("[")[0]
                return error_response(request, 400, f"The {where} field “{field[:40]}” {problem[1]}.")
        return get_response(request)

    return middleware


def wants_json(request) -> bool:
    return request.path.startswith(("/api/", "/v1/"))


def error_response(request, status: int, message: str):
    """An error as the client reads it: JSON for API routes, the studio's error page otherwise
    (htmx requests show its message where the person is looking, see static/js/studio.js)."""
    if wants_json(request):
        return JsonResponse({"error": message}, status=status)
    response = render(request, "error.html", {"status": status, "message": message}, status=status)
    response["X-Studio-Error"] = _header_safe(message)
    return response


def _header_safe(message: str) -> str:
    return quote(message[:500], safe=" ,.;:!?()'\"/-")


# --- A database that cannot take the request now -----------------------------------------------------
# What a client waits before trying again (the pool gives connections back within a request's time).
DATABASE_BUSY_RETRY_AFTER_S = 5
DATABASE_BUSY_MESSAGE = "The database is busy and could not take this request; nothing was changed. Try again shortly."
log = logging.getLogger("studio")


def database_busy_response(request, exc: BaseException) -> HttpResponse:
    """503 with Retry-After: JSON on the API, the error page otherwise. The page is rendered
    without the request (its user and session live in the database that just refused)."""
    log.warning("database busy on %s %s: %s", request.method, request.path, exc.__cause__ or exc)
    if wants_json(request):
        response = JsonResponse({"error": DATABASE_BUSY_MESSAGE, "code": "database_busy"}, status=503)
    else:
        response = HttpResponse(
            loader.render_to_string("error.html", {"status": 503, "message": DATABASE_BUSY_MESSAGE}), status=503
        )
        response["X-Studio-Error"] = _header_safe(DATABASE_BUSY_MESSAGE)
    response["Retry-After"] = str(DATABASE_BUSY_RETRY_AFTER_S)
    return response


class DatabaseBusyMiddleware:
    """A view that meets a database which cannot take it answers 503 + Retry-After, never 500. (The
    error handler, studio.views.server_error, does the same for one met in another middleware.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return database_busy_response(request, exception) if database_unavailable(exception) else None
