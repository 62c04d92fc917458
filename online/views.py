"""Pages of online evaluation: a prompt's rules with the form that makes one
(`/online-evaluations/?prompt=<slug>`), and a rule's page: its scores per day and the replies it
scored, paged (htmx)."""

import json
import re

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat.serving.registry import available_models
from prompts import selectors as prompt_selectors
from prompts.models import LATEST
from studio.errors import Forbidden
from studio.input_checks import whole_number_or_none

from . import charts, selectors, services
from .scorers import LABELS, SCORER_TYPES

# The form's field of each scorer setting ("scorers[2].pattern" → "pattern"), for errors at the field.
FORM_FIELDS = {
    ("llm_judge", "rubric"): "judge_rubric",
    ("llm_judge", "model"): "judge_model",
    ("json_schema", "schema"): "schema",
    ("regex", "pattern"): "pattern",
    ("length", "min"): "length_min",
    ("length", "max"): "length_max",
    ("length", ""): "length_min",
    ("contains", "text"): "contains_text",
    ("not_contains", "text"): "not_contains_text",
}
_SCORER_FIELD = re.compile(r"scorers\[(\d+)\](?:\.(\w+))?")


def _prompt_or_404(slug):
    prompt = prompt_selectors.prompt_by_slug(slug) if slug else None
    if prompt is None:
        raise Http404("Choose a prompt (its page links its online evaluation).")
    return prompt


def _rule_or_404(request, rule_id):
    rule = selectors.rule_for(request.user, rule_id)
    if rule is None:
        raise Http404("No such online evaluation rule.")
    return rule


def _form_scorers(source) -> tuple[list[dict], list[str]]:
    """The scorers ticked on the form, as the API takes them, and their types in that order."""
    ticked = [kind for kind in SCORER_TYPES if kind in source.getlist("scorer")]
    specs = []
    for kind in ticked:
        if kind == "llm_judge":
            specs.append(
                {"type": kind, "rubric": source.get("judge_rubric", ""), "model": source.get("judge_model", "")}
            )
        elif kind == "json_schema":
            try:
                specs.append({"type": kind, "schema": json.loads(source.get("schema") or "null")})
            except ValueError:
                specs.append({"type": kind, "schema": "not JSON"})
        elif kind == "regex":
            specs.append({"type": kind, "pattern": source.get("pattern", "")})
        elif kind == "length":
            specs.append(
                {"type": kind, "min": _whole(source.get("length_min")), "max": _whole(source.get("length_max"))}
            )
        else:
            specs.append(
                {
                    "type": kind,
                    "text": source.get(f"{kind}_text", ""),
                    "ignore_case": bool(source.get(f"{kind}_ignore_case")),
                }
            )
    return specs, ticked


def _whole(text):
    text = (text or "").strip()
    return int(text) if text.isdigit() else (text or None)


def _field_of(error_field: str, ticked: list[str]) -> str:
    found = _SCORER_FIELD.fullmatch(error_field)
    if found is None:
        return error_field or "scorers"
    kind = ticked[int(found[1])] if int(found[1]) < len(ticked) else ""
    return FORM_FIELDS.get((kind, found[2] or ""), "scorers")


@login_required
@require_http_methods(["GET", "POST"])
def rules(request):
    """A prompt's rules and the form of a new one; the form posts here (htmx swaps the form back
    with the error under its field, or goes to the new rule's page)."""
    source = request.POST if request.method == "POST" else request.GET
    prompt = _prompt_or_404(source.get("prompt"))
    if not prompt.can_edit(request.user):
        raise Http404("Only the prompt's owner, its editors and staff see its online evaluation.")
    values = {
        name: source.get(name, "")
        for name in ("follows", "label", "version", "sample_rate", "review_below", "judge_rubric", "judge_model")
    }
    values.update(
        follows=values["follows"] or "label",
        label=values["label"] or "production",
        sample_rate=values["sample_rate"] or "0.1",
    )
    for name in ("schema", "pattern", "length_min", "length_max", "contains_text", "not_contains_text"):
        values[name] = source.get(name, "")
    errors = {}
    ticked = source.getlist("scorer") if request.method == "POST" else ["length"]
    if request.method == "POST":
        specs, ticked = _form_scorers(source)
        try:
            rule = services.rule_create(
                user=request.user,
                prompt=prompt,
                label=values["label"] if values["follows"] == "label" else None,
                version=values["version"] if values["follows"] == "version" else None,
                sample_rate=values["sample_rate"],
                scorers=specs,
                review_below=values["review_below"] or None,
            )
        except (services.RuleError, Forbidden) as exc:
            errors[_field_of(exc.field, ticked)] = exc.message
        else:
            url = rule.get_absolute_url()
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = {
        "prompt": prompt,
        "rules": selectors.rules_of(prompt),
        "values": values,
        "ticked": ticked,
        "errors": errors,
        "labels": [LATEST, *prompt.labels.values_list("name", flat=True)],
        "models": available_models(),
        "scorer_labels": LABELS,
    }
    template = "online/_rule_form.html" if request.htmx and request.method == "POST" else "online/rules.html"
    return render(request, template, context, status=400 if errors else 200)


def _rule_context(request, rule) -> dict:
    page = whole_number_or_none(request.GET.get("page"), high=10**6) or 1
    days = selectors.series(rule)
    names = [spec["name"] for spec in rule.scorers]
    return {
        "rule": rule,
        "means": selectors.scorer_means(rule),
        "days": days,
        "day_rows": [
            {"day": day["day"], "cells": [day["scorers"].get(name) for name in names]} for day in reversed(days)
        ],
        "chart": charts.score_chart(days, names),
        "waiting": selectors.waiting(rule),
        "page": selectors.scored_page(rule, page),
        "can_edit": rule.prompt.can_edit(request.user),
    }


@login_required
@require_GET
def rule_detail(request, rule_id):
    rule = _rule_or_404(request, rule_id)
    return render(request, "online/rule_detail.html", _rule_context(request, rule))


@login_required
@require_GET
def rule_replies(request, rule_id):
    """A page of the replies it scored (htmx: the pager swaps this part)."""
    rule = _rule_or_404(request, rule_id)
    return render(request, "online/_scored_replies.html", _rule_context(request, rule))


@login_required
@require_POST
def rule_disable(request, rule_id):
    rule = services.rule_disable(rule=_rule_or_404(request, rule_id), user=request.user)
    return redirect(rule)


@login_required
@require_POST
def rule_delete(request, rule_id):
    rule = _rule_or_404(request, rule_id)
    slug = rule.prompt.slug
    services.rule_delete(rule=rule, user=request.user)
    url = f"{reverse('online:rules')}?prompt={slug}"
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
