"""Search over one's own conversations: their titles and finished messages, through the full-text
index of chat/search_index.py (FTS5 on SQLite, tsvector on PostgreSQL), with filters."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import search_index
from .models import Conversation, Message

# What search reads of a query: the person types into a box, and 10 kB pasted into it must cost
# no more than a sentence does.
MAX_QUERY_CHARS = 500
MAX_TERMS = 32
PREFIX_MIN_CHARS = 3  # "lis" finds "Lisbon"; a shorter last word is taken whole ("a*" is half the index)
# Chats and one's requests to the OpenAI-compatible API (both listed in the sidebar); playground
# runs live on their prompt's page and an evaluation's cases are removed when scored.
SEARCHED_KINDS = (Conversation.Kind.CHAT, Conversation.Kind.API)
RESULTS_LIMIT = 50  # the most recent matches; more words or a filter narrow them

# Control characters (NUL included), lone surrogates and the snippet markers are never searched for.
_UNSEARCHABLE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff{search_index.MARK_START}{search_index.MARK_END}]")
_WORD = re.compile(r"\w+")


@dataclasses.dataclass(frozen=True)
class SearchTerms:
    """A query as search reads it: phrases (what the person typed between spaces), all required,
    each matched as text (quotes, `*`, `-`, `OR`, `NEAR(` mean nothing); the last one a prefix
    when it is a word of PREFIX_MIN_CHARS or more."""

    phrases: tuple[str, ...]
    prefix: bool

    def __bool__(self) -> bool:
        return bool(self.phrases)


def search_terms(query: str) -> SearchTerms:
    text = _UNSEARCHABLE.sub(" ", (query or "")[:MAX_QUERY_CHARS])
    # A phrase without a letter or digit has no words to look for ("-", "*", `"`).
    phrases = tuple(chunk for chunk in text.split() if any(char.isalnum() for char in chunk))[:MAX_TERMS]
    prefix = bool(phrases) and len(phrases[-1]) >= PREFIX_MIN_CHARS and _WORD.fullmatch(phrases[-1]) is not None
    return SearchTerms(phrases=phrases, prefix=prefix)


@dataclasses.dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    title: str
    title_html: SafeString  # the title, escaped, its matched words in <mark>
    snippet_html: SafeString  # a passage of the matched message, escaped, matches in <mark>; "" if none
    message_id: int | None  # the newest message that matched (None: only the title, or only filters)
    date: datetime  # the conversation's last activity
    kind: str
    pinned: bool
    archived: bool  # archived conversations are found too, and marked

    @property
    def url(self) -> str:
        path = reverse("chat:conversation", args=[self.conversation_id])
        return f"{path}#message-{self.message_id}" if self.message_id else path


def conversations_search(
    *,
    user,
    query: str = "",
    model: str | None = None,
    prompt: str | None = None,
    since: date | None = None,
    until: date | None = None,
    flagged: bool | None = None,
    limit: int = RESULTS_LIMIT,
) -> list[SearchHit]:
    """The user's conversations (SEARCHED_KINDS, archived ones included) whose title or a finished
    message contains every phrase of `query`, narrowed by the filters, most recently active first.
    An empty query lists by the filters alone; no query and no filter finds nothing.

    model: a reply was written by it (or the chat asks for it); prompt: started from a version of
    the prompt with this slug; since/until: active on some day of the range (created by its end,
    last active from its start); flagged: has (True) or has no (False) reply flagged as a failure case.
    """
    terms = search_terms(query)
    if not searches_anything(query=query, model=model, prompt=prompt, since=since, until=until, flagged=flagged):
        return []
    conversations = _filtered(
        Conversation.objects.filter(owner=user, kind__in=SEARCHED_KINDS),
        model=model,
        prompt=prompt,
        since=since,
        until=until,
        flagged=flagged,
    )
    if terms:
        vendor = connection.vendor
        conversations = conversations.filter(
            Q(pk__in=RawSQL(*search_index.matching_conversation_ids(vendor, terms.phrases, terms.prefix)))
            | Q(pk__in=RawSQL(*search_index.matching_title_ids(vendor, terms.phrases, terms.prefix)))
        )
    rows = list(
        conversations.order_by("-updated_at", "-pk").values(
            "pk", "title", "updated_at", "kind", "pinned_at", "archived_at"
        )[: max(1, min(limit, 200))]
    )
    last_match, snippets, titles = {}, {}, {}
    if terms and rows:
        ids, words = [row["pk"] for row in rows], {"phrases": terms.phrases, "prefix": terms.prefix}
        last_match = search_index.last_matches(connection, conversation_ids=ids, **words)
        snippets = search_index.snippets(connection, message_ids=list(last_match.values()), **words)
        titles = search_index.highlighted_titles(connection, conversation_ids=ids, **words)
    hits = []
    for row in rows:
        message_id = last_match.get(row["pk"])
        hits.append(
            SearchHit(
                conversation_id=row["pk"],
                title=row["title"],
                title_html=marked_html(titles.get(row["pk"], row["title"])),
                snippet_html=marked_html(snippets.get(message_id, "")),
                message_id=message_id,
                date=row["updated_at"],
                kind=row["kind"],
                pinned=row["pinned_at"] is not None,
                archived=row["archived_at"] is not None,
            )
        )
    return hits


def searches_anything(*, query: str = "", model=None, prompt=None, since=None, until=None, flagged=None) -> bool:
    """Whether these arguments ask for anything (a query of only punctuation does not)."""
    return bool(search_terms(query)) or bool(model or prompt or since or until) or flagged is not None


def prompt_slugs_of(*, user) -> list[str]:
    """The slugs of the prompts the user's searched conversations were started from (the filter's choices)."""
    return list(
        Conversation.objects.filter(owner=user, kind__in=SEARCHED_KINDS, prompt_version__isnull=False)
        .order_by("prompt_version__prompt__slug")
        .values_list("prompt_version__prompt__slug", flat=True)
        .distinct()[:200]
    )


def _filtered(conversations, *, model, prompt, since, until, flagged):
    if model:
        by_model = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.ASSISTANT, model_name=model)
        conversations = conversations.filter(Q(model_name=model) | Exists(by_model))
    if prompt:
        conversations = conversations.filter(prompt_version__prompt__slug=prompt)
    if since:
        conversations = conversations.filter(updated_at__gte=_start_of(since))
    if until:
        conversations = conversations.filter(created_at__lt=_start_of(until + timedelta(days=1)))
    if flagged is not None:
        has_flag = Exists(Message.objects.filter(conversation=OuterRef("pk"), flagged_at__isnull=False))
        conversations = conversations.filter(has_flag if flagged else ~has_flag)
    return conversations


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def marked_html(text: str) -> SafeString:
    """`text` (stored text, with search_index's match markers) as HTML: everything escaped, each
    marked match in <mark>. A marker character the text itself held pairs with nothing and is
    dropped, so the HTML is always well formed."""
    html, open_mark = [], False
    for part in re.split(f"([{search_index.MARK_START}{search_index.MARK_END}])", text or ""):
        if part == search_index.MARK_START:
            if not open_mark:
                html.append("<mark>")
                open_mark = True
        elif part == search_index.MARK_END:
            if open_mark:
                html.append("</mark>")
                open_mark = False
        else:
            html.append(escape(part))
    if open_mark:
        html.append("</mark>")
    return mark_safe("".join(html))
