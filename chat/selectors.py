"""Reads of conversations and messages, planned once for every entry point. (The queue's order, the
models served and the workers online are serving's: chat/serving/.)"""

from __future__ import annotations

import dataclasses

from django.core.paginator import Paginator
from django.db.models import F, Prefetch, Q
from django.db.models.functions import Substr

from knowledge.retrieval import RetrievalRecord, with_sources
from prompts.examples import examples_for, examples_of_cases
from prompts.rendering import assembled_messages, render_version_turn
from studio.llm.constraints import OutputFormat
from studio.llm.tools import ToolUse

from .models import Conversation, Message
from .retrieval import reply_retrieval
from .sampling import sampling_in_effect

CONVERSATIONS_PER_PAGE = 50


# What the sidebar can list: chats, requests to the OpenAI-compatible API, an evaluation's cases
# while they are answered (playground runs live on their prompt's page).
LISTED_KINDS = (Conversation.Kind.CHAT, Conversation.Kind.API, Conversation.Kind.EVALUATION)
ARCHIVED = "archived"  # the sidebar's list of archived conversations, of every listed kind
_LISTED_FIELDS = ("id", "title", "updated_at", "kind", "pinned_at", "archived_at")


def conversations_for(*, user, kind: str = Conversation.Kind.CHAT):
    return Conversation.objects.filter(owner=user, kind=kind).only(*_LISTED_FIELDS)


def conversations_page(*, user, page=1, current_id=None, kind: str = Conversation.Kind.CHAT):
    """One page of the sidebar: pinned conversations first (last pinned first), then the others,
    newest first (older pages load on demand); archived ones only under kind ARCHIVED. A
    conversation nobody wrote in, renamed or gave a system prompt is left out (unless it is the
    one open): clicking "New chat" twice must not pile up empty conversations. Two queries (count,
    page) however many conversations there are (tests/test_pin_archive.py: 10,000)."""
    if kind == ARCHIVED:
        listed = (
            Conversation.objects.filter(owner=user, kind__in=LISTED_KINDS, archived_at__isnull=False)
            .only(*_LISTED_FIELDS)
            .order_by("-updated_at", "-id")
        )
    else:
        kind = kind if kind in LISTED_KINDS else Conversation.Kind.CHAT
        listed = (
            conversations_for(user=user, kind=kind)
            .filter(archived_at=None)
            .order_by(F("pinned_at").desc(nulls_last=True), "-updated_at", "-id")
        )
    listed = listed.exclude(
        pk__in=Conversation.objects.untouched().filter(owner=user).exclude(pk=current_id).values("pk")
    )
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


@dataclasses.dataclass
class Branches:
    """The shape of a conversation's message tree, without any text: enough to find the active
    path, a message's ancestors and its siblings in one query (a 2,000-message conversation is
    2,000 pairs of integers)."""

    root: int | None
    parent: dict[int, int | None]  # message id -> its parent's (ids in creation order)
    active_child: dict[int, int | None]

    @classmethod
    def of(cls, conversation: Conversation) -> Branches:
        rows = (
            Message.objects.filter(conversation_id=conversation.pk)
            .order_by("pk")
            .values_list("pk", "parent_id", "active_child_id")
        )
        parent, active_child = {}, {}
        for pk, parent_id, active_child_id in rows:
            parent[pk], active_child[pk] = parent_id, active_child_id
        return cls(root=conversation.active_root_id, parent=parent, active_child=active_child)

    def path_below(self, message_id: int | None) -> list[int]:
        """`message_id`, then its last active child, and so on down to a leaf. (Every walk here
        is bounded by the number of messages: stored links can never loop it.)"""
        path = []
        while message_id in self.parent and len(path) <= len(self.parent):
            path.append(message_id)
            message_id = self.active_child[message_id]
        return path

    def active_path(self) -> list[int]:
        return self.path_below(self.root)

    def ancestors(self, message_id: int) -> list[int]:
        """The messages above `message_id`, first message first."""
        chain = []
        message_id = self.parent.get(message_id)
        while message_id is not None and len(chain) <= len(self.parent):
            chain.append(message_id)
            message_id = self.parent.get(message_id)
        return chain[::-1]

    def siblings(self, message_id: int) -> list[int]:
        """The messages with `message_id`'s parent, oldest first, itself included."""
        parent = self.parent.get(message_id)
        return [pk for pk, parent_id in self.parent.items() if parent_id == parent]

    def sibling_groups(self) -> dict[int | None, list[int]]:
        groups: dict[int | None, list[int]] = {}
        for pk, parent_id in self.parent.items():
            groups.setdefault(parent_id, []).append(pk)
        return groups


def messages_of(*, conversation: Conversation, ids: list[int]) -> list[Message]:
    """The messages `ids` of the conversation, in that order."""
    by_id = conversation.messages.in_bulk(ids)
    return [by_id[pk] for pk in ids if pk in by_id]


def active_messages(*, conversation: Conversation, last: int | None = None) -> tuple[list[Message], Branches]:
    """The active branch's messages (the `last` of them), with the tree they come from."""
    branches = Branches.of(conversation)
    path = branches.active_path()
    return messages_of(conversation=conversation, ids=path[-last:] if last else path), branches


def message_frames(messages: list[Message], branches: Branches) -> list[dict]:
    """The WebSocket `message` objects for `messages`, each with its siblings."""
    groups = branches.sibling_groups()
    return [message.to_frame(siblings=groups.get(message.parent_id, [message.pk])) for message in messages]


def with_siblings(messages: list[Message], branches: Branches) -> list[Message]:
    """`messages`, each told its place among its siblings (the ‹ 2/3 › switch)."""
    groups = branches.sibling_groups()
    for message in messages:
        siblings = groups.get(message.parent_id, [message.pk])
        message.sibling_ids = siblings
        message.sibling_number = siblings.index(message.pk) + 1 if message.pk in siblings else 1
        number = message.sibling_number
        message.previous_sibling = siblings[number - 2] if number > 1 else None
        message.next_sibling = siblings[number] if number < len(siblings) else None
    return messages


def with_side_replies(messages: list[Message], branches: Branches) -> list[Message]:
    """Side by side: each message of `messages` is given `beside`, the other replies written with
    it for comparison (shown next to it), told their siblings too."""
    ids = [m.pk for m in messages]
    partners = {m.side_of_id for m in messages if m.side_of_id}
    found = (
        list(
            Message.objects.filter(Q(side_of_id__in=ids) | Q(pk__in=partners) | Q(side_of_id__in=partners)).exclude(
                pk__in=ids
            )
        )
        if ids
        else []
    )
    with_siblings(found, branches)

    def comparison(message: Message) -> int:  # the reply a side-by-side group was asked with
        return message.side_of_id or message.pk

    for message in messages:
        message.beside = [other for other in found if comparison(other) == comparison(message)]
    return messages


def message_frame(*, message: Message) -> dict:
    return message_frames([message], Branches.of(message.conversation))[0]


def reply_in_progress(*, conversation_id: int) -> Message | None:
    return Message.objects.filter(conversation_id=conversation_id, status__in=Message.IN_PROGRESS).first()


def chat_history_before(*, message: Message) -> list[dict]:
    """What the model reads to write `message`: the system prompt, the prompt version's
    few-shot examples (a conversation started from one), then earlier turns.

    A reply that retrieved passages reads them in the system turn, as numbered sources (unless its
    prompt version's template lays them out in the user turn). Only the message's own branch counts (its ancestors); failed replies and empty stopped ones
    are left out: they are not part of the dialogue.
    """
    conversation = message.conversation
    earlier = [
        m
        for m in messages_of(conversation=conversation, ids=Branches.of(conversation).ancestors(message.pk))
        if m.status != Message.Status.FAILED and m.content
    ]
    version = conversation.prompt_version
    # The examples chosen when the reply was queued (Message.example_cases): it reads what it records.
    examples = examples_of_cases(version, message.example_cases, user=conversation.owner) if version else ()
    return reply_messages(
        system=conversation.system_prompt,
        examples=examples,
        turns=[{"role": m.role, "content": m.content} for m in earlier],
        retrieval=message.retrieval,
    )


def reply_messages(*, system: str, examples, turns, retrieval: RetrievalRecord | None) -> list[dict]:
    """What a model reads for a reply: the system prompt with the retrieved passages as numbered
    sources (unless the version's template laid them out in the user turn), the few-shot examples,
    the turns. The one assembly of served replies (chat_history_before) and of the prompts a
    fine-tune trains on (version_reply_messages): a model is trained on what it is served."""
    if (retrieval or {}).get("layout", "system") == "system":
        system = with_sources(system, retrieval)
    return assembled_messages(system=system, examples=examples, turns=turns)


def version_reply_messages(
    *, version, user, variables: dict, content: str = "", earlier=(), exclude_case_ids=()
) -> tuple[list[dict], dict]:
    """What serving sends the model for one input to `version` (a chat started from it, a
    `prompt:<slug>` API request): the passages its retrieval finds, searched as `user`; its few-shot
    examples (those chosen for this input, never one of `exclude_case_ids`); the user turn rendered
    from `variables` (else `content` as it is), after the `earlier` turns. (messages, the retrieval
    record). Raises the rendering's errors."""
    record = reply_retrieval(Conversation(owner=user, prompt_version=version), content=content, variables=variables)
    user_turn = render_version_turn(version, variables, record) if variables or not content else content
    turns = [*({"role": m["role"], "content": m["content"]} for m in earlier), {"role": "user", "content": user_turn}]
    examples, _ = examples_for(version, user=user, variables=variables, text=content, exclude_case_ids=exclude_case_ids)
    return reply_messages(system=version.instructions, examples=examples, turns=turns, retrieval=record), record


def output_format_for(*, message: Message) -> OutputFormat | None:
    """The shape the reply must take: what an API request or an evaluation asked for, else its
    conversation's prompt version's output format; None for free text."""
    conversation = message.conversation
    asked = (conversation.parameters or {}).get("output_format")
    output_format = asked or (conversation.prompt_version.answer_format if conversation.prompt_version else None)
    return None if not output_format or output_format.get("type") == "text" else output_format


def tools_for(*, message: Message) -> ToolUse | None:
    """The tools the reply may call (studio/llm/tools.py): what an API request declared (its `tools`
    replace the version's), else its conversation's prompt version's; None for none."""
    conversation = message.conversation
    return tools_in_effect(parameters=conversation.parameters or {}, prompt_version=conversation.prompt_version)


def tools_in_effect(*, parameters: dict, prompt_version) -> ToolUse | None:
    """The rule of tools_for, before the conversation is stored (the OpenAI API checks a request by it)."""
    asked = parameters.get("tools")
    if asked:
        return asked
    return prompt_version.tool_use if prompt_version is not None else None


def generation_overrides(*, message: Message) -> dict:
    """The generation parameters for this reply that differ from the studio's defaults: the chat's
    own (or an API request's), over its prompt version's, over the person's defaults (chat.sampling)."""
    overrides = {
        name: value
        for name, (value, source) in sampling_in_effect(message.conversation).items()
        if source != "default" and value not in (None, [])
    }
    if "stop" in overrides:
        overrides["stop"] = tuple(overrides["stop"])
    return overrides


# --- playground runs (chat/playground.py) -----------------------------------------------------------

PLAYGROUND_RUNS_LISTED = 20  # a prompt's playground lists this many of the person's last runs


def playground_runs(*, user, prompt, limit: int = PLAYGROUND_RUNS_LISTED) -> list[Conversation]:
    """The person's last playground runs of `prompt`, newest first, each given `reply` (its answer,
    None while none is stored; its text only as `opening`, its first 80 characters): two queries
    however many runs there are."""
    replies = (
        Message.objects.filter(role=Message.Role.ASSISTANT)
        .defer("content")
        .annotate(opening=Substr("content", 1, 80))
        .order_by("pk")
    )
    runs = list(
        Conversation.objects.filter(owner=user, kind=Conversation.Kind.PLAYGROUND, prompt_version__prompt=prompt)
        .select_related("prompt_version")
        .order_by("-created_at", "-pk")[:limit]
        .prefetch_related(Prefetch("messages", to_attr="replies", queryset=replies))
    )
    for run in runs:
        run.reply = run.replies[-1] if run.replies else None
    return runs


def playground_run(*, user, prompt, conversation_id) -> Conversation | None:
    """One of the person's playground runs of `prompt`, with its messages (`run_messages`, the user
    turn then the reply) and `reply`; None for anyone else's, or another prompt's."""
    conversation = conversation_for(user=user, conversation_id=conversation_id)
    if (
        conversation is None
        or conversation.kind != Conversation.Kind.PLAYGROUND
        or conversation.prompt_version is None
        or conversation.prompt_version.prompt_id != prompt.pk
    ):
        return None
    conversation.run_messages = list(conversation.messages.order_by("pk"))
    replies = [m for m in conversation.run_messages if m.role == Message.Role.ASSISTANT]
    conversation.reply = replies[-1] if replies else None
    return conversation
