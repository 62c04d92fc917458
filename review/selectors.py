"""Reads of the review queue, planned once for the API and the pages: who may review a prompt's
traffic, a page of its items, one item with what the reply read, and the agreement figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from django.db.models import Count, Q

from chat.models import Conversation, Message
from knowledge.selectors import knowledge_bases_for
from prompts.models import Prompt

from .models import Review, ReviewItem

# Live traffic of a prompt: a `prompt:<slug>` API request, a chat started from a version, a playground
# run. Evaluation replies and retrieval rewrites are the studio's own work, never reviewed.
TRAFFIC_KINDS = (Conversation.Kind.API, Conversation.Kind.CHAT, Conversation.Kind.PLAYGROUND)
ITEMS_PER_PAGE = 50
SOURCE_TEXT_CHARS = 300  # of each retrieved passage, in an item's context
# The agreement figures read the newest this many reviewed items (overlapped ones for the
# reviewers', judged ones for the judge's): bounded however long the queue has run.
AGREEMENT_WINDOW = 2_000


def traffic_replies():
    """Assistant replies that are a prompt's live traffic (finished or not)."""
    return Message.objects.filter(
        role=Message.Role.ASSISTANT,
        conversation__kind__in=TRAFFIC_KINDS,
        conversation__prompt_version__isnull=False,
    )


def reply_prompt_id(message_id: int) -> int | None:
    """The prompt whose finished live reply `message_id` is; None for any other message."""
    return (
        traffic_replies()
        .filter(pk=message_id)
        .exclude(status__in=Message.IN_PROGRESS)
        .values_list("conversation__prompt_version__prompt_id", flat=True)
        .first()
    )


def reviewable_prompts(user):
    """The prompts whose traffic `user` reviews: as Prompt.can_edit (the owner, its editors, staff)."""
    if not getattr(user, "is_authenticated", False):
        return Prompt.objects.none()
    if user.is_staff:
        return Prompt.objects.all()
    return Prompt.objects.filter(Q(owner=user) | Q(editors=user)).distinct()


def items_visible_to(user):
    return ReviewItem.objects.filter(prompt__in=reviewable_prompts(user))


def _planned(items):
    return items.select_related(
        "prompt",
        "claimed_by",
        "assigned_to",
        "message__parent",
        "message__conversation__prompt_version",
    )


def items_page(*, user, prompt: Prompt | None, status: str = ReviewItem.Status.OPEN, after: int = 0):
    """One page of the queue, oldest first, after item `after` (a keyset: reviewing items while
    paging neither skips nor repeats one); (items, the next page's `after` or None). `status` "all":
    every item. Three queries (items, reviews, knowledge bases) whatever the page holds."""
    items = items_visible_to(user) if prompt is None else ReviewItem.objects.filter(prompt=prompt)
    if status != "all":
        items = items.filter(status=status)
    page = list(_planned(items.filter(pk__gt=after).order_by("pk"))[: ITEMS_PER_PAGE + 1])
    more = len(page) > ITEMS_PER_PAGE
    page = page[:ITEMS_PER_PAGE]
    with_reviews(page)
    for item in page:
        item.asked = asked_text(reply_input(item.message))
    return page, (page[-1].pk if more else None)


def with_reviews(items: list[ReviewItem]) -> list[ReviewItem]:
    """Each item's `review_list` (its reviews, oldest first, with their reviewers), in one query."""
    by_item: dict[int, list[Review]] = {item.pk: [] for item in items}
    for review in Review.objects.filter(item__in=list(by_item)).select_related("reviewer").order_by("pk"):
        by_item[review.item_id].append(review)
    for item in items:
        item.review_list = by_item[item.pk]
    return items


def item_for(*, user, item_id: int) -> ReviewItem | None:
    """The item, if `user` may review its prompt's traffic; None otherwise (never shown: a 404)."""
    item = _planned(items_visible_to(user)).filter(pk=item_id).first()
    if item is None:
        return None
    item.asked = asked_text(reply_input(item.message))
    return with_reviews([item])[0]


def next_open_item(*, item: ReviewItem, user) -> int | None:
    """The id of the prompt's next open item after `item` that `user` has not reviewed yet."""
    return (
        ReviewItem.objects.filter(prompt_id=item.prompt_id, status=ReviewItem.Status.OPEN, pk__gt=item.pk)
        .exclude(reviews__reviewer=user)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )


class ItemContext(TypedDict):
    system: str  # the system prompt the reply read (the version's instructions, or the chat's)
    sources: list[dict]  # the passages it read that the reviewer may see: n, document, page, text
    withheld: int  # passages from knowledge bases the reviewer may not see (counted, never shown)
    nothing_found: bool  # it searched and no passage passed


@dataclass
class Shown:
    """What a reviewer reads of an item: the input, the context, the reply."""

    input: dict | str  # the variables its user turn was rendered with, else the text sent
    context: ItemContext
    output: str


def visible_base_ids(user, sources: list[dict]) -> set[int]:
    """Of the knowledge bases `sources` came from, those `user` may see (one query, none without any)."""
    base_ids = {source.get("knowledge_base") for source in sources} - {None}
    if not base_ids:
        return set()
    return set(knowledge_bases_for(user=user).filter(pk__in=base_ids).values_list("pk", flat=True))


def sources_seen(sources: list[dict], visible: set[int]) -> list[dict]:
    """The retrieved passages from knowledge bases in `visible` (and those of no base: imported): a
    reviewer never reads a private knowledge base through someone else's reply."""
    return [source for source in sources if source.get("knowledge_base") is None or source["knowledge_base"] in visible]


def reply_input(message: Message) -> dict | str:
    """What was asked: the user turn's variables (a template's), else its text. The first turn of a
    conversation started from a version was rendered with the conversation's variables."""
    asked = message.parent
    if asked is None or asked.role != Message.Role.USER:
        return ""
    if asked.variables:
        return dict(asked.variables)
    conversation = message.conversation
    if asked.parent_id is None and conversation.prompt_variables:
        return dict(conversation.prompt_variables)
    return asked.content


def asked_text(asked: dict | str) -> str:
    """An input in one line of text: its variables' values, else the text."""
    return " · ".join(str(value) for value in asked.values()) if isinstance(asked, dict) else asked


# Where a reply was asked for, in words (an item's heading).
KIND_WORDS = {
    Conversation.Kind.API: "an API request",
    Conversation.Kind.CHAT: "a chat from the version",
    Conversation.Kind.PLAYGROUND: "a playground run",
}


def shown(items: list[ReviewItem], *, user) -> list[Shown]:
    """Each item's input, context and output as `user` may read them; one query for the sources."""
    records = [item.message.retrieval or {} for item in items]
    visible = visible_base_ids(user, [source for record in records for source in record.get("sources") or []])
    result = []
    for item, record in zip(items, records, strict=True):
        sources = record.get("sources") or []
        kept = sources_seen(sources, visible)
        result.append(
            Shown(
                input=reply_input(item.message),
                context={
                    "system": item.message.conversation.system_prompt,
                    "sources": [
                        {
                            "n": source.get("n"),
                            "document": source.get("document", ""),
                            "page": source.get("page"),
                            "text": (source.get("text") or "")[:SOURCE_TEXT_CHARS],
                        }
                        for source in kept
                    ],
                    "withheld": len(sources) - len(kept),
                    "nothing_found": bool(record.get("nothing_passed")),
                },
                output=item.message.content,
            )
        )
    return result


def item_json(item: ReviewItem, shown_item: Shown) -> dict:
    version = item.message.conversation.prompt_version
    return {
        "id": item.pk,
        "conversation": item.message.conversation_id,
        "message": item.message_id,
        "prompt": item.prompt.slug,
        "version": version.number if version is not None else None,
        "model": item.message.model_name,
        "input": shown_item.input,
        "context": shown_item.context,
        "output": shown_item.output,
        "reason": item.reason,
        "scores": item.scores,
        "status": item.status,
        "needs": item.needs,
        "reviews": [
            {"reviewer": review.reviewer.get_username(), "verdict": review.verdict, "case": review.case_id}
            for review in item.review_list
        ],
        "claimed_by": item.claimed_by.get_username() if item.claimed_by_id else None,
        "assigned_to": item.assigned_to.get_username() if item.assigned_to_id else None,
    }


def queue_counts(prompt: Prompt) -> dict[str, int]:
    """Items of the prompt by status: {"open": n, "corrected": n, "fine": n, "skipped": n}."""
    counts = dict.fromkeys(ReviewItem.Status.values, 0)
    for row in ReviewItem.objects.filter(prompt=prompt).values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


# --- agreement -------------------------------------------------------------------------------------


@dataclass
class Agreement:
    """How far reviewers agree with each other, and the online judge with them."""

    pairs: int  # overlapped items both reviewers judged (fine or corrected; a skip is no judgment)
    agreeing: int  # of those, the pairs that agree
    kappa: float | None  # Cohen's kappa of the pairs (None: too few, or one verdict only)
    judged: int  # items an online rule scored that a reviewer judged
    judge_agreeing: int  # of those, where the judge's "below threshold" is the reviewer's "corrected"

    @property
    def share(self) -> float | None:
        return self.agreeing / self.pairs if self.pairs else None

    @property
    def judge_share(self) -> float | None:
        return self.judge_agreeing / self.judged if self.judged else None

    def to_dict(self) -> dict:
        return {
            "reviewers": {"pairs": self.pairs, "agreeing": self.share, "kappa": self.kappa},
            "judge": {"items": self.judged, "agreeing": self.judge_share},
        }


JUDGED = (Review.Verdict.EXPECTED, Review.Verdict.FINE)


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' yes/no verdicts: (observed − chance agreement) / (1 − chance)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first_yes = sum(a for a, _ in pairs) / n
    second_yes = sum(b for _, b in pairs) / n
    chance = first_yes * second_yes + (1 - first_yes) * (1 - second_yes)
    if chance >= 1:  # both raters gave one verdict only: kappa is undefined
        return None
    return (observed - chance) / (1 - chance)


def agreement(prompt: Prompt) -> Agreement:
    """Reviewers: on the items two people reviewed, whether both said fine or both corrected it.
    The judge: on the items an online rule scored and a reviewer judged, whether "below the rule's
    threshold" matches "corrected" (for overlapped items, the first review). Two queries."""
    overlapped = (
        ReviewItem.objects.filter(prompt=prompt, needs=2, reviewed__gte=2)
        .order_by("-pk")
        .values("pk")[:AGREEMENT_WINDOW]
    )
    verdicts: dict[int, list[str]] = {}
    for item_id, verdict in (
        Review.objects.filter(item__in=overlapped).order_by("item_id", "pk").values_list("item_id", "verdict")
    ):
        verdicts.setdefault(item_id, []).append(verdict)
    pairs = [
        (first == Review.Verdict.EXPECTED, second == Review.Verdict.EXPECTED)
        for first, second, *_ in verdicts.values()
        if first in JUDGED and second in JUDGED
    ]
    judged = (
        Review.objects.filter(item__prompt=prompt, item__judge_below__isnull=False, verdict__in=JUDGED)
        .order_by("-item_id", "pk")  # the newest items first, each item's reviews in order
        .values_list("item_id", "item__judge_below", "verdict")
    )
    first_review: dict[int, bool] = {}
    for item_id, judge_below, verdict in judged[: AGREEMENT_WINDOW * 2]:
        first_review.setdefault(item_id, judge_below == (verdict == Review.Verdict.EXPECTED))
    return Agreement(
        pairs=len(pairs),
        agreeing=sum(a == b for a, b in pairs),
        kappa=cohen_kappa(pairs),
        judged=len(first_review),
        judge_agreeing=sum(first_review.values()),
    )
