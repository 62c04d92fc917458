"""A/B tests: a prompt's `prompt:<slug>` traffic split between its labels by weight (the issue's
"A/B tests"). The OpenAI-compatible API asks `active_split` which label serves each request
(`PromptSplit.variant_for`, sticky per end user); this module sets, ends and promotes splits.

The comparison of the variants' traffic is read from monitoring's rollups, an app above this one:
monitoring registers its reader here (`register_comparison`), as evals registers its example
provider with prompts.examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .models import LATEST, Prompt, PromptLabel, PromptSplit
from .selectors import PRODUCTION
from .services import PromptError, label_move, require_editor

MAX_VARIANTS = 10
WEIGHT_TOLERANCE = 1e-6  # weights given as 0.7, 0.2 and 0.1 add up to 0.9999999999999999
SHAPE = '[{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}]'


class NoSplit(PromptError):
    status = 404


def active_split(prompt: Prompt) -> PromptSplit | None:
    """The split running on the prompt, if any (one query: asked on every `prompt:<slug>` request)."""
    return PromptSplit.objects.filter(prompt=prompt, ended_at=None).select_related("prompt", "created_by").first()


def split_in_window(prompt: Prompt, since: datetime) -> PromptSplit | None:
    """The split to compare for a window starting at `since`: the running one, else the latest
    that ended inside the window (a split just promoted keeps its figures on the monitoring page)."""
    return active_split(prompt) or (
        PromptSplit.objects.filter(prompt=prompt, ended_at__gte=since)
        .select_related("prompt", "created_by")
        .order_by("-ended_at", "-id")
        .first()
    )


def clean_variants(prompt: Prompt, raw) -> list[dict]:
    """The variants of a split, checked: 2 to MAX_VARIANTS labels of the prompt, each once, with
    weights above 0 adding up to 1, pointing at two versions at least. PromptError names the field
    (`variants[1].label`)."""
    if not isinstance(raw, list) or not raw:
        raise PromptError(f"must be a list of labels with weights, e.g. {SHAPE}", "variants")
    if len(raw) > MAX_VARIANTS:
        raise PromptError(f"holds {len(raw)} variants; a split has at most {MAX_VARIANTS}", "variants")
    if prompt.versions.count() < 2:
        raise PromptError(f"a split needs two versions: “{prompt.name}” has one", "variants")
    labels = {
        label.name: label.version for label in PromptLabel.objects.filter(prompt=prompt).select_related("version")
    }
    clean = []
    for n, variant in enumerate(raw):
        at = f"variants[{n}]"
        if not isinstance(variant, dict) or set(variant) - {"label", "weight"}:
            raise PromptError('must be an object {"label": ..., "weight": ...}', at)
        name, weight = variant.get("label"), variant.get("weight")
        if not isinstance(name, str) or not name.strip():
            raise PromptError("must be the name of one of the prompt's labels", f"{at}.label")
        name = name.strip()
        if name == LATEST:
            raise PromptError(
                "“latest” moves with every new version: point a label at the version to test", f"{at}.label"
            )
        if name not in labels:
            known = ", ".join(sorted(labels)) or "none yet"
            raise PromptError(f"“{name[:40]}” is not a label of this prompt (its labels: {known})", f"{at}.label")
        if any(earlier["label"] == name for earlier in clean):
            raise PromptError(f"names “{name}” a second time", f"{at}.label")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise PromptError("must be a number above 0 (the variant's share of the requests)", f"{at}.weight")
        clean.append({"label": name, "weight": float(weight)})
    if len(clean) < 2:
        raise PromptError("a split needs two variants at least", "variants")
    total = sum(variant["weight"] for variant in clean)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise PromptError(f"the weights add up to {total:g}; they must add up to 1", "variants")
    versions = {labels[variant["label"]].number for variant in clean}
    if len(versions) < 2:
        raise PromptError(
            f"the labels all point at v{versions.pop()}: a split needs two versions (move a label first)", "variants"
        )
    return clean


def split_set(*, prompt: Prompt, variants, user) -> PromptSplit:
    """Start a split of the prompt's `prompt:<slug>` traffic; one already running ends here (its
    window closes, and the new one's comparison starts from now)."""
    require_editor(prompt, user)
    clean = clean_variants(prompt, variants)
    now = timezone.now()
    with transaction.atomic():
        # Two editors starting splits at once: the prompt's row orders them (the unique constraint
        # would refuse the second otherwise).
        Prompt.objects.select_for_update().get(pk=prompt.pk)
        PromptSplit.objects.filter(prompt=prompt, ended_at=None).update(ended_at=now, ended_by=user)
        return PromptSplit.objects.create(prompt=prompt, variants=clean, created_by=user, created_at=now)


def split_end(*, prompt: Prompt, user) -> PromptSplit:
    """End the running split: `prompt:<slug>` serves its `production` label (else the newest) again."""
    require_editor(prompt, user)
    with transaction.atomic():
        split = _running_split_locked(prompt)
        split.ended_at, split.ended_by = timezone.now(), user
        split.save(update_fields=["ended_at", "ended_by"])
    return split


def split_promote(*, prompt: Prompt, label: str, user) -> tuple[PromptSplit, PromptLabel]:
    """Move `production` to the version `label` serves now (recorded in the label history, as any
    move) and end the split. Promoting the variant that is production already only ends it."""
    require_editor(prompt, user)
    with transaction.atomic():
        # Two people promoting at once (two variants, or twice the same): the first ends the split
        # under this lock, and the second is told there is no split running any more.
        split = _running_split_locked(prompt)
        if not isinstance(label, str) or label.strip() not in split.labels:
            raise PromptError(f"must be one of the split's variants: {', '.join(split.labels)}", "label")
        label = label.strip()
        variant = PromptLabel.objects.select_related("version").filter(prompt=prompt, name=label).first()
        if variant is None:  # labels are never deleted alone; this guards rows changed by hand
            raise PromptError(f"“{label}” is no longer a label of this prompt", "label")
        production = label_move(prompt=prompt, name=PRODUCTION, version=variant.version, user=user)
        split.ended_at, split.ended_by, split.promoted_label = timezone.now(), user, label
        split.save(update_fields=["ended_at", "ended_by", "promoted_label"])
    return split, production


def _running_split_locked(prompt: Prompt) -> PromptSplit:
    split = PromptSplit.objects.select_for_update().filter(prompt=prompt, ended_at=None).first()
    if split is None:
        raise NoSplit(f"“{prompt.name}” has no split running")
    return split


def variant_versions(prompt: Prompt, split: PromptSplit) -> dict[str, int]:
    """The version each variant's label points at now (label → number)."""
    return dict(PromptLabel.objects.filter(prompt=prompt, name__in=split.labels).values_list("name", "version__number"))


# --- the comparison, read by monitoring -----------------------------------------------------------

ComparisonReader = Callable[..., "dict | None"]  # (prompt, since, until) -> the comparison, or None
_comparison_reader: ComparisonReader | None = None


def register_comparison(reader: ComparisonReader) -> None:
    global _comparison_reader
    _comparison_reader = reader


def comparison_for(prompt: Prompt, since: datetime, until: datetime) -> dict | None:
    """The variants' figures side by side (monitoring.comparison), or None without a reader."""
    return _comparison_reader(prompt, since, until) if _comparison_reader is not None else None
