"""Conversations in and out of the studio.

Export: JSON with the whole tree (every branch, the models, the prompt version and the sampling
parameters), Markdown with the active branch. Import: that JSON, or ChatGPT's conversations.json,
into new conversations of the importer.

An import is bounded before any work: the file's size before it is read, its nesting while it is
parsed, then the number of conversations and messages and each text's length before anything is
written. The whole file is checked first and written in one transaction, so a refused file
leaves nothing behind. A file can claim anything: nothing in it names an owner or an author, and
everything imported belongs to the importer.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from knowledge.retrieval import clean_record
from prompts.models import PromptVersion
from prompts.selectors import VersionNotFound, prompt_by_slug, version_resolve
from studio.input_checks import InputError, parse_json
from studio.llm.replies import SamplingError, SamplingParameters, sampling_checked

from .models import Conversation, Message
from .selectors import Branches, active_messages
from .services import TITLE_MAX_CHARS, ChatError, title_cut
from .serving.registry import available_models, served_model_choice

EXPORT_FORMAT = "chat-prompt-studio.conversation"
EXPORT_VERSION = 1
# ?format= of the export: (content type, file extension).
EXPORT_FORMATS = {
    "json": ("application/json; charset=utf-8", "json"),
    "markdown": ("text/markdown; charset=utf-8", "md"),
}

MAX_CONVERSATIONS = 1_000  # in one file
MAX_MESSAGES = 10_000  # in one conversation
# In one file: what one request writes in its one transaction. 20,000 take ~7 s on SQLite, which
# holds the write lock meanwhile (other writers wait, up to the database's 20 s timeout).
MAX_MESSAGES_IN_ALL = 20_000
MAX_CHATGPT_NODES = 2 * MAX_MESSAGES  # a ChatGPT conversation also holds system, tool and hidden nodes
MAX_JSON_DEPTH = 32  # ChatGPT nests its messages' metadata several levels deep

_USAGE_FIELDS = {"prompt_tokens": True, "completion_tokens": True, "ttft_ms": False, "tokens_per_s": False}


class ImportRefused(ChatError):
    """A file refused whole: nothing was imported. `field` names the place in the file
    ("conversation 3, message 12")."""


# --- export -----------------------------------------------------------------------------------


def conversation_export_json(conversation: Conversation) -> dict:
    """The conversation with every message of every branch. Messages are numbered 1, 2, 3... in
    the order they were written (a parent always before its children); `parent`, `active_child`
    and `active_path` use those numbers."""
    messages = list(conversation.messages.order_by("pk"))
    # One read: the tree comes from the same rows as the messages, so the numbers always agree.
    branches = Branches(
        root=conversation.active_root_id,
        parent={m.pk: m.parent_id for m in messages},
        active_child={m.pk: m.active_child_id for m in messages},
    )
    number = {message.pk: n for n, message in enumerate(messages, start=1)}
    version = conversation.prompt_version
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "model": conversation.model_name,  # "" is the studio's served base model
        "prompt_version": f"{version.prompt.slug}@{version.number}" if version else None,
        "prompt_variables": conversation.prompt_variables,
        "template_every_turn": conversation.template_every_turn,
        "parameters": conversation.parameters,
        "created_at": _iso(conversation.created_at),
        "active_path": [number[pk] for pk in branches.active_path()],
        "messages": [
            {
                "id": number[m.pk],
                "parent": number.get(m.parent_id),
                "active_child": number.get(m.active_child_id),
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "error": m.error,
                "finish_reason": m.finish_reason,  # "length": cut by its maximum tokens (the page offers Continue)
                "model": m.model_name,
                "parameters": m.parameters,
                "usage": {name: getattr(m, name) for name in _USAGE_FIELDS},
                "feedback": m.feedback,
                "variables": m.variables,
                "retrieval": m.retrieval,  # what the reply retrieved: its numbered sources (knowledge.retrieval)
                "created_at": _iso(m.created_at),
                "finished_at": _iso(m.finished_at),
            }
            for m in messages
        ],
    }


def conversation_export_markdown(conversation: Conversation) -> str:
    """The title, the system prompt, then the active branch's messages with their text as it is."""
    messages, _ = active_messages(conversation=conversation)
    lines = [f"# {conversation.title}", ""]
    version = conversation.prompt_version
    if version is not None:
        lines += [f"From prompt version `{version.prompt.slug}@{version.number}`.", ""]
    if conversation.system_prompt:
        lines += ["**System prompt**", "", conversation.system_prompt, ""]
    for message in messages:
        if message.role == Message.Role.USER:
            heading = "**You**"
        else:
            heading = "**Assistant**" + (f" ({message.model_name})" if message.model_name else "")
        if message.status != Message.Status.COMPLETE:
            heading += f" _({message.status})_"
        lines += ["---", "", heading, "", message.content, ""]
        if message.error:
            lines += [f"> {' '.join(message.error.split())}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --- import -----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Planned:
    """One message to create: its place in the tree by the file's keys, and its fields."""

    key: object
    parent: object  # the key of its parent, None for a first message
    fields: dict
    created_at: datetime | None = None
    active_child: object = None  # the key of the reply last shown below it, as the file says


@dataclasses.dataclass
class _Plan:
    """One conversation to create, checked whole before anything is written."""

    title: str
    messages: list[_Planned]  # parents before their children
    active: dict  # parent key (None: the first messages) -> the key of its active child
    system_prompt: str = ""
    model_name: str = ""
    prompt_version: PromptVersion | None = None
    prompt_variables: dict = dataclasses.field(default_factory=dict)
    template_every_turn: bool = False
    parameters: dict = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None


def conversations_import(*, owner, upload) -> list[Conversation]:
    """New conversations of `owner` from an uploaded file: our export (one conversation or a list
    of them) or ChatGPT's conversations.json. Raises ImportRefused, having written nothing."""
    document = _parsed(upload)
    items = document if isinstance(document, list) else [document]
    if not items:
        raise ImportRefused("The file holds no conversations.")
    if len(items) > MAX_CONVERSATIONS:
        raise ImportRefused(
            f"The file holds {len(items):,} conversations; an import takes at most {MAX_CONVERSATIONS:,}."
        )
    plans, in_all = [], 0
    for n, item in enumerate(items, start=1):
        plan = _plan_of(item, f"conversation {n}")
        in_all += len(plan.messages)
        if in_all > MAX_MESSAGES_IN_ALL:
            raise ImportRefused(
                f"The file holds more than {MAX_MESSAGES_IN_ALL:,} messages in all, the most one "
                "import takes: import its conversations in parts (a JSON list of fewer)."
            )
        plans.append(plan)
    served = available_models() if any(plan.model_name for plan in plans) else None
    with transaction.atomic():
        return [_create(owner, plan, served) for plan in plans]


def _parsed(upload):
    limit = settings.CHAT_IMPORT_MAX_BYTES
    size = getattr(upload, "size", None)
    if size is not None and size > limit:  # refused before a byte is read
        raise ImportRefused(f"The file is {size:,} bytes; an import takes at most {limit:,} bytes.")
    raw = upload.read(limit + 1)
    if len(raw) > limit:
        raise ImportRefused(f"The file is over {limit:,} bytes, the most an import takes.")
    if not raw.strip():
        raise ImportRefused("The file is empty.")
    try:
        return parse_json(raw, max_depth=MAX_JSON_DEPTH)
    except InputError as exc:
        raise _refusal(str(exc)) from None


def _refusal(problem: str) -> ImportRefused:
    """parse_json's "[2].messages[11].content: contains a NUL..." said as "conversation 3, message
    12: content contains a NUL..."; other problems (malformed, too deep) as they are."""
    match = re.fullmatch(
        r"(\[(\d+)\]\.?)?(?:messages\[(\d+)\]|mapping\.([^.\[]+))?\.?([A-Za-z_][^\s:]*)?: (.*)", problem, re.S
    )
    if match is None or not any(match.group(n) for n in (1, 3, 4, 5)):
        return ImportRefused(problem.replace("Malformed JSON:", "The file is not valid JSON:", 1))
    place = f"conversation {int(match.group(2) or 0) + 1}"
    if match.group(3):
        place += f", message {int(match.group(3)) + 1}"
    if match.group(4):
        place += f", node {match.group(4)}"
    return ImportRefused(f"{match.group(5) or 'a text'} {match.group(6)}", place)


def _plan_of(item, where: str) -> _Plan:
    if isinstance(item, dict) and item.get("format") == EXPORT_FORMAT:
        return _plan_of_export(item, where)
    if isinstance(item, dict) and "mapping" in item:
        return _plan_of_chatgpt(item, where)
    raise ImportRefused(
        f'this is neither a conversation exported from the studio ("format": "{EXPORT_FORMAT}") '
        'nor one of ChatGPT\'s conversations.json (with a "mapping")',
        where,
    )


# Our own export.


def _plan_of_export(item: dict, where: str) -> _Plan:
    if item.get("version") != EXPORT_VERSION:
        raise ImportRefused(
            f"version must be {EXPORT_VERSION} (this studio reads version {EXPORT_VERSION} exports)", where
        )
    raw_messages = item.get("messages", [])
    if not isinstance(raw_messages, list):
        raise ImportRefused("messages must be a list", where)
    if len(raw_messages) > MAX_MESSAGES:
        raise ImportRefused(
            f"it holds {len(raw_messages):,} messages; a conversation takes at most {MAX_MESSAGES:,}", where
        )
    planned = [_exported_message(raw, f"{where}, message {n}") for n, raw in enumerate(raw_messages, start=1)]
    prompt_version = _prompt_version(item.get("prompt_version"), where)
    variables = _text_values(item.get("prompt_variables"), where, "prompt_variables")
    return _Plan(
        title=_title(item.get("title"), where),
        **_exported_tree(planned, item.get("active_path", []), where),
        system_prompt=_text(item.get("system_prompt"), where, "system_prompt", limit=settings.CHAT_MAX_MESSAGE_CHARS),
        model_name=_text(item.get("model"), where, "model", limit=200).strip(),
        prompt_version=prompt_version,
        prompt_variables=variables if prompt_version else {},
        # Only a linked version of one variable takes every turn through its template (as when started).
        template_every_turn=bool(
            item.get("template_every_turn") is True and prompt_version and len(prompt_version.variables) == 1
        ),
        parameters=_sampling(item.get("parameters"), where),
        created_at=_moment(item.get("created_at"), where, "created_at"),
    )


def _exported_message(raw, place: str) -> _Planned:
    if not isinstance(raw, dict):
        raise ImportRefused("a message must be an object", place)
    key, parent = raw.get("id"), raw.get("parent")
    if not _is_key(key):
        raise ImportRefused("id must be a number or a text", place)
    if parent is not None and not _is_key(parent):
        raise ImportRefused("parent must be the id of another message, or null", place)
    role = raw.get("role")
    if role not in Message.Role.values:
        raise ImportRefused("role must be user or assistant", place)
    status = raw.get("status") or Message.Status.COMPLETE
    if status not in Message.Status.values:
        raise ImportRefused(f"status must be one of {', '.join(Message.Status.values)}", place)
    if status in Message.IN_PROGRESS:  # nobody will ever finish it here
        status = Message.Status.STOPPED
    feedback = raw.get("feedback") or ""
    if feedback not in ("", *Message.Feedback.values):
        raise ImportRefused("feedback must be up, down or empty", place)
    finish_reason = raw.get("finish_reason") or ""
    if finish_reason not in ("", "stop", "length") or (finish_reason and role != Message.Role.ASSISTANT):
        raise ImportRefused("finish_reason must be stop or length (on a reply), or empty", place)
    fields = {
        "role": role,
        "status": status,
        "feedback": feedback,
        "finish_reason": finish_reason,
        "content": _message_text(raw.get("content"), place),
        "error": _text(raw.get("error"), place, "error", limit=settings.CHAT_MAX_MESSAGE_CHARS),
        "model_name": _text(raw.get("model"), place, "model", limit=200),
        "parameters": _object(raw.get("parameters"), place, "parameters"),
        "variables": _text_values(raw.get("variables"), place, "variables"),
        "retrieval": clean_record(_object(raw.get("retrieval"), place, "retrieval")),
        "finished_at": _moment(raw.get("finished_at"), place, "finished_at"),
        **_usage(raw.get("usage"), place),
    }
    return _Planned(
        key=key,
        parent=parent,
        fields=fields,
        active_child=raw.get("active_child"),
        created_at=_moment(raw.get("created_at"), place, "created_at"),
    )


def _exported_tree(planned: list[_Planned], path, where: str) -> dict:
    """The messages parents first and the branch shown below each: what `active_child` says, then
    `active_path` from the first message down."""
    number = {}  # key -> its place in the file, counted from 1
    for n, message in enumerate(planned, start=1):
        if message.key in number:
            raise ImportRefused(f"id {message.key!r} is used by an earlier message too", f"{where}, message {n}")
        number[message.key] = n
    for message in planned:
        if message.parent is not None and message.parent not in number:
            raise ImportRefused(
                f"parent {message.parent!r} is not the id of a message in this conversation",
                f"{where}, message {number[message.key]}",
            )
    planned = _parents_first(planned, lambda key: f"{where}, message {number[key]}")
    active = _default_active(planned)
    parent_of = {message.key: message.parent for message in planned}
    for message in planned:
        chosen = message.active_child
        if chosen is not None:
            if not _is_key(chosen) or parent_of.get(chosen, object()) != message.key:
                raise ImportRefused(
                    "active_child must be the id of one of its replies, or null",
                    f"{where}, message {number[message.key]}",
                )
            active[message.key] = chosen
    if not isinstance(path, list) or any(not _is_key(key) or key not in parent_of for key in path):
        raise ImportRefused("active_path must be a list of the ids of its messages", where)
    for above, key in zip([None, *path], path):
        if parent_of[key] != above:
            raise ImportRefused(
                f"active_path: message {key!r} does not follow {'the start' if above is None else repr(above)}", where
            )
        active[above] = key
    return {"messages": planned, "active": active}


def _prompt_version(reference, where: str) -> PromptVersion | None:
    """The version "slug@number" names, if it is in this studio's library (which every signed-in
    person can read); otherwise the conversation is imported without it."""
    if reference is None:
        return None
    if not isinstance(reference, str):
        raise ImportRefused('prompt_version must be "slug@number" or null', where)
    slug, _, number = reference.rpartition("@")
    prompt = prompt_by_slug(slug) if slug and number.isascii() and number.isdigit() and len(slug) <= 100 else None
    if prompt is None:
        return None
    try:
        return version_resolve(prompt, number=number)
    except VersionNotFound:
        return None


# ChatGPT's conversations.json.


def _plan_of_chatgpt(item: dict, where: str) -> _Plan:
    """ChatGPT keeps a conversation as a tree of nodes (`mapping`), with system prompts, tool
    calls and hidden context among them: those are left out and their children hang from the
    nearest message kept above them. The active branch is the one that leads to `current_node`."""
    mapping = item["mapping"]
    if not isinstance(mapping, dict):
        raise ImportRefused("mapping must be an object of nodes", where)
    if len(mapping) > MAX_CHATGPT_NODES:
        raise ImportRefused(
            f"it holds {len(mapping):,} nodes; a conversation takes at most {MAX_CHATGPT_NODES:,}", where
        )
    nodes = []
    for node_id, node in mapping.items():
        at = f"{where}, node {node_id[:60]}"
        if not isinstance(node, dict):
            raise ImportRefused("a node must be an object", at)
        parent = node.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise ImportRefused("parent must be the id of another node, or null", at)
        # A parent the file does not hold (an export cut short): the node starts the conversation.
        nodes.append(
            _Planned(
                key=node_id,
                parent=parent if parent in mapping else None,
                fields=_chatgpt_message(node.get("message"), at),
            )
        )
    nodes = _parents_first(nodes, lambda key: f"{where}, node {key[:60]}")
    kept_at, planned = {}, []  # node id -> the nearest kept node at or above it (None: none)
    for node in nodes:
        above = kept_at[node.parent] if node.parent is not None else None
        if node.fields is None:
            kept_at[node.key] = above
            continue
        kept_at[node.key] = node.key
        message = _Planned(key=node.key, parent=above, fields=node.fields, created_at=node.fields.pop("created_at"))
        message.fields["content"] = _message_text(message.fields["content"], f"{where}, node {node.key[:60]}")
        planned.append(message)
    if len(planned) > MAX_MESSAGES:
        raise ImportRefused(f"it holds {len(planned):,} messages; a conversation takes at most {MAX_MESSAGES:,}", where)
    active = _default_active(planned)
    current = item.get("current_node")
    key = kept_at.get(current) if isinstance(current, str) else None
    parent_of = {message.key: message.parent for message in planned}
    while key is not None:  # from the current message up to the first: that branch is the active one
        active[parent_of[key]] = key
        key = parent_of[key]
    return _Plan(
        title=_title(item.get("title"), where),
        messages=planned,
        active=active,
        created_at=_epoch(item.get("create_time")),
    )


def _chatgpt_message(message, where: str) -> dict | None:
    """A node's message as our fields (plus "created_at"), or None for one left out: no message, a
    system or tool message, a hidden one, a message to a tool, or one with no text."""
    if message is None:
        return None
    if not isinstance(message, dict):
        raise ImportRefused("message must be an object or null", where)
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    if author.get("role") not in Message.Role.values or metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.get("recipient") not in (None, "all"):  # the model calling a tool
        return None
    if content.get("content_type") not in ("text", "multimodal_text"):  # code, tool output, context...
        return None
    parts = content.get("parts")
    text = "\n\n".join(part for part in parts if isinstance(part, str) and part) if isinstance(parts, list) else ""
    if not text.strip():
        return None
    model = metadata.get("model_slug") if author["role"] == Message.Role.ASSISTANT else ""
    return {
        "role": author["role"],
        "content": text,
        "status": Message.Status.STOPPED if message.get("status") == "in_progress" else Message.Status.COMPLETE,
        "model_name": model[:200] if isinstance(model, str) else "",
        "created_at": _epoch(message.get("create_time")),
    }


# The tree.


def _parents_first(messages: list[_Planned], place) -> list[_Planned]:
    """`messages` reordered so that each comes after its parent, otherwise in the file's order
    (an export is already so: it comes back unchanged). Every parent must be among them."""
    by_parent, placed, ordered = {}, set(), []
    for message in messages:
        if message.parent is None or message.parent in placed:
            stack = [message]
            while stack:
                ready = stack.pop()
                placed.add(ready.key)
                ordered.append(ready)
                stack.extend(reversed(by_parent.pop(ready.key, [])))
        else:
            by_parent.setdefault(message.parent, []).append(message)
    if by_parent:  # still waiting: their parents wait on them
        stuck = next(iter(by_parent.values()))[0]
        raise ImportRefused("its parents lead back to itself (a loop, not a conversation)", place(stuck.key))
    return ordered


def _default_active(messages: list[_Planned]) -> dict:
    """Below every message (and at the start) the newest reply is the one shown."""
    return {message.parent: message.key for message in messages}


def _create(owner, plan: _Plan, served: list[str] | None) -> Conversation:
    conversation = Conversation.objects.create(
        owner=owner,
        kind=Conversation.Kind.CHAT,
        title=plan.title,
        system_prompt=plan.system_prompt,
        # A model this studio does not serve: replies come from the served base model.
        model_name=(served_model_choice(plan.model_name, served) or "") if plan.model_name else "",
        prompt_version=plan.prompt_version,
        prompt_variables=plan.prompt_variables,
        template_every_turn=plan.template_every_turn,
        parameters=plan.parameters,
    )
    created = Message.objects.bulk_create(
        [Message(conversation=conversation, **message.fields) for message in plan.messages], batch_size=500
    )
    by_key = {message.key: row for message, row in zip(plan.messages, created)}
    _link(plan, by_key)
    conversation.active_root = by_key.get(plan.active.get(None))
    conversation.created_at = plan.created_at or conversation.created_at
    Conversation.objects.filter(pk=conversation.pk).update(
        active_root=conversation.active_root, created_at=conversation.created_at
    )
    return conversation


def _link(plan: _Plan, by_key: dict) -> None:
    """Each created message's parent, active reply and time, known only once every row has its id.
    One UPDATE a row, sent together: bulk_update builds a CASE expression of every row in Python
    (25 s for 10,000 messages on SQLite; this, under one)."""
    meta, quote = Message._meta, connection.ops.quote_name
    column = {name: quote(meta.get_field(name).column) for name in ("id", "parent", "active_child", "created_at")}
    created_at = meta.get_field("created_at")
    rows = []
    for message in plan.messages:
        row = by_key[message.key]
        parent, active_child = by_key.get(message.parent), by_key.get(plan.active.get(message.key))
        row.parent_id, row.active_child_id = parent and parent.pk, active_child and active_child.pk
        row.created_at = message.created_at or row.created_at
        rows.append(
            (row.parent_id, row.active_child_id, created_at.get_db_prep_value(row.created_at, connection), row.pk)
        )
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {quote(meta.db_table)} SET {column['parent']} = %s, {column['active_child']} = %s, "
            f"{column['created_at']} = %s WHERE {column['id']} = %s",
            rows,
        )


# Fields. Each check names the place ("conversation 3, message 12") and the field it refuses.


def _is_key(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool) and len(str(value)) <= 100


IMPORTED_MARK = " (imported)"


def _title(value, place: str) -> str:
    """The file's title, marked as imported (beside the chat it came from, the copy is told
    apart); a title marked already keeps its one mark."""
    title = " ".join(_text(value, place, "title", limit=10_000).split()) or Conversation.DEFAULT_TITLE
    if title.endswith(IMPORTED_MARK):
        title = title[: -len(IMPORTED_MARK)]
    return title_cut(title, TITLE_MAX_CHARS - len(IMPORTED_MARK)) + IMPORTED_MARK


def _text(value, place: str, name: str, *, limit: int) -> str:
    """Text of at most `limit` characters (null: empty). Storable already: parse_json refused NUL
    bytes and lone surrogates anywhere in the file."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImportRefused(f"{name} is not text", place)
    if len(value) > limit:
        raise ImportRefused(f"{name} is {len(value):,} characters; the limit is {limit:,}", place)
    return value


def _message_text(value, place: str) -> str:
    return _text(value, place, "content", limit=settings.CHAT_MAX_MESSAGE_CHARS)


def _object(value, place: str, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportRefused(f"{name} must be an object", place)
    _require_finite(value, place, name)
    return value


def _text_values(value, place: str, name: str) -> dict:
    value = _object(value, place, name)
    if not all(isinstance(text, str) and len(text) <= settings.CHAT_MAX_MESSAGE_CHARS for text in value.values()):
        raise ImportRefused(
            f"{name} must be an object of texts (at most {settings.CHAT_MAX_MESSAGE_CHARS:,} characters each)", place
        )
    return value


def _require_finite(value, place: str, name: str) -> None:
    """JSON's NaN and Infinity (Python's parser takes them): PostgreSQL's JSON cannot store them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ImportRefused(f"{name} holds NaN or Infinity, which cannot be stored", place)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _number(value, place: str, name: str, *, low, high, integer: bool):
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or value < low
        or (high is not None and value > high)
    ):
        kind = "an integer" if integer else "a number"
        raise ImportRefused(f"{name} must be {kind} from {low}" + (f" to {high}" if high is not None else ""), place)
    return value


def _usage(value, place: str) -> dict:
    value = _object(value, place, "usage")
    return {
        name: _number(
            value.get(name), place, f"usage.{name}", low=0, high=2**31 - 1 if integer else None, integer=integer
        )
        for name, integer in _USAGE_FIELDS.items()
    }


def _sampling(value, place: str) -> SamplingParameters:
    """The sampling parameters the conversation's replies use, checked by the rule a request's
    are (an import must not ask for more than a request can); names the studio does not use are
    left out."""
    value = _object(value, place, "parameters")
    try:
        return sampling_checked(value, max_new_tokens_cap=settings.LLM_MAX_NEW_TOKENS_CAP)
    except SamplingError as exc:
        raise ImportRefused(f"parameters.{exc.field} {exc.requirement}", place, code=exc.code) from None


def _moment(value, place: str, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_datetime(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:  # well formed, but no such day or hour
        moment = None
    if moment is None:
        raise ImportRefused(f"{name} must be a date and time (ISO 8601), or null", place)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


def _epoch(value) -> datetime | None:
    """ChatGPT's times: seconds since 1970, or null. One out of any sensible range is left out."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 32_503_680_000:
        return None
    return datetime.fromtimestamp(value, UTC)
