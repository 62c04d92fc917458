"""HTTP API for applications: `Authorization: Bearer <token>` (tokens on the settings page)."""

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.services import user_for_api_token

from . import selectors
from .rendering import MissingVariablesError, TemplateError, render_messages

MAX_BODY_BYTES = 1024 * 1024


def _api_user(request):
    scheme, _, raw_token = request.headers.get("Authorization", "").partition(" ")
    return user_for_api_token(raw_token.strip()) if scheme.lower() == "bearer" else None


def _error(status, message):
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="studio"'
    return response


def _resolve(request, slug, params):
    """(version, None) or (None, error response)."""
    if _api_user(request) is None:
        return None, _error(401, "Send an API token: Authorization: Bearer <token> (create one on your settings page).")
    prompt = selectors.prompt_by_slug(slug)
    if prompt is None:
        return None, _error(404, f"There is no prompt “{slug}”.")
    try:
        return selectors.version_resolve(prompt, label=params.get("label"), number=params.get("version")), None
    except selectors.VersionNotFound as exc:
        return None, _error(404, str(exc))


def version_json(version) -> dict:
    return {
        "prompt": {"name": version.prompt.name, "slug": version.prompt.slug, "description": version.prompt.description},
        "version": version.number, "labels": [label.name for label in version.labels.all()],
        "instructions": version.instructions, "template": version.template, "variables": version.variables,
        "examples": version.examples, "parameters": version.parameters, "commit_message": version.commit_message,
        "author": version.author.get_username(), "created_at": version.created_at.isoformat(),
    }


@require_GET
def prompt_version(request, slug):
    version, error = _resolve(request, slug, request.GET)
    return error or JsonResponse(version_json(version))


@csrf_exempt  # token-authenticated, no cookies involved
@require_POST
def prompt_render(request, slug):
    if len(request.body) > MAX_BODY_BYTES:
        return _error(413, f"The body is larger than {MAX_BODY_BYTES:,} bytes.")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if _api_user(request) is not None and not isinstance(body, dict):
        return _error(400, 'Send a JSON object: {"variables": {"name": "value"}, "label": "production"}.')
    version, error = _resolve(request, slug, {**request.GET.dict(), **{k: v for k, v in (body or {}).items()
                                                                        if k in ("label", "version")}})
    if error:
        return error
    variables = body.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        return _error(400, '"variables" must be an object of text values.')
    try:
        messages = render_messages(instructions=version.instructions, examples=version.examples,
                                   template=version.template, variables=variables)
    except (MissingVariablesError, TemplateError) as exc:
        return _error(400, str(exc))
    return JsonResponse({"prompt": version.prompt.slug, "version": version.number, "messages": messages,
                         "parameters": version.parameters})
