"""The models served and the workers serving them: the base model's name, the fine-tuned
adapters beside it, how a conversation stores the model it asks for, and the workers' heartbeats
(a worker announces itself, its state and its model; one that stops heart-beating is forgotten).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from chat.models import ModelWorker
from studio.llm.adapters import adapter_folders
from studio.llm.loading import ModelLoadError, prepare_model_folder


@functools.cache
def _base_model_name(source: str, cache_dir: str) -> str:
    try:
        return prepare_model_folder(source, Path(cache_dir), convert=False)[1]
    except ModelLoadError:
        return source


def base_model_name() -> str:
    if settings.LLM_ENGINE == "openai":  # an external engine: the name its workers announced
        announced = (
            ModelWorker.objects.filter(state=ModelWorker.State.READY)
            .exclude(model_name="")
            .values_list("model_name", flat=True)
            .first()
        )
        return settings.LLM_ENGINE_MODEL or announced or "external"
    return _base_model_name(settings.LLM_MODEL, str(settings.LLM_MODEL_CACHE_DIR))


def available_models() -> list[str]:
    """What chat, the playground and evaluations can ask for: the served base model first, then
    the adapters fine-tuned on it (their files in STUDIO_ADAPTERS_DIR)."""
    base = base_model_name()
    return [base, *adapter_folders(settings.STUDIO_ADAPTERS_DIR, base)]


def served_model_choice(model_name: str, available: list[str] | None = None) -> str | None:
    """How a conversation stores the model it asks for: "" for the served base model (asked by its
    name or by ""), a fine-tuned model's name as it is, None for a model that is not served."""
    available = available if available is not None else available_models()
    if model_name in ("", available[0]):
        return ""
    return model_name if model_name in available[1:] else None


def available_served_model(model_name: str) -> str:
    """A version (or playground, or evaluation) naming a model: that fine-tuned model if it is
    served, else "" (the base model)."""
    return served_model_choice(model_name) or ""


def workers_online() -> list[ModelWorker]:
    recent = timezone.now() - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)
    return list(ModelWorker.objects.filter(last_seen_at__gte=recent))


def worker_heartbeat(
    *,
    channel_name: str,
    hostname: str,
    pid: int,
    state: str,
    model_name: str = "",
    description: str = "",
    error: str = "",
) -> None:
    ModelWorker.objects.update_or_create(
        channel_name=channel_name,
        defaults=dict(
            hostname=hostname,
            pid=pid,
            state=state,
            model_name=model_name,
            description=description,
            error=error,
            last_seen_at=timezone.now(),
        ),
    )


def worker_forget(*, channel_name: str) -> None:
    ModelWorker.objects.filter(channel_name=channel_name).delete()


def workers_forget_silent() -> None:
    """Drop workers that stopped heart-beating (killed without saying goodbye)."""
    ModelWorker.objects.filter(
        last_seen_at__lt=timezone.now() - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)
    ).delete()
