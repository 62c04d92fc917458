"""Writes to online evaluation rules: create one (its input checked, the prompt's bound counted
before anything is stored), disable it (its scores kept), delete it (with its scores)."""

from __future__ import annotations

import math

from django.db import transaction

from evals.scorers import ScorerError
from prompts.models import LATEST, Prompt
from prompts.rendering import pattern_error
from prompts.selectors import LABEL_PATTERN
from studio.errors import Forbidden, StudioError

from .models import MAX_RULES_PER_PROMPT, OnlineRule
from .scorers import clean_scorers


class RuleError(StudioError):
    """A rule the studio refuses; `field` names what to fix (`sample_rate`, `scorers[1].pattern`)."""


def require_editor(prompt: Prompt, user) -> None:
    """Rules read and change a prompt's live traffic: its owner, editors and staff only."""
    if not prompt.can_edit(user):
        raise Forbidden(
            f"Only the owner of “{prompt.slug}”, its editors and staff manage its online evaluation.", "prompt"
        )


def rule_create(
    *, user, prompt: Prompt, label=None, version=None, sample_rate, scorers, review_below=None
) -> OnlineRule:
    """A rule scoring a share of `prompt`'s replies asked under `label` (or of `version`, a number)."""
    require_editor(prompt, user)
    _require_room(prompt)  # before the checks that cost (a pattern compiled in a render process)
    label_name, prompt_version = _followed(prompt, label, version)
    rate = _fraction(sample_rate, "sample_rate", "the share of replies to score, from 0.0 (none) to 1.0 (all)")
    below = (
        None if review_below is None else _fraction(review_below, "review_below", "a score from 0.0 to 1.0, or null")
    )
    try:
        checked = clean_scorers(scorers, check_pattern=pattern_error)
    except ScorerError as exc:
        field, _, message = str(exc).partition(": ")
        raise RuleError(message, field, code=exc.code if exc.code != "invalid_scorer" else "") from None
    with transaction.atomic():
        # Counted again under the prompt's row lock: simultaneous requests cannot all pass the bound.
        Prompt.objects.select_for_update().filter(pk=prompt.pk).values_list("pk", flat=True).first()
        _require_room(prompt)
        return OnlineRule.objects.create(
            prompt=prompt,
            label=label_name,
            version=prompt_version,
            sample_rate=rate,
            scorers=checked,
            review_below=below,
            created_by=user,
        )


def _require_room(prompt: Prompt) -> None:
    if OnlineRule.objects.filter(prompt=prompt).count() >= MAX_RULES_PER_PROMPT:
        raise RuleError(
            f"“{prompt.slug}” has {MAX_RULES_PER_PROMPT} online evaluation rules already (at most "
            f"{MAX_RULES_PER_PROMPT} a prompt); delete one first",
            "prompt",
            code="too_many_rules",
        )


def _followed(prompt: Prompt, label, version) -> tuple[str, object]:
    """(label, None) or ("", the version): exactly one, and the prompt has it."""
    if (label in (None, "")) == (version in (None, "")):
        raise RuleError('give either "label" (e.g. "production") or "version" (a number), not both', "label")
    if label not in (None, ""):
        if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
            raise RuleError("a label: lower-case letters, digits, - and _ (40 at most)", "label")
        if label != LATEST and not prompt.labels.filter(name=label).exists():
            raise RuleError(f"“{prompt.slug}” has no label “{label}”", "label")
        return label, None
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
        raise RuleError("a version number", "version")
    found = prompt.versions.filter(number=version).first()
    if found is None:
        raise RuleError(f"“{prompt.slug}” has no version {version}", "version")
    return "", found


def _fraction(value, field: str, shape: str) -> float:
    if isinstance(value, str):  # a form's field
        try:
            value = float(value.strip())
        except ValueError:
            raise RuleError(f"must be a number: {shape}", field) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuleError(f"must be a number: {shape}", field)
    if not 0 <= value <= 1:
        raise RuleError(f"{value:g} is outside 0-1: {shape}", field)
    return float(value)


def rule_disable(*, rule: OnlineRule, user) -> OnlineRule:
    """It samples no more replies; what it scored stays on its page."""
    require_editor(rule.prompt, user)
    OnlineRule.objects.filter(pk=rule.pk).update(active=False)
    rule.active = False
    return rule


def rule_delete(*, rule: OnlineRule, user) -> None:
    """The rule goes with its samples and scores (samples still queued are skipped by the job worker)."""
    require_editor(rule.prompt, user)
    rule.delete()
