"""The studio's error pages: in its layout for people, JSON `{"error"}` for API clients."""

import sys

from django.http import HttpResponseServerError, JsonResponse
from django.template import loader
from django.urls import Resolver404

from .database import database_unavailable
from .middleware import database_busy_response, error_response, wants_json


def bad_request(request, exception=None):
    return error_response(request, 400, "The request could not be understood; nothing was changed.")


def permission_denied(request, exception=None):
    message = str(exception) if exception and str(exception) else "You do not have access to this page."
    return error_response(request, 403, message)


def page_not_found(request, exception=None):
    # A view's own Http404 says what is missing; the URL resolver's says nothing a person needs.
    said = exception.args[0] if exception is not None and exception.args else None
    message = (
        said
        if isinstance(said, str) and not isinstance(exception, Resolver404) and said
        else "There is nothing at this address."
    )
    return error_response(request, 404, message)


def server_error(request):
    raised = sys.exc_info()[1]  # Django calls this while handling the exception
    if database_unavailable(raised):
        return database_busy_response(request, raised)
    message = "Something went wrong on the server; nothing you sent was lost. Try again, or tell your admin."
    if wants_json(request):
        return JsonResponse({"error": message}, status=500)
    # Rendered without the request: the error may come from the database the user lookup needs.
    html = loader.render_to_string("error.html", {"status": 500, "message": message})
    return HttpResponseServerError(html)


def csrf_failure(request, reason=""):
    return error_response(
        request, 403, "This form has expired (its security token is missing or old). Reload the page and send it again."
    )
