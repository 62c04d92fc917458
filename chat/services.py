"""Writes to conversations and messages. Consumers, views and the model worker call these."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from studio.errors import StudioError
from studio.input_checks import unstorable_reason

from .models import Conversation, Message, ModelWorker

TITLE_MAX_CHARS = 200
TITLE_FROM_MESSAGE_CHARS = 60


class ChatError(StudioError):
    """A request the chat refuses; the message is shown to the person as it is."""


def conversation_create(*, owner, title: str = "", system_prompt: str = "") -> Conversation:
    _require_storable(title, "The title")
    _require_storable(system_prompt, "The system prompt")
    conversation = Conversation(owner=owner, system_prompt=system_prompt)
    if title.strip():
        conversation.title = _clean_title(title)
    conversation.save()
    # "New chat" clicks that never led anywhere: nothing lists them (chat.selectors), and a day
    # later they go.
    Conversation.objects.untouched().filter(owner=owner, updated_at__lt=timezone.now() - timedelta(days=1)).delete()
    return conversation


def user_turn_from_template(*, prompt_version, variables: dict) -> str:
    """`prompt_version`'s template rendered with `variables`, checked as a message. Raises the
    rendering's errors (a missing variable, a template that fails) or ChatError."""
    from prompts.rendering import render_user_turn

    for name, value in variables.items():
        _require_storable(value if isinstance(value, str) else "", f"The variable {name}")
    user_turn = render_user_turn(prompt_version.template, variables)
    _require_storable(user_turn, "The rendered message")
    if len(user_turn) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(f"The rendered message is {len(user_turn):,} characters; the limit is "
                        f"{settings.CHAT_MAX_MESSAGE_CHARS:,}.")
    return user_turn


def conversation_start_from_prompt(*, owner, prompt_version, variables: dict, kind: str = Conversation.Kind.CHAT,
                                    model_name: str = "", template_every_turn: bool = False
                                    ) -> tuple[Conversation, Message]:
    """A conversation whose first turn is `prompt_version` rendered with `variables`.

    The instructions become the system prompt, the few-shot examples stay with the version
    (every reply reads them), and the rendered user turn is sent: returns the queued reply.
    `template_every_turn` (a template of one variable): later messages go through it too.
    Raises the rendering's errors (a missing variable, a template that fails).
    """
    user_turn = user_turn_from_template(prompt_version=prompt_version, variables=variables)
    kept = {name: value for name, value in variables.items() if name in prompt_version.variables}
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner, kind=kind, system_prompt=prompt_version.instructions, prompt_version=prompt_version,
            model_name=available_served_model(model_name or prompt_version.model_name), prompt_variables=kept,
            template_every_turn=template_every_turn and len(prompt_version.variables) == 1,
            title=_clean_title(f"{prompt_version.prompt.name} v{prompt_version.number}"),
        )
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=user_turn, variables=kept)
        assistant_message = _queue_reply(conversation)
    return conversation, assistant_message


def conversation_update(*, conversation: Conversation, title: str | None = None, system_prompt: str | None = None):
    fields = ["updated_at"]
    if title is not None:
        _require_storable(title, "The title")
        if not title.strip():
            raise ChatError("A conversation needs a title.")
        conversation.title = _clean_title(title)
        fields.append("title")
    if system_prompt is not None:
        _require_storable(system_prompt, "The system prompt")
        if len(system_prompt) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise ChatError(f"The system prompt is longer than {settings.CHAT_MAX_MESSAGE_CHARS} characters.")
        conversation.system_prompt = system_prompt
        fields.append("system_prompt")
    conversation.save(update_fields=fields)
    return conversation


def conversation_choose_model(*, conversation: Conversation, model_name: str) -> Conversation:
    """The model the conversation's next replies come from: the served base model or a fine-tuned one."""
    from .selectors import available_models, served_model_choice

    available = available_models()
    chosen = served_model_choice(model_name, available)
    if chosen is None:
        raise ChatError(f"There is no model “{model_name[:100]}”; choose one of {', '.join(available)}.")
    if conversation.model_name != chosen:
        conversation.model_name = chosen
        conversation.save(update_fields=["model_name", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def reply_request(*, conversation: Conversation, content: str) -> tuple[Message, Message]:
    """Store the user's message and a queued assistant reply for a model worker to claim."""
    if not isinstance(content, str) or not content.strip():
        raise ChatError("The message is empty.")
    _require_storable(content, "The message")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            f"The message is {len(content):,} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,}."
        )
    variables = {}
    version = conversation.prompt_version
    if conversation.template_every_turn and version is not None and len(version.variables) == 1:
        from prompts.rendering import MissingVariablesError, TemplateError

        variables = {version.variables[0]: content}
        try:
            content = user_turn_from_template(prompt_version=version, variables=variables)
        except (MissingVariablesError, TemplateError) as exc:
            raise ChatError(f"The message could not go through the prompt's template: {exc}") from None
    try:
        with transaction.atomic():
            user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content,
                                                  variables=variables)
            assistant_message = _queue_reply(conversation)
    except IntegrityError:
        # The partial unique constraint caught a reply already in progress (also from
        # another tab sending at the same instant).
        raise ChatError("The model is still answering: wait for the reply or stop it.") from None
    fields = ["updated_at"]
    if conversation.prompt_version_id is None and not conversation.messages.exclude(
            pk=user_message.pk).filter(role=Message.Role.USER).exists():
        conversation.title = _clean_title(content)[:TITLE_FROM_MESSAGE_CHARS]
        fields.append("title")
    conversation.save(update_fields=fields)
    return user_message, assistant_message


def reply_regenerate(*, conversation: Conversation) -> tuple[int, Message]:
    """Replace the last reply with a new one. Returns (removed reply's id, queued reply)."""
    last = conversation.messages.order_by("-id").first()
    if last is None or last.role != Message.Role.ASSISTANT:
        raise ChatError("There is no reply to regenerate yet.")
    if last.in_progress:
        raise ChatError("The model is still answering: wait for the reply or stop it.")
    try:
        with transaction.atomic():
            removed_id = last.pk
            last.delete()
            return removed_id, _queue_reply(conversation)
    except IntegrityError:
        raise ChatError("The model is still answering: wait for the reply or stop it.") from None


def reply_request_unlisted(*, owner, kind: str, messages: list[dict], model_name: str, parameters: dict,
                           title: str = "", job: str = "") -> Message:
    """A conversation no list shows (an evaluation's case) holding `messages` exactly as the model
    is to read them (system messages become its system prompt), and its queued reply. `job` names
    what it answers for (conversations_withdraw)."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner, kind=kind, title=_clean_title(title) or Conversation.DEFAULT_TITLE, job=job,
            system_prompt="\n\n".join(m["content"] for m in messages if m["role"] == "system"),
            model_name=available_served_model(model_name), parameters=parameters)
        Message.objects.bulk_create([Message(conversation=conversation, role=m["role"], content=m["content"])
                                     for m in messages if m["role"] != "system"])
        return _queue_reply(conversation)


def replies_withdraw(*, message_ids) -> list[Message]:
    """Stop the given replies that are still queued; return those a worker is writing (to be told
    to stop)."""
    Message.objects.filter(pk__in=message_ids, status=Message.Status.QUEUED).update(
        status=Message.Status.STOPPED, finished_at=timezone.now(), lease_expires_at=None)
    return list(Message.objects.filter(pk__in=message_ids, status=Message.Status.STREAMING))


def conversations_withdraw(*, job: str) -> list[Message]:
    """A job ended (or its worker died): its unlisted conversations go, their queued replies with
    them. Returns the replies a model worker is writing, to be told to stop."""
    conversations = Conversation.objects.filter(job=job)
    streaming = replies_withdraw(message_ids=Message.objects.filter(conversation__in=conversations).values("pk"))
    conversations.delete()
    return streaming


def _queue_reply(conversation: Conversation) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        lease_expires_at=timezone.now() + timedelta(seconds=settings.LLM_QUEUE_TIMEOUT_SECONDS),
    )


def reply_stop_if_queued(*, message: Message) -> bool:
    """Stop a reply no worker has claimed yet. False when a worker already holds it."""
    stopped = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.STOPPED, finished_at=timezone.now(), lease_expires_at=None
    )
    return stopped == 1


def reply_claim(*, message_id: int, worker_channel: str, model_name: str) -> Message | None:
    """A worker takes a queued reply. None when it was stopped, failed or taken meanwhile."""
    claimed = Message.objects.filter(pk=message_id, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING,
        worker_channel=worker_channel,
        model_name=model_name,
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
    from .selectors import queued_in_serving_order

    queued = queued_in_serving_order()
    if not background:
        queued = queued.exclude(conversation__kind=Conversation.Kind.EVALUATION)
    for message_id, requested in queued.values_list("pk", "conversation__model_name")[:20]:
        message = reply_claim(message_id=message_id, worker_channel=worker_channel,
                              model_name=requested or default_model)
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


def replies_save_text(*, texts: dict[int, str]) -> None:
    """Store the text of replies being written, in one transaction, before it is sent: what a
    person saw is stored even if the worker is killed the next instant."""
    with transaction.atomic():
        for message_id, content in texts.items():
            Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(content=content)


def reply_finish(*, message_id: int, content: str, status: str, usage: dict, error: str = "") -> bool:
    """Store the final text and figures. False when the reply was already failed by the sweeper."""
    finished = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=content,
        status=status,
        error=error,
        error_code=Message.ErrorCode.MODEL_FAILED if status == Message.Status.FAILED else "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        ttft_ms=usage.get("ttft_ms"),
        tokens_per_s=usage.get("tokens_per_s"),
        lease_expires_at=None,
        finished_at=timezone.now(),
    )
    return finished == 1


WORKER_LOST_ERROR = "The model worker stopped while writing this reply. Regenerate to try again."
LOAD_FAILED_ERROR = "No model worker could take this message: {error} An admin must fix the worker's model and restart it."
NO_WORKER_ERROR = "No model worker is running, so nobody picked up this message. Start one (`make worker`) and send it again."
BUSY_ERROR = ("The model stayed busy: this reply waited {minutes} min behind others and was given up. "
              "Send it again (or ask an admin for another model worker).")


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
        elif ModelWorker.objects.filter(state=ModelWorker.State.READY,
                                        last_seen_at__gte=now - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)).exists():
            code, error = Message.ErrorCode.BUSY, BUSY_ERROR.format(
                minutes=max(1, round(settings.LLM_QUEUE_TIMEOUT_SECONDS / 60)))
        elif unhealthy := ModelWorker.objects.filter(state=ModelWorker.State.FAILED).exclude(error="").first():
            code, error = Message.ErrorCode.LOAD_FAILED, LOAD_FAILED_ERROR.format(error=unhealthy.error.rstrip(".") + ".")
        else:
            code, error = Message.ErrorCode.NO_WORKER, NO_WORKER_ERROR
        # Conditional on the status we read, so a worker finishing at this instant wins.
        updated = Message.objects.filter(pk=message.pk, status=message.status, lease_expires_at__lt=now).update(
            status=Message.Status.FAILED, error=error, error_code=code, lease_expires_at=None, finished_at=now
        )
        if updated:
            message.refresh_from_db()
            failed.append(message)
    return failed


def replies_sweep() -> None:
    """The sweeper's part for chat (studio.sweeping): replies whose lease lapsed are failed and
    their tabs told; workers that stopped heart-beating are forgotten."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    for message in replies_fail_expired():
        try:
            async_to_sync(layer.group_send)(message.conversation.group_name, {
                "type": "chat.done", "message_id": message.pk, "status": message.status, "usage": message.usage(),
                "error": message.error})
        except Exception:  # the layer is away: the tab reads the failed reply when it (re)connects
            pass
    workers_forget_silent()


def worker_heartbeat(*, channel_name: str, hostname: str, pid: int, state: str, model_name: str = "",
                     description: str = "", error: str = "") -> None:
    ModelWorker.objects.update_or_create(
        channel_name=channel_name,
        defaults=dict(hostname=hostname, pid=pid, state=state, model_name=model_name,
                      description=description, error=error, last_seen_at=timezone.now()),
    )


def worker_forget(*, channel_name: str) -> None:
    ModelWorker.objects.filter(channel_name=channel_name).delete()


def workers_forget_silent() -> None:
    """Drop workers that stopped heart-beating (killed without saying goodbye)."""
    ModelWorker.objects.filter(last_seen_at__lt=timezone.now() - timedelta(seconds=3 * settings.LLM_LEASE_SECONDS)).delete()


def _lease_end():
    return timezone.now() + timedelta(seconds=settings.LLM_LEASE_SECONDS)


def available_served_model(model_name: str) -> str:
    """A version (or playground, or evaluation) naming a model: that fine-tuned model if it is
    served, else "" (the base model)."""
    from .selectors import served_model_choice

    return served_model_choice(model_name) or ""


def _require_storable(text: str, what: str) -> None:
    reason = unstorable_reason(text)
    if reason:
        raise ChatError(f"{what} {reason}.")


def _clean_title(title: str) -> str:
    return " ".join(title.split())[:TITLE_MAX_CHARS]
