"""Django middleware that holds for every route, present and future."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

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
    from urllib.parse import quote

    return quote(message[:500], safe=" ,.;:!?()'\"/-")
