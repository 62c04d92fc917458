"""Reads of prompts and versions, and the tokenizer that counts rendered prompts."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.db.models import Count, Max

from studio.llm import ModelLoadError, PromptCounter, load_prompt_counter

from .models import LATEST, Prompt, PromptVersion

log = logging.getLogger("prompts")


class VersionNotFound(LookupError):
    pass


def prompts_list():
    return (Prompt.objects.select_related("owner")
            .annotate(version_count=Count("versions", distinct=True), latest_number=Max("versions__number"))
            .prefetch_related("labels__version"))


def prompt_by_slug(slug: str) -> Prompt | None:
    return Prompt.objects.select_related("owner").filter(slug=slug).first()


def version_resolve(prompt: Prompt, *, label: str | None = None, number=None) -> PromptVersion:
    """The version a label or number names; `latest` (or nothing) is the newest."""
    versions = prompt.versions.select_related("author", "prompt")
    if number not in (None, ""):
        try:
            return versions.get(number=int(number))
        except (ValueError, PromptVersion.DoesNotExist):
            raise VersionNotFound(f"Prompt “{prompt.slug}” has no version {number}.") from None
    if label and label != LATEST:
        found = versions.filter(labels__name=label).first()
        if found is None:
            raise VersionNotFound(f"Prompt “{prompt.slug}” has no label “{label}”.")
        return found
    return versions.order_by("-number").first()


def versions_of(prompt: Prompt):
    return prompt.versions.select_related("author").prefetch_related("labels").order_by("-number")


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
