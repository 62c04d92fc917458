"""Reads of online evaluation: a person's rules, a rule's scores per day and the replies it scored,
paged without counting (a rule may have scored a million replies)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from prompts.models import Prompt

from .models import OnlineRule, OnlineSample, OnlineScore, OnlineScoreDay

SERIES_DAYS = 30  # a rule's page and API: the means of its last 30 days
REPLIES_PER_PAGE = 20
OUTPUT_CHARS = 2000  # of a scored reply, in the API's list (its conversation has the rest)


def rules_of(prompt: Prompt):
    return OnlineRule.objects.filter(prompt=prompt).select_related("version", "created_by").order_by("-id")


def rule_for(user, rule_id: int) -> OnlineRule | None:
    """The rule, for its prompt's owner, editors and staff; None for anyone else (as if it did not exist)."""
    rule = OnlineRule.objects.select_related("prompt", "version", "created_by").filter(pk=rule_id).first()
    if rule is None or not rule.prompt.can_edit(user):
        return None
    return rule


def scorer_means(rule: OnlineRule, *, days: int = SERIES_DAYS) -> dict[str, dict]:
    """{scorer name: {"mean", "n", "errors"}} over its last `days` (errors count in no mean), from the
    figures kept per day."""
    rows = (
        OnlineScoreDay.objects.filter(rule=rule, day__gte=_first_day(days))
        .values("scorer")
        .annotate(total=Sum("total"), scored=Sum("scored"), errors=Sum("errors"))
    )
    found = {row["scorer"]: _figures(row["total"], row["scored"], row["errors"]) for row in rows}
    return {spec["name"]: found.get(spec["name"], _figures(0.0, 0, 0)) for spec in rule.scorers}


def series(rule: OnlineRule, *, days: int = SERIES_DAYS) -> list[dict]:
    """Per day (oldest first), each scorer's mean, count and errors: [{"day", "scorers": {name: {...}}}]."""
    by_day: dict = defaultdict(dict)
    for row in OnlineScoreDay.objects.filter(rule=rule, day__gte=_first_day(days)):
        by_day[row.day][row.scorer] = _figures(row.total, row.scored, row.errors)
    return [{"day": day.isoformat(), "scorers": by_day[day]} for day in sorted(by_day)]


def _first_day(days: int):
    return timezone.localdate() - timedelta(days=days - 1)


def _figures(total: float, scored: int, errors: int) -> dict:
    return {"mean": round(total / scored, 4) if scored else None, "n": scored, "errors": errors}


def scored_page(rule: OnlineRule, page: int = 1) -> dict:
    """One page of the replies it scored, newest first: {"number", "has_next", "replies": [...]}.
    Each: {"message", "conversation", "output", "scores": {name: {"value", "status", "reason"}},
    "scored_at"}. No count: a page costs the same with a million scored replies."""
    page = max(1, page)
    start = (page - 1) * REPLIES_PER_PAGE
    samples = list(
        OnlineSample.objects.filter(rule=rule, status="finished")
        .select_related("message")
        .only("id", "message_id", "finished_at", "message__content", "message__conversation_id")
        .order_by("-id")[start : start + REPLIES_PER_PAGE + 1]
    )
    has_next = len(samples) > REPLIES_PER_PAGE
    samples = samples[:REPLIES_PER_PAGE]
    scores: dict[int, dict] = defaultdict(dict)
    for score in OnlineScore.objects.filter(rule=rule, message_id__in=[s.message_id for s in samples]):
        scores[score.message_id][score.scorer] = {"value": score.value, "status": score.status, "reason": score.reason}
    return {
        "number": page,
        "has_next": has_next,
        "has_previous": page > 1,
        "replies": [
            {
                "message": sample.message_id,
                "conversation": sample.message.conversation_id,
                "output": sample.message.content[:OUTPUT_CHARS],
                "scores": scores[sample.message_id],
                "scored_at": sample.finished_at,
            }
            for sample in samples
        ],
    }


def waiting(rule: OnlineRule) -> int:
    """Its samples queued or being scored."""
    return OnlineSample.objects.filter(rule=rule, status__in=("queued", "running")).count()


def rule_json(rule: OnlineRule) -> dict:
    return {
        "id": rule.pk,
        "prompt": rule.prompt.slug,
        "label": rule.label or None,
        "version": rule.version.number if rule.version_id else None,
        "sample_rate": rule.sample_rate,
        "scorers": rule.scorers,
        "review_below": rule.review_below,
        "active": rule.active,
        "created_by": rule.created_by.username if rule.created_by else None,
        "created_at": rule.created_at.isoformat(),
    }


def rule_detail_json(rule: OnlineRule, page: int = 1) -> dict:
    return {
        **rule_json(rule),
        "waiting": waiting(rule),
        "scores": scorer_means(rule),
        "series": series(rule),
        "replies": scored_page(rule, page),
    }
