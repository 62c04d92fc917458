"""HTTP API of online evaluation (Bearer tokens, JSON). Routes and answers are in README.md,
"Online evaluation"."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from prompts import selectors as prompt_selectors
from studio.errors import NotFound, StudioError
from studio.input_checks import whole_number_or_none

from . import selectors, services

RULE_SHAPE = (
    'Send a JSON object: {"prompt": "support-reply", "label": "production" (or "version": 3), '
    '"sample_rate": 0.1, "scorers": [{"type": "llm_judge", "rubric": "..."}], "review_below": 0.5}.'
)
RULE_FIELDS = {"prompt", "label", "version", "sample_rate", "scorers", "review_below"}


def _prompt_or_404(slug):
    prompt = prompt_selectors.prompt_by_slug(slug) if isinstance(slug, str) and slug else None
    if prompt is None:
        raise NotFound(f"There is no prompt “{str(slug)[:100]}”.", "prompt")
    return prompt


@api_endpoint("GET", "POST", json_body=True)
def rules(request, user, body):
    if request.method == "GET":
        prompt = _prompt_or_404(request.GET.get("prompt"))
        services.require_editor(prompt, user)
        return JsonResponse({"rules": [selectors.rule_json(rule) for rule in selectors.rules_of(prompt)]})
    if not isinstance(body, dict):
        raise StudioError(RULE_SHAPE)
    unknown = sorted(set(body) - RULE_FIELDS)
    if unknown:
        raise StudioError(f"unknown field; {RULE_SHAPE}", unknown[0])
    if "sample_rate" not in body or "scorers" not in body:
        raise StudioError(f"required; {RULE_SHAPE}", "sample_rate" if "sample_rate" not in body else "scorers")
    for field in ("sample_rate", "review_below"):
        if isinstance(body.get(field), str):  # a number, not text that reads as one (the form's are text)
            raise StudioError("must be a number from 0.0 to 1.0", field)
    rule = services.rule_create(
        user=user,
        prompt=_prompt_or_404(body.get("prompt")),
        label=body.get("label"),
        version=body.get("version"),
        sample_rate=body["sample_rate"],
        scorers=body["scorers"],
        review_below=body.get("review_below"),
    )
    return JsonResponse({"id": rule.pk}, status=201)


def _rule_or_404(user, rule_id):
    rule = selectors.rule_for(user, rule_id)
    if rule is None:
        raise NotFound(f"There is no online evaluation rule {rule_id}.")
    return rule


@api_endpoint("GET", "DELETE")
def rule_detail(request, user, rule_id):
    rule = _rule_or_404(user, rule_id)
    if request.method == "DELETE":
        services.rule_delete(rule=rule, user=user)
        return JsonResponse({"id": rule_id, "deleted": True})
    page = whole_number_or_none(request.GET.get("page"), high=10**6) or 1
    return JsonResponse(selectors.rule_detail_json(rule, page))


@api_endpoint("POST")
def rule_disable(request, user, rule_id):
    rule = services.rule_disable(rule=_rule_or_404(user, rule_id), user=user)
    return JsonResponse({"id": rule.pk, "active": rule.active})
