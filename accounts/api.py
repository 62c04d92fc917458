"""One way to refuse an API call. Every JSON API route (prompts, failure cases, evaluations,
fine-tunes, the OpenAI-compatible one) is an `api_endpoint`: the token checked first (401, or
429 after too many bad ones), staff where asked (403), the JSON body parsed and bounded (400),
and any StudioError the view raises answered with its status and message, in the route's shape.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from channels.db import database_sync_to_async
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from studio.errors import Forbidden, LimitReached, StudioError
from studio.input_checks import InputError, parse_json

from .throttle import api_user


def plain_error(status: int, error: StudioError | str) -> JsonResponse:
    """The studio's own APIs: `{"error": "field: message"}`, and `"code"` when the refusal has one."""
    code = getattr(error, "code", "")
    response = JsonResponse({"error": str(error), **({"code": code} if code else {})}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="studio"'
    return response


def api_endpoint(
    *methods: str,
    json_body: bool = False,
    staff: bool = False,
    body_hint: str = "",
    error_response: Callable[[int, StudioError | str], JsonResponse] = plain_error,
):
    """Wrap a view `view(request, user, [body,] *args)`: sync or async alike. `body_hint` follows
    the parser's message when the body is not the JSON it should be."""

    def refuse(exc: Exception) -> JsonResponse:
        if isinstance(exc, InputError):
            return error_response(400, f"{exc} {body_hint}".strip())
        response = error_response(exc.status, exc)
        if exc.status == 429:  # a limit that passes with time says when to ask again
            response["Retry-After"] = str(exc.retry_after_s or LimitReached.retry_after_s)
        return response

    def prepare(request):
        if request.method not in methods:
            raise StudioError(f"Use {' or '.join(methods)}.", status=405)
        user = api_user(request)
        if staff and not user.is_staff:
            raise Forbidden("This route is for staff: this token's user is not staff.")
        return (user, parse_json(request.body or b"null")) if json_body else (user,)

    def decorate(view):
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def endpoint(request, *args, **kwargs):
                try:
                    # database_sync_to_async: the token check's connection goes back to the pool
                    # before the view waits (an async view may wait for minutes).
                    return await view(request, *await database_sync_to_async(prepare)(request), *args, **kwargs)
                except (StudioError, InputError) as exc:
                    return refuse(exc)
        else:

            @functools.wraps(view)
            def endpoint(request, *args, **kwargs):
                try:
                    return view(request, *prepare(request), *args, **kwargs)
                except (StudioError, InputError) as exc:
                    return refuse(exc)

        return csrf_exempt(endpoint)  # token-authenticated: no cookies involved

    return decorate
