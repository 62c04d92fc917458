"""HTTP API for applications: `Authorization: Bearer <token>` (tokens on the settings page)."""

from django.http import JsonResponse
from django.utils import timezone

from accounts.api import api_endpoint
from studio.errors import NotFound, StudioError

from . import selectors, splits
from .examples import examples_for
from .rendering import MissingVariablesError, TemplateError, render_messages, render_owner

BODY_SHAPE = 'Send a JSON object: {"variables": {"name": "value"}, "label": "production"}.'


def _prompt(slug):
    prompt = selectors.prompt_by_slug(slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug}”.")
    return prompt


def _resolve(slug, params):
    prompt = _prompt(slug)
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
        **version.openai_tool_fields,
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


# --- A/B splits (prompts/splits.py) ----------------------------------------------------------------

SPLIT_SHAPE = f'Send a JSON object: {{"variants": {splits.SHAPE}}}.'


def split_json(split, *, prompt) -> dict:
    """The split, each variant with the version its label points at now."""
    versions = splits.variant_versions(prompt, split)
    shown = split.to_dict()
    shown["variants"] = [{**variant, "version": versions.get(variant["label"])} for variant in shown["variants"]]
    return shown


@api_endpoint("GET", "POST", "DELETE", json_body=True, body_hint=SPLIT_SHAPE)
def prompt_split(request, user, body, slug):
    """GET the running split (with the comparison of its variants, for those who see the prompt's
    traffic), POST a new one (201), DELETE to end it."""
    prompt = _prompt(slug)
    if request.method == "POST":
        if not isinstance(body, dict):
            raise StudioError(SPLIT_SHAPE)
        split = splits.split_set(prompt=prompt, variants=body.get("variants"), user=user)
        return JsonResponse(split_json(split, prompt=prompt), status=201)
    if request.method == "DELETE":
        return JsonResponse(split_json(splits.split_end(prompt=prompt, user=user), prompt=prompt))
    split = splits.active_split(prompt)
    if split is None:
        return JsonResponse({"variants": None})
    shown = split_json(split, prompt=prompt)
    # The comparison is the prompt's live traffic: its owner, editors and staff only (as its metrics).
    if prompt.can_edit(user):
        shown["comparison"] = splits.comparison_for(prompt, split.created_at, timezone.now())
    return JsonResponse(shown)


@api_endpoint("POST", json_body=True, body_hint='Send a JSON object: {"label": "candidate"}.')
def prompt_split_promote(request, user, body, slug):
    """Move `production` to the version of the variant named, and end the split."""
    prompt = _prompt(slug)
    if not isinstance(body, dict):
        raise StudioError('Send a JSON object: {"label": "candidate"}.')
    split, production = splits.split_promote(prompt=prompt, label=body.get("label"), user=user)
    return JsonResponse(
        {
            "promoted": split.promoted_label,
            "production": production.version.number,
            "split": split_json(split, prompt=prompt),
        }
    )
