"""Which knowledge a reply retrieves from, and how: the chat's own attachments and settings, and
its prompt version's. The search itself is knowledge.retrieval's; the record it returns is stored
with the reply (Message.retrieval) and read by the worker (the sources in the system turn) and the
page (citation chips)."""

from __future__ import annotations

from knowledge.retrieval import (
    WHEN_NOTHING_FOUND,
    RetrievalError,  # noqa: F401  (re-exported for the views)
    RetrievalRecord,
    clean_settings,
    retrieve,
)

from .models import Conversation


def clean_conversation_settings(raw) -> dict:
    """A chat's retrieval settings from its form or frame: k, mode, min_score, when_nothing_found."""
    cleaned = clean_settings(raw, "retrieval")
    when = (raw or {}).get("when_nothing_found") or "say"
    if when not in WHEN_NOTHING_FOUND:
        raise RetrievalError(f"must be one of {', '.join(WHEN_NOTHING_FOUND)}", "retrieval.when_nothing_found")
    return {**cleaned, "when_nothing_found": when}


def settings_in_effect(conversation: Conversation) -> dict:
    """The chat's own settings, else its prompt version's, else the defaults."""
    version = conversation.prompt_version
    own = conversation.retrieval_settings or (version.retrieval if version is not None else {}) or {}
    try:
        return clean_conversation_settings(
            {key: own.get(key) for key in ("k", "mode", "min_score", "when_nothing_found")}
        )
    except RetrievalError:  # stored before a limit changed: the defaults rather than no reply
        return clean_conversation_settings({})


def attached(conversation: Conversation) -> tuple[list[int], list[int]]:
    """(knowledge base ids, document ids) a reply of this conversation searches."""
    saved = conversation.pk is not None  # one being started has nothing of its own attached yet
    base_ids = list(conversation.knowledge_bases.values_list("pk", flat=True)) if saved else []
    version = conversation.prompt_version
    if version is not None:
        base_ids += [kb["id"] for kb in (version.retrieval or {}).get("knowledge_bases", []) if kb.get("id")]
    return base_ids, list(conversation.documents.values_list("pk", flat=True)) if saved else []


def query_of(conversation: Conversation, content: str, variables: dict) -> str:
    """What is searched for: the prompt version's query variable when it names one, else what the
    person wrote (the values of a rendered template, not its boilerplate; else the message)."""
    version = conversation.prompt_version
    query_variable = (version.retrieval or {}).get("query", "") if version is not None else ""
    if query_variable and isinstance(variables.get(query_variable), str):
        return variables[query_variable]
    if variables:
        return "\n".join(value for value in variables.values() if isinstance(value, str))
    return content


def reply_retrieval(conversation: Conversation, *, content: str, variables: dict) -> RetrievalRecord:
    """The record for the reply to a message (`content`, rendered from `variables`): {} when nothing
    is attached."""
    base_ids, document_ids = attached(conversation)
    if not base_ids and not document_ids:
        return {}
    in_effect = settings_in_effect(conversation)
    record = retrieve(
        user=conversation.owner,
        query=query_of(conversation, content, variables),
        knowledge_base_ids=base_ids,
        document_ids=document_ids,
        k=in_effect["k"],
        mode=in_effect["mode"],
        min_score=in_effect["min_score"],
    )
    record["when_nothing_found"] = in_effect["when_nothing_found"]
    version = conversation.prompt_version
    record["layout"] = (
        "template" if version is not None and (version.retrieval or {}).get("layout") == "template" else "system"
    )
    return record
