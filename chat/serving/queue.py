"""The queue of replies and the leases on them. The database row is the queue (the channel
layer only wakes workers, chat.serving.wakeups): conversations queue a reply by storing it
(chat.services), a model worker claims it, renews its lease while it writes and finishes it,
and the sweeper fails a reply whose lease lapsed. The order workers take replies in, and its
fairness, is here too.
"""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, IntegerField, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat.models import Conversation, Message, ModelWorker
from chat.signals import reply_finished

from .registry import workers_forget_silent


def queued_reply_deadline():
    """When a reply queued now is given up if no worker has claimed it (LLM_QUEUE_TIMEOUT_SECONDS):
    the lease a queued row holds until a worker's claim replaces it."""
    return timezone.now() + timedelta(seconds=settings.LLM_QUEUE_TIMEOUT_SECONDS)


# --- the order workers take replies in ------------------------------------------------------


def queued_in_serving_order():
    """Queued replies in the order workers take them (the database row is the queue; the channel
    layer only wakes workers): people at the page (chat, playground) before API requests, those
    before evaluations' cases; then the owner with the fewest replies being written first (one
    person's burst cannot starve the others), then oldest first."""
    writing = (
        Message.objects.filter(status=Message.Status.STREAMING, conversation__owner=OuterRef("conversation__owner"))
        .order_by()
        .values("conversation__owner")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Message.objects.filter(status=Message.Status.QUEUED)
        .annotate(
            priority=Case(
                When(conversation__kind=Conversation.Kind.API, then=Value(1)),
                When(conversation__kind=Conversation.Kind.EVALUATION, then=Value(2)),
                default=Value(0),
                output_field=IntegerField(),
            ),
            owner_writing=Subquery(writing, output_field=IntegerField()),
        )
        .order_by("priority", Coalesce("owner_writing", 0), "pk")
    )


def queue_position(*, message: Message) -> int:
    """1 for the next reply a worker takes (queued_in_serving_order)."""
    order = list(queued_in_serving_order().values_list("pk", flat=True)[:1000])
    return order.index(message.pk) + 1 if message.pk in order else len(order) + 1


def people_waiting_for_replies() -> bool:
    """Replies queued or being written for people (evaluations' are background work, left out)."""
    return (
        Message.objects.filter(status__in=Message.IN_PROGRESS)
        .exclude(conversation__kind=Conversation.Kind.EVALUATION)
        .exists()
    )


# --- claims and leases ---------------------------------------------------------------------


def reply_claim(*, message_id: int, worker_channel: str, model_name: str) -> Message | None:
    """A worker takes a queued reply. None when it was stopped, failed or taken meanwhile."""
    claimed = Message.objects.filter(pk=message_id, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING,
        worker_channel=worker_channel,
        # A reply being continued keeps the model that wrote its start.
        model_name=Case(When(model_name="", then=Value(model_name)), default=F("model_name")),
        lease_expires_at=_lease_end(),
    )
    if not claimed:
        return None
    # The worker reads the conversation and, started from a prompt, its version next.
    return Message.objects.select_related("conversation__prompt_version").get(pk=message_id)


def reply_claim_next(*, worker_channel: str, default_model: str, background: bool = True) -> Message | None:
    """The next queued reply in serving order, claimed by this worker; None when none is waiting.
    Without `background`, evaluation cases are left for later (the worker's share of them is full).
    A row another worker claims at the same instant is skipped (the update is conditional)."""
    if not Message.objects.filter(status=Message.Status.QUEUED).exists():  # the usual answer, cheaply
        return None
    queued = queued_in_serving_order()
    if not background:
        queued = queued.exclude(conversation__kind=Conversation.Kind.EVALUATION)
    for message_id, asked, requested in queued.values_list("pk", "requested_model", "conversation__model_name")[:20]:
        message = reply_claim(
            message_id=message_id, worker_channel=worker_channel, model_name=asked or requested or default_model
        )
        if message is not None:
            return message
    return None


def replies_queued_by(*, user) -> int:
    return Message.objects.filter(status=Message.Status.QUEUED, conversation__owner=user).count()


def reply_renew_lease(*, message_id: int, content: str) -> bool:
    """Keep a streaming reply alive and save its text so far (a crash keeps it)."""
    renewed = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        lease_expires_at=_lease_end(), content=content
    )
    return renewed == 1


def replies_save_text(*, texts: dict[int, str]) -> set[int]:
    """Store the text of replies being written, in one transaction, before it is sent: what a
    person saw is stored even if the worker is killed the next instant. Returns the ids stored:
    a reply missing from them is no longer being written (the sweeper failed it after its lease
    lapsed, or it was deleted), and its text must not be sent."""
    stored = set()
    with transaction.atomic():
        for message_id, content in texts.items():
            if Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(content=content):
                stored.add(message_id)
    return stored


def reply_finish(
    *,
    message_id: int,
    content: str,
    status: str,
    usage: dict,
    error: str = "",
    error_code: str = "",
    parameters: dict | None = None,
    finish_reason: str = "",
) -> bool:
    """Store the final text and figures (for a continued reply, its whole text and the figures of
    all its parts: `usage` is summed by the worker) and, when it failed, why (`error_code`, as the
    worker tells its tabs). False when the reply was already failed by the sweeper."""
    finished = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=content,
        status=status,
        finish_reason=finish_reason,
        error=error,
        error_code=error_code if status == Message.Status.FAILED else "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        ttft_ms=usage.get("ttft_ms"),
        tokens_per_s=usage.get("tokens_per_s"),
        parameters=parameters or {},
        lease_expires_at=None,
        finished_at=timezone.now(),
    )
    if finished == 1:
        transaction.on_commit(lambda: reply_finished.send(sender=Message, message_id=message_id))
    return finished == 1


WORKER_LOST_ERROR = "The model worker stopped while writing this reply. Regenerate to try again."
LOAD_FAILED_ERROR = (
    "No model worker could take this message: {error} An admin must fix the worker's model and restart it."
)
NO_WORKER_ERROR = (
    "No model worker is running, so nobody picked up this message. Start one (`make worker`) and send it again."
)
BUSY_ERROR = (
    "The model stayed busy: this reply waited {minutes} min behind others and was given up. "
    "Send it again (or ask an admin for another model worker)."
)


def replies_fail_expired(*, conversation_id: int | None = None) -> list[Message]:
    """Fail replies whose lease ran out: their worker died, or no worker ever came."""
    now = timezone.now()
    expired = Message.objects.filter(status__in=Message.IN_PROGRESS, lease_expires_at__lt=now)
    if conversation_id is not None:
        expired = expired.filter(conversation_id=conversation_id)
    failed = []
    for message in expired:
        if message.status == Message.Status.STREAMING:
            code, error = Message.ErrorCode.WORKER_LOST, WORKER_LOST_ERROR
        elif ModelWorker.objects.filter(
            state=ModelWorker.State.READY, last_seen_at__gte=now - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)
        ).exists():
            code, error = (
                Message.ErrorCode.BUSY,
                BUSY_ERROR.format(minutes=max(1, round(settings.LLM_QUEUE_TIMEOUT_SECONDS / 60))),
            )
        elif unhealthy := ModelWorker.objects.filter(state=ModelWorker.State.FAILED).exclude(error="").first():
            code, error = (
                Message.ErrorCode.LOAD_FAILED,
                LOAD_FAILED_ERROR.format(error=unhealthy.error.rstrip(".") + "."),
            )
        else:
            code, error = Message.ErrorCode.NO_WORKER, NO_WORKER_ERROR
        # Conditional on the status we read, so a worker finishing at this instant wins.
        updated = Message.objects.filter(pk=message.pk, status=message.status, lease_expires_at__lt=now).update(
            status=Message.Status.FAILED, error=error, error_code=code, lease_expires_at=None, finished_at=now
        )
        if updated:
            message.refresh_from_db()
            failed.append(message)
            transaction.on_commit(lambda pk=message.pk: reply_finished.send(sender=Message, message_id=pk))
    return failed


def replies_sweep() -> None:
    """The sweeper's part for chat (studio.sweeping): replies whose lease lapsed are failed and
    their tabs told; workers that stopped heart-beating are forgotten."""
    layer = get_channel_layer()
    for message in replies_fail_expired():
        try:
            async_to_sync(layer.group_send)(
                message.conversation.group_name,
                {
                    "type": "chat.done",
                    "message_id": message.pk,
                    "status": message.status,
                    "usage": message.usage(),
                    "error": message.error,
                    "error_code": message.error_code,
                },
            )
        except Exception:  # the layer is away: the tab reads the failed reply when it (re)connects
            pass
    workers_forget_silent()


def _lease_end():
    return timezone.now() + timedelta(seconds=settings.LLM_LEASE_SECONDS)


# --- taken out of the queue before a worker claims them ---------------------------------------


def reply_stop_if_queued(*, message: Message) -> bool:
    """Stop a reply no worker has claimed yet. False when a worker already holds it. A reply queued
    to be continued goes back to what it was (cut, its text whole): nothing was added to stop."""
    now = timezone.now()
    continued = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED, finish_reason="length").update(
        status=Message.Status.COMPLETE, lease_expires_at=None
    )
    stopped = continued or Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.STOPPED, finished_at=now, lease_expires_at=None
    )
    return stopped == 1


def replies_withdraw(*, message_ids) -> list[Message]:
    """Stop the given replies that are still queued; return those a worker is writing (to be told
    to stop)."""
    Message.objects.filter(pk__in=message_ids, status=Message.Status.QUEUED).update(
        status=Message.Status.STOPPED, finished_at=timezone.now(), lease_expires_at=None
    )
    return list(Message.objects.filter(pk__in=message_ids, status=Message.Status.STREAMING))
