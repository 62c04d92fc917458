"""HTTP API for applications: `Authorization: Bearer <token>` (tokens on the settings page)."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from studio.errors import NotFound, StudioError

from . import selectors
from .examples import examples_for
from .rendering import MissingVariablesError, TemplateError, render_messages, render_owner

BODY_SHAPE = 'Send a JSON object: {"variables": {"name": "value"}, "label": "production"}.'


def _resolve(slug, params):
    prompt = selectors.prompt_by_slug(slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug}”.")
    label, number = params.get("label"), params.get("version")
    if label is not None and not isinstance(label, str) or number is not None and not isinstance(number, (str, int)):
        raise StudioError('"label" must be text and "version" a number.')
    try:
        return selectors.version_resolve(prompt, label=label, number=number)
    except selectors.VersionNotFound as exc:
        raise NotFound(str(exc)) from None


def version_json(version) -> dict:
    return {
        "prompt": {"name": version.prompt.name, "slug": version.prompt.slug, "description": version.prompt.description},
        "version": version.number,
        "labels": [label.name for label in version.labels.all()],
        "instructions": version.instructions,
        "template": version.template,
        "variables": version.variables,
        "examples": version.example_source or version.examples,
        "parameters": version.parameters,
        "output_format": version.answer_format,
        "retrieval": version.retrieval or None,
        "commit_message": version.commit_message,
        "author": version.author.get_username(),
        "created_at": version.created_at.isoformat(),
    }


@api_endpoint("GET")
def prompt_version(request, user, slug):
    return JsonResponse(version_json(_resolve(slug, request.GET)))


@api_endpoint("POST", json_body=True, body_hint=BODY_SHAPE)
def prompt_render(request, user, body, slug):
    render_owner.set(lambda: f"user:{user.pk}")  # the token's person takes their turn at the render processes
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise StudioError(BODY_SHAPE)
    version = _resolve(slug, {**request.GET.dict(), **{k: v for k, v in body.items() if k in ("label", "version")}})
    variables = body.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise StudioError('"variables" must be an object of text values.')
    examples, example_cases = examples_for(version, user=user, variables=variables)
    try:
        messages = render_messages(
            instructions=version.instructions, examples=examples, template=version.template, variables=variables
        )
    except (MissingVariablesError, TemplateError) as exc:
        raise StudioError(str(exc)) from None
    return JsonResponse(
        {
            "prompt": version.prompt.slug,
            "version": version.number,
            "messages": messages,
            "parameters": version.parameters,
            "example_cases": example_cases,
        }
    )
