"""Writes to conversations and messages: consumers, views, the API and jobs call these. A reply is
queued here (a stored row); claiming, writing and finishing it is serving (chat/serving/)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from knowledge.models import Document, KnowledgeBase
from knowledge.retrieval import NOTHING_FOUND_REPLY, RetrievalRecord
from prompts.examples import examples_for
from prompts.rendering import MissingVariablesError, TemplateError, render_version_turn
from studio.errors import StudioError
from studio.input_checks import unstorable_reason
from studio.llm.tools import read_reply, responses_text, tool_results_in

from .models import ChatDefaults, Conversation, Message
from .retrieval import clean_conversation_settings, reply_retrieval
from .sampling import clean_sampling
from .selectors import Branches, active_messages, output_format_for
from .serving.queue import queued_reply_deadline, replies_withdraw
from .serving.registry import available_models, available_served_model, served_model_choice
from .signals import feedback_changed

TITLE_MAX_CHARS = 200
TITLE_FROM_MESSAGE_CHARS = 60


class ChatError(StudioError):
    """A request the chat refuses; the message is shown to the person as it is, the code (where it
    has one) goes to programs: the socket's `error` frame carries it (README: the WebSocket protocol)."""


# Codes of refusals more than one action shares.
REPLY_IN_PROGRESS = "reply_in_progress"  # a reply is being written or queued: stop it first
NO_SUCH_MESSAGE = "no_such_message"  # not in this conversation (another person's answers the same)
NO_SUCH_MODEL = "no_such_model"
CANNOT_CONTINUE = "cannot_continue"  # the reply was not cut, is not the last, or is being continued


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


def user_turn_from_template(*, prompt_version, variables: dict, retrieval: RetrievalRecord | None = None) -> str:
    """`prompt_version`'s template rendered with `variables` (and the passages of `retrieval`, for a
    template that lays them out), checked as a message. Raises the rendering's errors (a missing
    variable, a template that fails) or ChatError."""
    for name, value in variables.items():
        _require_storable(value if isinstance(value, str) else "", f"The variable {name}")
    user_turn = render_version_turn(prompt_version, variables, retrieval)
    _require_storable(user_turn, "The rendered message")
    if len(user_turn) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            f"The rendered message is {len(user_turn):,} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,}.",
            code="message_too_long",
        )
    return user_turn


def conversation_start_from_prompt(
    *,
    owner,
    prompt_version,
    variables: dict,
    kind: str = Conversation.Kind.CHAT,
    model_name: str = "",
    template_every_turn: bool = False,
) -> tuple[Conversation, Message]:
    """A conversation whose first turn is `prompt_version` rendered with `variables`.

    The instructions become the system prompt, the few-shot examples stay with the version
    (every reply reads them), and the rendered user turn is sent: returns the queued reply.
    `template_every_turn` (a template of one variable): later messages go through it too.
    Raises the rendering's errors (a missing variable, a template that fails).
    """
    kept = {name: value for name, value in variables.items() if name in prompt_version.variables}
    conversation = Conversation(
        owner=owner,
        kind=kind,
        system_prompt=prompt_version.instructions,
        prompt_version=prompt_version,
        model_name=available_served_model(model_name or prompt_version.model_name),
        prompt_variables=kept,
        template_every_turn=template_every_turn and len(prompt_version.variables) == 1,
        title=_clean_title(f"{prompt_version.prompt.name} v{prompt_version.number}"),
    )
    record = reply_retrieval(conversation, content="", variables=kept)  # before rendering: a template may lay it out
    user_turn = user_turn_from_template(prompt_version=prompt_version, variables=variables, retrieval=record)
    with transaction.atomic():
        conversation.save()
        user_message = _append_message(conversation, None, role=Message.Role.USER, content=user_turn, variables=kept)
        assistant_message = _queue_reply(conversation, parent=user_message, retrieval=record)
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
    available = available_models()
    chosen = served_model_choice(model_name, available)
    if chosen is None:
        raise ChatError(
            f"There is no model “{model_name[:100]}”; choose one of {', '.join(available)}.", code=NO_SUCH_MODEL
        )
    if conversation.model_name != chosen:
        conversation.model_name = chosen
        conversation.save(update_fields=["model_name", "updated_at"])
    return conversation


def conversation_set_sampling(*, conversation: Conversation, values) -> Conversation:
    """The chat's own sampling settings (blank ones fall back to the prompt's, the person's, the
    studio's). Raises SamplingError naming the field."""
    parameters = clean_sampling(values)
    kept = {
        name: value for name, value in (conversation.parameters or {}).items() if name in ("output_format", "tools")
    }
    conversation.parameters = {**kept, **parameters}
    conversation.save(update_fields=["parameters", "updated_at"])
    return conversation


def chat_defaults_set(*, user, values) -> ChatDefaults:
    """The person's own sampling defaults for their chats. Raises SamplingError naming the field."""
    defaults, _ = ChatDefaults.objects.update_or_create(owner=user, defaults={"parameters": clean_sampling(values)})
    return defaults


def reply_feedback(*, message: Message, value: str) -> Message:
    """Thumbs up or down on a reply ("" takes it back)."""
    if message.role != Message.Role.ASSISTANT or message.in_progress:
        raise ChatError("Only a finished reply takes a thumbs up or down.")
    if value not in ("", *Message.Feedback.values):
        raise ChatError('Feedback is "up", "down" or "".')
    previous = message.feedback
    Message.objects.filter(pk=message.pk).update(feedback=value)
    message.feedback = value
    if value != previous:
        transaction.on_commit(
            lambda: feedback_changed.send(sender=Message, message_id=message.pk, feedback=value, previous=previous)
        )
    return message


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_pin(*, conversation: Conversation, pinned: bool) -> Conversation:
    """Pinned conversations head the sidebar. Pinning is not activity: `updated_at` stays."""
    if (conversation.pinned_at is not None) != pinned:
        conversation.pinned_at = timezone.now() if pinned else None
        conversation.save(update_fields=["pinned_at"])
    return conversation


def conversation_archive(*, conversation: Conversation, archived: bool) -> Conversation:
    """Archived conversations leave the sidebar for its Archived list; search still finds them."""
    if (conversation.archived_at is not None) != archived:
        conversation.archived_at = timezone.now() if archived else None
        conversation.save(update_fields=["archived_at"])
    return conversation


def _checked_message(
    conversation: Conversation, content, retrieval: RetrievalRecord | None = None
) -> tuple[str, dict, RetrievalRecord]:
    """A message the person sent, checked, and (a conversation whose template takes every turn)
    rendered; what its reply retrieves, searched: (the text the model reads, the template's
    variables, the retrieval record). `retrieval`: searched already by the caller."""
    if not isinstance(content, str) or not content.strip():
        raise ChatError("The message is empty.", code="empty_message")
    _require_storable(content, "The message")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            f"The message is {len(content):,} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,}.",
            code="message_too_long",
        )
    version = conversation.prompt_version
    # A turn of tool results (tool_results_send) is the tools' answer, never the person's words: as it is.
    is_results = tool_results_in(content) is not None
    if conversation.template_every_turn and version is not None and len(version.variables) == 1 and not is_results:
        variables = {version.variables[0]: content}
        record = reply_retrieval(conversation, content=content, variables=variables)
        try:
            return (
                user_turn_from_template(prompt_version=version, variables=variables, retrieval=record),
                variables,
                record,
            )
        except (MissingVariablesError, TemplateError) as exc:
            raise ChatError(
                f"The message could not go through the prompt's template: {exc}", code="template_failed"
            ) from None
    if retrieval is None:
        retrieval = reply_retrieval(conversation, content=content, variables={})
    return content, {}, retrieval


STILL_ANSWERING = "The model is still answering: wait for the reply or stop it."


def _append_message(conversation: Conversation, parent_id: int | None, **fields) -> Message:
    """A new message below `parent_id` (None: a first message), made the active one there: the
    active branch now runs through it."""
    message = Message.objects.create(conversation=conversation, parent_id=parent_id, **fields)
    if parent_id is None:
        Conversation.objects.filter(pk=conversation.pk).update(active_root=message)
        conversation.active_root_id = message.pk
    else:
        Message.objects.filter(pk=parent_id).update(active_child=message)
    return message


def _active_leaf(conversation: Conversation) -> int | None:
    path = Branches.of(conversation).active_path()
    return path[-1] if path else None


def message_append(*, conversation: Conversation, role: str, content: str, **fields) -> Message:
    """A message stored at the end of the active branch as it is (no checks: an API request's
    earlier turns, an import, a test's conversation)."""
    return _append_message(conversation, _active_leaf(conversation), role=role, content=content, **fields)


def messages_append(*, conversation: Conversation, turns: list[dict]) -> Message | None:
    """`turns` ({"role", "content"}) added, in order, at the end of the active branch. Returns the
    last one."""
    message = None
    for turn in turns:
        message = message_append(conversation=conversation, role=turn["role"], content=turn["content"])
    return message


def reply_request(
    *,
    conversation: Conversation,
    content: str,
    retrieval: RetrievalRecord | None = None,
    example_cases: list[int] | None = None,
) -> tuple[Message, Message]:
    """Store the user's message at the end of the active branch and a queued assistant reply
    below it, for a model worker to claim (with what it retrieved from the attached knowledge, and
    the examples chosen for it: `example_cases` when the caller chose them already)."""
    content, variables, record = _checked_message(conversation, content, retrieval)
    if conversation.messages.filter(status__in=Message.IN_PROGRESS).exists():  # a side-by-side reply too
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS)
    try:
        with transaction.atomic():
            user_message = _append_message(
                conversation, _active_leaf(conversation), role=Message.Role.USER, content=content, variables=variables
            )
            assistant_message = _queue_reply(
                conversation, parent=user_message, retrieval=record, example_cases=example_cases
            )
    except IntegrityError:
        # The partial unique constraint caught a reply already in progress (also from
        # another tab sending at the same instant).
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS) from None
    fields = ["updated_at"]
    if (
        conversation.prompt_version_id is None
        and not conversation.messages.exclude(pk=user_message.pk).filter(role=Message.Role.USER).exists()
    ):
        conversation.title = title_cut(content, TITLE_FROM_MESSAGE_CHARS)
        fields.append("title")
    conversation.save(update_fields=fields)
    return user_message, assistant_message


TOOL_RESULTS_NOT_ASKED = "tool_results_not_asked"  # the active branch does not end with a reply that called tools
TOOL_RESULTS_MISMATCH = "tool_results_mismatch"  # not one non-empty result per call


def tool_results_send(*, conversation: Conversation, results) -> tuple[Message, Message]:
    """The tools' results, typed by the person, for the calls of the active branch's last reply (one
    per call, in order): stored as the next user turn in the Hermes form (tools.responses_text) and
    the next reply queued, as reply_request does for a message."""
    path = Branches.of(conversation).active_path()
    last = Message.objects.filter(pk=path[-1]).first() if path else None
    calls = read_reply(last.content)[1] if last is not None and last.role == Message.Role.ASSISTANT else []
    if not calls or last.in_progress:
        raise ChatError(
            "The last reply called no tool: there is no call to give a result for.", code=TOOL_RESULTS_NOT_ASKED
        )
    if (
        not isinstance(results, list)
        or len(results) != len(calls)
        or not all(isinstance(result, str) and result.strip() for result in results)
    ):
        names = ", ".join(call["function"]["name"] for call in calls)
        raise ChatError(
            f"Give one result for each call of the last reply ({len(calls)}: {names}), none of them empty.",
            code=TOOL_RESULTS_MISMATCH,
        )
    return reply_request(conversation=conversation, content=responses_text([result.strip() for result in results]))


def reply_request_side_by_side(
    *, conversation: Conversation, content: str, model_name: str
) -> tuple[Message, Message, Message]:
    """The message, a reply from the conversation's model (on the active branch) and, beside it, a
    reply from `model_name` (its sibling): both queued at once, so a worker writes them in the same
    batch. Returns (user message, reply, side reply)."""
    available = available_models()
    chosen = served_model_choice(model_name if isinstance(model_name, str) else "", available)
    if chosen is None:
        raise ChatError(
            f"There is no model “{str(model_name)[:100]}” to compare with; choose one of {', '.join(available)}.",
            code=NO_SUCH_MODEL,
        )
    user_message, reply = reply_request(conversation=conversation, content=content)
    side_reply = Message.objects.create(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.ASSISTANT,
        retrieval=reply.retrieval,
        example_cases=reply.example_cases,
        status=reply.status if not reply.in_progress else Message.Status.QUEUED,
        content=reply.content if not reply.in_progress else "",
        requested_model=chosen or available[0],
        side_of=reply,
        finished_at=None if reply.in_progress else reply.finished_at,
        lease_expires_at=queued_reply_deadline() if reply.in_progress else None,
    )
    return user_message, reply, side_reply


def _message_of(conversation: Conversation, message_id, role: str) -> Message:
    """The conversation's message `message_id` of `role`; another conversation's (or another
    person's) is answered exactly as a message that does not exist."""
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise ChatError(
            '"message_id" must be the id of a message in this conversation.', code=NO_SUCH_MESSAGE
        ) from None
    message = conversation.messages.filter(pk=message_id, role=role).first() if 0 < message_id < 2**63 else None
    if message is None:
        noun = "message of yours" if role == Message.Role.USER else "reply"
        raise ChatError(f"There is no {noun} {message_id} in this conversation.", code=NO_SUCH_MESSAGE)
    return message


def reply_edit(*, conversation: Conversation, message_id, content: str) -> tuple[Message, Message]:
    """An edited user message: a new sibling of `message_id` (the original stays on its own
    branch) and a queued reply to it, both now on the active branch. Refused while a reply is
    being written (the person stops it first: an edit must not race the reply it would replace)."""
    original = _message_of(conversation, message_id, Message.Role.USER)
    content, variables, record = _checked_message(conversation, content)
    if conversation.messages.filter(status__in=Message.IN_PROGRESS).exists():
        raise ChatError(
            "The model is still answering: stop the reply before editing a message.", code=REPLY_IN_PROGRESS
        )
    try:
        with transaction.atomic():
            user_message = _append_message(
                conversation, original.parent_id, role=Message.Role.USER, content=content, variables=variables
            )
            assistant_message = _queue_reply(conversation, parent=user_message, retrieval=record)
    except IntegrityError:
        raise ChatError(
            "The model is still answering: stop the reply before editing a message.", code=REPLY_IN_PROGRESS
        ) from None
    conversation.save(update_fields=["updated_at"])
    return user_message, assistant_message


def reply_regenerate(*, conversation: Conversation, message_id=None) -> Message:
    """A new reply beside reply `message_id` (default: the active branch's last reply), from the
    same point of the conversation: the old one stays as its sibling; the new one is active."""
    if message_id is None:
        path, _ = active_messages(conversation=conversation)
        last = next((m for m in reversed(path) if m.role == Message.Role.ASSISTANT), None)
        if last is None:
            raise ChatError("There is no reply to regenerate yet.", code=NO_SUCH_MESSAGE)
    else:
        last = _message_of(conversation, message_id, Message.Role.ASSISTANT)
    if conversation.messages.filter(status__in=Message.IN_PROGRESS).exists():
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS)
    question = last.parent
    if last.retrieval.get("layout") == "template" or question is None:
        record = last.retrieval  # its passages are in the question's text: the same sources
    else:
        record = reply_retrieval(conversation, content=question.content, variables=question.variables)
    try:
        with transaction.atomic():
            reply = _queue_reply(conversation, parent_id=last.parent_id, retrieval=record)
    except IntegrityError:
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS) from None
    conversation.save(update_fields=["updated_at"])
    return reply


def branch_switch(*, conversation: Conversation, message_id) -> list[int]:
    """Make the branch through `message_id` active: the path from the first message to it, then
    down its last active children. Returns the new active path."""
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise ChatError(
            '"message_id" must be the id of a message in this conversation.', code=NO_SUCH_MESSAGE
        ) from None
    branches = Branches.of(conversation)
    if message_id not in branches.parent:
        raise ChatError(f"There is no message {message_id} in this conversation.", code=NO_SUCH_MESSAGE)
    chain = [*branches.ancestors(message_id), message_id]
    with transaction.atomic():
        if conversation.active_root_id != chain[0]:
            Conversation.objects.filter(pk=conversation.pk).update(active_root_id=chain[0])
            conversation.active_root_id = chain[0]
        for parent_id, child_id in zip(chain, chain[1:]):
            if branches.active_child[parent_id] != child_id:  # usually one: where the branches part
                Message.objects.filter(pk=parent_id).update(active_child_id=child_id)
                branches.active_child[parent_id] = child_id
    branches.root = chain[0]
    return branches.active_path()


def reply_request_unlisted(
    *, owner, kind: str, messages: list[dict], model_name: str, parameters: dict, title: str = "", job: str = ""
) -> Message:
    """A conversation no list shows (an evaluation's case) holding `messages` exactly as the model
    is to read them (system messages become its system prompt), and its queued reply. `job` names
    what it answers for (conversations_withdraw)."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            kind=kind,
            title=_clean_title(title) or Conversation.DEFAULT_TITLE,
            job=job,
            system_prompt="\n\n".join(m["content"] for m in messages if m["role"] == "system"),
            model_name=available_served_model(model_name),
            parameters=parameters,
        )
        last = messages_append(conversation=conversation, turns=[m for m in messages if m["role"] != "system"])
        return _queue_reply(conversation, parent=last)


def conversations_withdraw(*, job: str) -> list[Message]:
    """A job ended (or its worker died): its unlisted conversations go, their queued replies with
    them. Returns the replies a model worker is writing, to be told to stop."""
    conversations = Conversation.objects.filter(job=job)
    streaming = replies_withdraw(message_ids=Message.objects.filter(conversation__in=conversations).values("pk"))
    conversations.delete()
    return streaming


def _queue_reply(
    conversation: Conversation,
    *,
    parent: Message | None = None,
    parent_id: int | None = None,
    retrieval: RetrievalRecord | None = None,
    example_cases: list[int] | None = None,
) -> Message:
    """A queued reply below the message, for a model worker; one whose retrieval found nothing above
    the minimum score, in a chat set to say so, is answered at once, without the model (no guess).
    A version's examples chosen per input are chosen here, for the message answered (or given, as
    `example_cases`), and recorded on the reply, which reads them (selectors.chat_history_before)."""
    parent_id = parent.pk if parent is not None else parent_id
    retrieval = retrieval or {}
    if example_cases is None:
        example_cases = _examples_chosen(conversation, parent or Message.objects.filter(pk=parent_id).first())
    if retrieval.get("nothing_passed") and retrieval.get("when_nothing_found") == "say":
        return _append_message(
            conversation,
            parent_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
            retrieval=retrieval,
            content=NOTHING_FOUND_REPLY.format(min_score=retrieval.get("min_score") or 0),
            finished_at=timezone.now(),
        )
    return _append_message(
        conversation,
        parent_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        retrieval=retrieval,
        example_cases=example_cases,
        lease_expires_at=queued_reply_deadline(),
    )


def _examples_chosen(conversation: Conversation, question: Message | None) -> list[int]:
    """The cases chosen as examples for a reply to `question` (its template's values, else its text)."""
    version = conversation.prompt_version
    if version is None or not version.example_source or question is None:
        return []
    _, case_ids = examples_for(version, user=conversation.owner, variables=question.variables, text=question.content)
    return case_ids


def reply_continue(*, conversation: Conversation, message_id) -> Message:
    """Continue reply `message_id`, cut at its maximum tokens: the same row is queued again, and the
    model worker writes on from its last word (the history up to it, its text as an unfinished
    assistant turn, with its model, sampling and passages) and appends to it. Refused for a reply
    that was not cut, one a later message follows, while a reply is being written, and, on an
    external engine, for a reply under an output format (the engine would restart the format)."""
    reply = _message_of(conversation, message_id, Message.Role.ASSISTANT)
    if not reply.cut:
        raise ChatError(
            "Only a reply cut at its maximum tokens can be continued; this one "
            + ("is still being written." if reply.in_progress else "ended by itself."),
            code=CANNOT_CONTINUE,
        )
    if reply.active_child_id is not None:
        raise ChatError(
            "Only the last reply of a conversation can be continued: the messages below it were "
            "written after it. Regenerate from there instead.",
            code=CANNOT_CONTINUE,
        )
    if conversation.messages.filter(status__in=Message.IN_PROGRESS).exists():
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS)
    if settings.LLM_ENGINE == "openai":
        if output_format_for(message=reply) is not None:
            raise ChatError(
                "This reply has an output format, and the external engine cannot continue one from "
                "its middle. Regenerate it with more maximum tokens instead.",
                code=CANNOT_CONTINUE,
            )
    try:
        with transaction.atomic():
            # Conditional on what was read, so that two tabs' Continue queue it once.
            queued = Message.objects.filter(pk=reply.pk, status=Message.Status.COMPLETE, finish_reason="length").update(
                status=Message.Status.QUEUED,
                worker_channel="",
                error="",
                error_code="",
                lease_expires_at=queued_reply_deadline(),
            )
    except IntegrityError:  # another tab's reply started at the same instant
        raise ChatError(STILL_ANSWERING, code=REPLY_IN_PROGRESS) from None
    if not queued:
        raise ChatError("This reply is already being continued.", code=CANNOT_CONTINUE)
    conversation.save(update_fields=["updated_at"])
    reply.refresh_from_db()
    return reply


def _require_storable(text: str, what: str) -> None:
    reason = unstorable_reason(text)
    if reason:
        raise ChatError(f"{what} {reason}.", code="unstorable_text")


def _clean_title(title: str) -> str:
    return title_cut(title, TITLE_MAX_CHARS)


def title_cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: cut at the last word boundary that fits, with
    “…” after it (a single word longer than that is cut inside it)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " " and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.-–—") + "…"


# --- knowledge attached to a chat ---------------------------------------------------------


def conversation_attach(*, conversation: Conversation, kind: str, item_id) -> str:
    """Attach a knowledge base (`kind` "knowledge_base") or one document ("document") the owner may
    see; returns its name. Another person's private one is answered as one that does not exist."""
    try:
        item_id = int(item_id)
    except (TypeError, ValueError):
        raise ChatError("Choose a knowledge base or a document to attach.") from None
    visible = KnowledgeBase.objects.filter(Q(shared=True) | Q(owner_id=conversation.owner_id))
    if kind == "knowledge_base":
        knowledge_base = visible.filter(pk=item_id).first()
        if knowledge_base is None:
            raise ChatError("There is no such knowledge base, or it is not shared with you.")
        conversation.knowledge_bases.add(knowledge_base)
        name = knowledge_base.name
    elif kind == "document":
        document = Document.objects.filter(pk=item_id, knowledge_base__in=visible).first()
        if document is None:
            raise ChatError("There is no such document, or its knowledge base is not shared with you.")
        conversation.documents.add(document)
        name = document.name
    else:
        raise ChatError("Attach a knowledge_base or a document.")
    conversation.save(update_fields=["updated_at"])
    return name


def conversation_detach(*, conversation: Conversation, kind: str, item_id) -> None:
    try:
        item_id = int(item_id)
    except (TypeError, ValueError):
        raise ChatError("Choose what to detach.") from None
    if kind == "knowledge_base":
        conversation.knowledge_bases.remove(item_id)
    elif kind == "document":
        conversation.documents.remove(item_id)
    else:
        raise ChatError("Detach a knowledge_base or a document.")


def conversation_set_retrieval(*, conversation: Conversation, values) -> Conversation:
    """The chat's own retrieval settings (k, mode, min_score, when_nothing_found); raises
    RetrievalError (a StudioError naming the field)."""
    conversation.retrieval_settings = clean_conversation_settings(
        {name: values.get(name) for name in ("k", "mode", "min_score", "when_nothing_found")}
    )
    conversation.save(update_fields=["retrieval_settings", "updated_at"])
    return conversation
