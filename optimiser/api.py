"""HTTP API of the optimiser (Bearer tokens, JSON). Routes and answers are in README.md, "The
optimiser"."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from prompts import selectors as prompt_selectors
from studio.errors import NotFound, StudioError

from . import selectors, services

OPTIMISE_SHAPE = (
    'Send a JSON object: {"version": 2, "split": "train", "scorers": [{"type": "json_equal"}], '
    '"budget": {"cases": 2000}}.'
)


@api_endpoint("POST", json_body=True)
def optimise(request, user, body, slug):
    if not isinstance(body, dict):
        raise StudioError(OPTIMISE_SHAPE)
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug[:100]}”.")
    number = body.get("version")
    if isinstance(number, (bool, list, dict, float)):
        raise StudioError('"version" must be a version number.', "version")
    try:
        version = prompt_selectors.version_resolve(prompt, number=number)
    except prompt_selectors.VersionNotFound as exc:
        raise NotFound(str(exc)) from None
    optimisation = services.optimisation_create(
        user=user,
        version=version,
        split=body.get("split"),
        selection=body.get("selection"),
        scorers=body.get("scorers", [{"type": "exact_match"}]),
        budget=body.get("budget", {"cases": 2000}),
        model=body.get("model"),
    )
    return JsonResponse({"id": optimisation.pk}, status=202)


def _optimisation_or_404(user, optimisation_id):
    optimisation = selectors.optimisation_for(user, optimisation_id)
    if optimisation is None:
        raise NotFound(f"There is no optimisation {optimisation_id}.")
    return optimisation


@api_endpoint("GET")
def optimisation_detail(request, user, optimisation_id):
    return JsonResponse(selectors.optimisation_json(_optimisation_or_404(user, optimisation_id)))


@api_endpoint("POST")
def optimisation_save(request, user, optimisation_id):
    version = services.optimisation_save(optimisation=_optimisation_or_404(user, optimisation_id), user=user)
    return JsonResponse({"version": version.number}, status=201)


@api_endpoint("POST")
def optimisation_cancel(request, user, optimisation_id):
    optimisation = _optimisation_or_404(user, optimisation_id)
    services.optimisation_cancel(optimisation=optimisation, user=user)
    return JsonResponse({"id": optimisation.pk, "status": optimisation.status})
