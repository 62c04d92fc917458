"""HTTP API for applications: `Authorization: Bearer <token>` (tokens on the settings page)."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.throttle import ApiRefusal, api_user
from studio.input_checks import InputError, parse_json

from . import selectors
from .rendering import MissingVariablesError, TemplateError, render_messages, render_owner


def _error(status, message):
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="studio"'
    return response


def _resolve(slug, params):
    """(version, None) or (None, error response)."""
    prompt = selectors.prompt_by_slug(slug)
    if prompt is None:
        return None, _error(404, f"There is no prompt “{slug}”.")
    label, number = params.get("label"), params.get("version")
    if label is not None and not isinstance(label, str) or number is not None and not isinstance(number, (str, int)):
        return None, _error(400, '"label" must be text and "version" a number.')
    try:
        return selectors.version_resolve(prompt, label=label, number=number), None
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
    try:
        api_user(request)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    version, error = _resolve(slug, request.GET)
    return error or JsonResponse(version_json(version))


@csrf_exempt  # token-authenticated, no cookies involved
@require_POST
def prompt_render(request, slug):
    try:
        user = api_user(request)
        body = parse_json(request.body or b"{}")
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    except InputError as exc:
        return _error(400, f'{exc} Send a JSON object: {{"variables": {{"name": "value"}}, "label": "production"}}.')
    render_owner.set(lambda: f"user:{user.pk}")  # the token's person takes their turn at the render processes
    if not isinstance(body, dict):
        return _error(400, 'Send a JSON object: {"variables": {"name": "value"}, "label": "production"}.')
    version, error = _resolve(slug, {**request.GET.dict(), **{k: v for k, v in body.items() if k in ("label", "version")}})
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
