"""Reads of conversations and messages, planned once for every entry point."""

from __future__ import annotations

from datetime import timedelta

import functools
from pathlib import Path

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Case, Count, IntegerField, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce

from studio.llm.adapters import adapter_folders
from studio.llm.loading import ModelLoadError, prepare_model_folder
from django.utils import timezone

from prompts.rendering import assembled_messages

from .models import Conversation, Message, ModelWorker


CONVERSATIONS_PER_PAGE = 50


# What the sidebar can list: chats, requests to the OpenAI-compatible API, an evaluation's cases
# while they are answered (playground runs live on their prompt's page).
LISTED_KINDS = (Conversation.Kind.CHAT, Conversation.Kind.API, Conversation.Kind.EVALUATION)


def conversations_for(*, user, kind: str = Conversation.Kind.CHAT):
    return Conversation.objects.filter(owner=user, kind=kind).only("id", "title", "updated_at", "kind")


def conversations_page(*, user, page=1, current_id=None, kind: str = Conversation.Kind.CHAT):
    """One page of the sidebar, newest first (older pages load on demand). A conversation nobody
    wrote in, renamed or gave a system prompt is left out (unless it is the one open): clicking
    "New chat" twice must not pile up empty conversations."""
    kind = kind if kind in LISTED_KINDS else Conversation.Kind.CHAT
    listed = conversations_for(user=user, kind=kind).exclude(
        pk__in=Conversation.objects.untouched().filter(owner=user).exclude(pk=current_id).values("pk"))
    paged = Paginator(listed, CONVERSATIONS_PER_PAGE).get_page(page)
    paged.kind = kind
    return paged


def conversation_for(*, user, conversation_id) -> Conversation | None:
    """The user's own conversation, or None (never someone else's)."""
    if not getattr(user, "is_authenticated", False):
        return None
    try:
        if not 0 < int(conversation_id) < 2**63:  # beyond the database's integers: no such row
            return None
    except (TypeError, ValueError):
        return None
    return Conversation.objects.select_related("prompt_version__prompt").filter(owner=user, pk=conversation_id).first()


def messages_of(*, conversation: Conversation):
    return conversation.messages.all()


def queued_in_serving_order():
    """Queued replies in the order workers take them (the database row is the queue; the channel
    layer only wakes workers): people at the page (chat, playground) before API requests, those
    before evaluations' cases; then the owner with the fewest replies being written first (one
    person's burst cannot starve the others), then oldest first."""
    writing = (Message.objects.filter(status=Message.Status.STREAMING, conversation__owner=OuterRef("conversation__owner"))
               .order_by().values("conversation__owner").annotate(n=Count("pk")).values("n"))
    return (Message.objects.filter(status=Message.Status.QUEUED)
            .annotate(priority=Case(When(conversation__kind=Conversation.Kind.API, then=Value(1)),
                                    When(conversation__kind=Conversation.Kind.EVALUATION, then=Value(2)),
                                    default=Value(0), output_field=IntegerField()),
                      owner_writing=Subquery(writing, output_field=IntegerField()))
            .order_by("priority", Coalesce("owner_writing", 0), "pk"))


def queue_position(*, message: Message) -> int:
    """1 for the next reply a worker takes (queued_in_serving_order)."""
    order = list(queued_in_serving_order().values_list("pk", flat=True)[:1000])
    return order.index(message.pk) + 1 if message.pk in order else len(order) + 1


def reply_in_progress(*, conversation_id: int) -> Message | None:
    return Message.objects.filter(conversation_id=conversation_id, status__in=Message.IN_PROGRESS).first()


def chat_history_before(*, message: Message) -> list[dict]:
    """What the model reads to write `message`: the system prompt, the prompt version's
    few-shot examples (a conversation started from one), then earlier turns.

    Failed replies and empty stopped ones are left out: they are not part of the dialogue.
    """
    conversation = message.conversation
    earlier = conversation.messages.filter(pk__lt=message.pk).exclude(status=Message.Status.FAILED).exclude(
        content="").only("role", "content")
    return assembled_messages(system=conversation.system_prompt,
                              examples=conversation.prompt_version.examples if conversation.prompt_version else (),
                              turns=[{"role": m.role, "content": m.content} for m in earlier])


@functools.cache
def _base_model_name(source: str, cache_dir: str) -> str:
    try:
        return prepare_model_folder(source, Path(cache_dir), convert=False)[1]
    except ModelLoadError:
        return source


def base_model_name() -> str:
    if settings.LLM_ENGINE == "openai":  # an external engine: the name its workers announced
        announced = ModelWorker.objects.filter(state=ModelWorker.State.READY).exclude(model_name="").values_list(
            "model_name", flat=True).first()
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


def workers_online() -> list[ModelWorker]:
    recent = timezone.now() - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)
    return list(ModelWorker.objects.filter(last_seen_at__gte=recent))


def output_format_for(*, message: Message) -> dict | None:
    """The shape the reply must take: what an API request or an evaluation asked for, else its
    conversation's prompt version's output format; None for free text."""
    conversation = message.conversation
    asked = (conversation.parameters or {}).get("output_format")
    output_format = asked or (conversation.prompt_version.answer_format if conversation.prompt_version else None)
    return None if not output_format or output_format.get("type") == "text" else output_format


def generation_overrides(*, message: Message) -> dict:
    """The generation parameters for this reply: an API request's own, over its prompt version's,
    over the studio's defaults (none given: the defaults)."""
    version = message.conversation.prompt_version
    overrides = {}
    if version is not None:
        overrides = {"temperature": version.temperature, "top_p": version.top_p,
                     "max_new_tokens": version.max_new_tokens}
        overrides = {name: value for name, value in overrides.items() if value is not None}
        if version.stop:
            overrides["stop"] = tuple(version.stop)
    asked = message.conversation.parameters or {}
    overrides.update({name: value for name, value in asked.items() if name not in ("stop", "output_format")})
    if asked.get("stop"):
        overrides["stop"] = tuple(asked["stop"])
    return overrides
