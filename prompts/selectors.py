"""Reads of prompts and versions, and the tokenizer that counts rendered prompts."""

from __future__ import annotations

import functools
import logging
import re

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Count, Max

from studio.input_checks import whole_number_or_none
from studio.llm import ModelLoadError, PromptCounter, load_prompt_counter

from .models import LATEST, Prompt, PromptVersion

LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

log = logging.getLogger("prompts")


class VersionNotFound(LookupError):
    pass


def prompts_list():
    return (
        Prompt.objects.select_related("owner")
        .annotate(version_count=Count("versions", distinct=True), latest_number=Max("versions__number"))
        .prefetch_related("labels__version")
        .order_by("name", "id")
    )


def prompt_by_slug(slug: str) -> Prompt | None:
    return Prompt.objects.select_related("owner").filter(slug=slug).first()


def version_resolve(prompt: Prompt, *, label: str | None = None, number=None) -> PromptVersion:
    """The version a label or number names; `latest` (or nothing) is the newest."""
    versions = prompt.versions.select_related("author", "prompt")
    if number not in (None, ""):
        wanted = whole_number_or_none(number, high=2**31 - 1)  # the column's range
        found = versions.filter(number=wanted).first() if wanted is not None else None
        if found is None:
            raise VersionNotFound(f"Prompt “{prompt.slug}” has no version {str(number)[:20]}.")
        return found
    if label and label != LATEST:
        found = versions.filter(labels__name=label).first() if LABEL_PATTERN.fullmatch(label) else None
        if found is None:
            raise VersionNotFound(f"Prompt “{prompt.slug}” has no label “{label[:40]}”.")
        return found
    newest = versions.order_by("-number").first()
    if newest is None:  # a prompt is created with its first version; this guards rows made by hand
        raise VersionNotFound(f"Prompt “{prompt.slug}” has no versions yet.")
    return newest


PRODUCTION = "production"


def served_version(prompt: Prompt) -> PromptVersion:
    """The version `prompt:<slug>` serves: the one labelled `production`, else the newest. Fine-tunes
    train on it by default (they are served through it)."""
    return prompt.versions.select_related("author", "prompt").filter(
        labels__name=PRODUCTION
    ).first() or version_resolve(prompt)


VERSIONS_PER_PAGE = 50
VERSION_CHOICES = 100  # pickers list this many; prompts with more get a number field
LABEL_MOVES_PER_PAGE = 20
PROMPTS_PER_PAGE = 50


def versions_of(prompt: Prompt):
    return prompt.versions.select_related("author").prefetch_related("labels").order_by("-number")


def versions_page(prompt: Prompt, page=1):
    """One page of the history, newest first: a prompt may have tens of thousands of versions."""
    return Paginator(versions_of(prompt), VERSIONS_PER_PAGE).get_page(page)


def version_summary(prompt: Prompt) -> dict:
    """What the pickers need: the newest VERSION_CHOICES versions, the count and the newest number."""
    figures = prompt.versions.aggregate(version_count=Count("id"), latest_number=Max("number"))
    return {
        **figures,
        "version_choices": list(
            prompt.versions.only("id", "prompt_id", "number")
            .prefetch_related("labels")
            .order_by("-number")[:VERSION_CHOICES]
        ),
    }


def label_moves_page(prompt: Prompt, page=1):
    return Paginator(prompt.label_moves.select_related("moved_by"), LABEL_MOVES_PER_PAGE).get_page(page)


def prompts_page(page=1):
    return Paginator(prompts_list(), PROMPTS_PER_PAGE).get_page(page)


@functools.cache
def _counter_for(source: str, cache_dir: str) -> PromptCounter | None:
    return load_prompt_counter(source, cache_dir=cache_dir)


def prompt_counter() -> PromptCounter | None:
    """The configured model's tokenizer, or None until the worker has prepared the model."""
    try:
        counter = _counter_for(settings.LLM_MODEL, str(settings.LLM_MODEL_CACHE_DIR))
    except ModelLoadError as exc:
        log.warning("%s", exc)
        return None
    if counter is None:
        _counter_for.cache_clear()  # try again once the worker has converted the model
    return counter
