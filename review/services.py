"""Writes to the review queue: replies landing in it (a low online score, a thumbs down, picked by
hand, a calibration sample), claims and assignments, and reviews (a correction becomes a failure
case). The API, the pages, the signal receivers and the management command call these."""

from __future__ import annotations

import random
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, Min, OuterRef
from django.utils import timezone

from chat.models import Message
from chat.signals import reply_flagged
from evals.models import FailureCase
from evals.services import MAX_TEXT_CHARS, case_create, flag_prefill
from prompts.models import Prompt
from studio.errors import NotFound, StudioError
from studio.input_checks import find_unstorable

from . import selectors
from .models import Review, ReviewItem

# A claim keeps an item for its reviewer this long; then anyone may take it again.
CLAIM_MINUTES = 30
# Replies one calibration sample adds to a prompt's queue at most.
MAX_CALIBRATION_SAMPLE = 100
# Reasons that land a reply by themselves: once a person has reviewed the reply they add no item
# again (its scores join the reviewed item). Picking by hand always opens one.
AUTOMATIC = (ReviewItem.Reason.LOW_SCORE, ReviewItem.Reason.THUMBS_DOWN, ReviewItem.Reason.CALIBRATION)


class ReviewError(StudioError):
    """A review the studio refuses; `field` names what to fix."""


class ReviewConflict(ReviewError):
    """Someone else got there first (another reviewer, another claim): 409, saying who."""

    status = 409


# --- replies landing in the queue --------------------------------------------------------------------


def item_add(
    *, message_id: int, reason: str, scores: dict | None = None, judge_below: bool | None = None
) -> ReviewItem | None:
    """Land a finished live reply of a prompt in its queue, for `reason`; None when it is no
    prompt's live traffic. A reply with an open item keeps that one (the new scores and the judge's
    verdict join it); a reply already reviewed gets a new item only when picked by hand."""
    prompt_id = selectors.reply_prompt_id(message_id)
    if prompt_id is None:
        return None
    for _ in range(2):
        try:
            with transaction.atomic():
                return _item_add(message_id, prompt_id, reason, scores or {}, judge_below)
        except IntegrityError:
            continue  # another item of this reply landed at the same moment: join it on the next pass
    return None


def _item_add(message_id, prompt_id, reason, scores, judge_below) -> ReviewItem:
    items = ReviewItem.objects.select_for_update().filter(message_id=message_id).order_by("-pk")
    existing = items.filter(status=ReviewItem.Status.OPEN).first()
    if existing is None and reason in AUTOMATIC:
        existing = items.first()  # reviewed already: a person has looked at it
    if existing is not None:
        _judge_join(existing, scores, judge_below)
        return existing
    item = ReviewItem.objects.create(
        message_id=message_id, prompt_id=prompt_id, reason=reason, scores=scores, judge_below=judge_below
    )
    needs = ReviewItem.needs_for(item.pk, settings.REVIEW_OVERLAP)
    if needs != item.needs:
        ReviewItem.objects.filter(pk=item.pk).update(needs=needs)
        item.needs = needs
    return item


def _judge_join(item: ReviewItem, scores: dict, judge_below: bool | None) -> None:
    """Merge a rule's scores and verdict into the item: below by any rule is below."""
    if not scores and judge_below is None:
        return
    item.scores = {**item.scores, **scores}
    if judge_below is not None:
        item.judge_below = judge_below if item.judge_below is None else (item.judge_below or judge_below)
    item.save(update_fields=["scores", "judge_below"])


def reply_scored(*, message_id: int, scores: dict, below_threshold: bool) -> ReviewItem | None:
    """An online rule scored a reply: below its threshold, it lands (reason low_score); above, its
    scores and verdict join an item the reply already has (the judge's agreement is measured on it)."""
    if below_threshold:
        return item_add(message_id=message_id, reason=ReviewItem.Reason.LOW_SCORE, scores=scores, judge_below=True)
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().filter(message_id=message_id).order_by("-pk").first()
        if item is not None:
            _judge_join(item, scores, False)
    return item


def thumbs_down_withdrawn(*, message_id: int) -> None:
    """The person took their thumbs down back: its item leaves the queue unless a reviewer has begun
    on it, or an online rule also scored it low (it stays, for that reason)."""
    with transaction.atomic():
        items = ReviewItem.objects.filter(
            message_id=message_id, reason=ReviewItem.Reason.THUMBS_DOWN, status=ReviewItem.Status.OPEN, reviewed=0
        )
        items.filter(judge_below=True).update(reason=ReviewItem.Reason.LOW_SCORE)
        items.exclude(judge_below=True).delete()


def item_pick(*, user, message_id) -> tuple[ReviewItem, bool]:
    """Send a reply to review by hand: (the item, whether it is new). Only a reply of a prompt the
    person may review; any other is never shown (NotFound)."""
    prompt_id = selectors.reply_prompt_id(message_id) if isinstance(message_id, int) else None
    prompt = Prompt.objects.filter(pk=prompt_id).first() if prompt_id else None
    if prompt is None or not prompt.can_edit(user):
        raise NotFound(f"There is no finished reply {str(message_id)[:20]} of a prompt you review.", "message")
    open_item = ReviewItem.objects.filter(message_id=message_id, status=ReviewItem.Status.OPEN).first()
    if open_item is not None:
        return open_item, False
    return item_add(message_id=message_id, reason=ReviewItem.Reason.PICKED), True


def calibration_sample(*, prompt: Prompt, count: int, days: int = 7, seed: int | None = None) -> list[ReviewItem]:
    """Add up to `count` random finished replies of the prompt from the last `days` days that no item
    holds yet (reason calibration): what the reviewers see of replies nothing flagged. Random ids are
    probed between the window's first and last reply (two queries a pick, however many replies the
    window holds), so a reply after a long gap of ids is a little likelier than others."""
    if not 1 <= count <= MAX_CALIBRATION_SAMPLE:
        raise ReviewError(f"from 1 to {MAX_CALIBRATION_SAMPLE} replies at once", "count")
    since = timezone.now() - timedelta(days=days)
    candidates = (
        selectors.traffic_replies()
        .filter(conversation__prompt_version__prompt=prompt, status=Message.Status.COMPLETE, created_at__gte=since)
        .exclude(Exists(ReviewItem.objects.filter(message=OuterRef("pk"))))
    )
    bounds = candidates.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None:
        return []
    chooser = random.Random(seed)
    added: list[ReviewItem] = []
    for _ in range(count * 3):  # a probe may land on a reply just added: a few more tries
        if len(added) == count:
            break
        probe = chooser.randint(bounds["low"], bounds["high"])
        message_id = candidates.filter(pk__gte=probe).order_by("pk").values_list("pk", flat=True).first()
        if message_id is None or any(item.message_id == message_id for item in added):
            continue
        item = item_add(message_id=message_id, reason=ReviewItem.Reason.CALIBRATION)
        if item is not None and item.reason == ReviewItem.Reason.CALIBRATION:
            added.append(item)
    return added


# --- claims and assignments ---------------------------------------------------------------------------


def _claim_live(item: ReviewItem) -> bool:
    return item.claimed_by_id is not None and item.claimed_at > timezone.now() - timedelta(minutes=CLAIM_MINUTES)


def _require_reviewable_by(item: ReviewItem, user) -> None:
    """Refuse (409, saying who) a review or claim of an item that is no longer open, that `user`
    reviewed already, or that someone else has claimed. `item` is locked by the caller."""
    reviewers = list(item.reviews.select_related("reviewer").order_by("pk"))
    if item.status != ReviewItem.Status.OPEN:
        names = ", ".join(review.reviewer.get_username() for review in reviewers) or "someone"
        raise ReviewConflict(f"already reviewed by {names} ({item.get_status_display()})", code="already_reviewed")
    if any(review.reviewer_id == user.pk for review in reviewers):
        raise ReviewConflict(
            f"already reviewed by {user.get_username()} (you): it waits for a second reviewer",
            code="already_reviewed",
        )
    if _claim_live(item) and item.claimed_by_id != user.pk:
        raise ReviewConflict(f"claimed by {item.claimed_by.get_username()}", code="claimed")


def item_claim(*, item: ReviewItem, user) -> ReviewItem:
    """Take the item for `user` for CLAIM_MINUTES (a review releases it)."""
    with transaction.atomic():
        # Locked: two reviewers claiming at once take turns, and the second is told who has it.
        # (No join in a locking query: PostgreSQL refuses FOR UPDATE beside an outer join.)
        locked = ReviewItem.objects.select_for_update().get(pk=item.pk)
        _require_reviewable_by(locked, user)
        locked.claimed_by, locked.claimed_at = user, timezone.now()
        locked.save(update_fields=["claimed_by", "claimed_at"])
    return locked


def item_assign(*, item: ReviewItem, username: str | None) -> ReviewItem:
    """Assign the item to a person who may review the prompt's traffic (None or "": nobody)."""
    if username not in (None, "") and not isinstance(username, str):
        raise ReviewError("must be a user name, or null to unassign", "user")
    person = None
    if username:
        person = get_user_model().objects.filter(username=username[:150], is_active=True).first()
        if person is None:
            raise ReviewError(f"there is no one named “{username[:60]}”", "user")
        if not item.prompt.can_edit(person):
            raise ReviewError(
                f"{person.get_username()} may not review “{item.prompt.slug}” (its owner, editors and staff do)", "user"
            )
    ReviewItem.objects.filter(pk=item.pk).update(assigned_to=person)
    item.assigned_to = person
    return item


# --- reviews ------------------------------------------------------------------------------------------


def _final_status(verdicts: list[str]) -> str:
    if Review.Verdict.EXPECTED in verdicts:
        return ReviewItem.Status.CORRECTED
    if Review.Verdict.FINE in verdicts:
        return ReviewItem.Status.FINE
    return ReviewItem.Status.SKIPPED


def item_review(*, item: ReviewItem, user, verdict: str, expected: str = "", shared: bool | None = None) -> Review:
    """One reviewer's review: the expected answer (a failure case of the reply, source
    `production`), fine, or skip. An item needing two reviews stays open after the first, for
    another reviewer. Two reviewers at once: one wins, the other is told who (ReviewConflict)."""
    if verdict not in Review.Verdict.values:
        raise ReviewError('send {"expected": "..."}, or {"verdict": "fine"} or {"verdict": "skip"}', "verdict")
    if verdict == Review.Verdict.EXPECTED:
        if not isinstance(expected, str) or not expected.strip():
            raise ReviewError("write the answer the model should have given", "expected")
        if len(expected) > MAX_TEXT_CHARS:
            raise ReviewError(f"is longer than {MAX_TEXT_CHARS:,} characters", "expected")
    if shared is not None and not isinstance(shared, bool):
        raise ReviewError("must be true or false", "shared")
    with transaction.atomic():
        # The race: two reviewers posting at once. The row lock makes the second wait for the first
        # to commit, then read its outcome (SQLite's transactions take the write lock when they
        # begin, which serialises them the same way).
        locked = ReviewItem.objects.select_for_update().get(pk=item.pk)
        _require_reviewable_by(locked, user)
        case = _correction_case(locked, user, expected, shared) if verdict == Review.Verdict.EXPECTED else None
        review = Review.objects.create(
            item=locked, reviewer=user, verdict=verdict, expected=expected if case else "", case=case
        )
        verdicts = list(locked.reviews.values_list("verdict", flat=True))
        done = len(verdicts) >= locked.needs
        locked.reviewed = len(verdicts)
        locked.status = _final_status(verdicts) if done else ReviewItem.Status.OPEN
        locked.claimed_by, locked.claimed_at = None, None
        locked.save(update_fields=["reviewed", "status", "claimed_by", "claimed_at"])
    item.status, item.reviewed = locked.status, locked.reviewed
    return review


def _correction_case(item: ReviewItem, user, expected: str, shared: bool | None) -> FailureCase:
    """The failure case a correction makes: the reply's four columns as a flag takes them (its
    version, input, context, answer and model), the reviewer's expected answer, linked to the reply
    and its conversation. Passages from knowledge bases the reviewer may not see stay out."""
    message = Message.objects.select_related("conversation__prompt_version__prompt", "parent").get(pk=item.message_id)
    prefill = flag_prefill(message)
    retrieved = selectors.sources_seen(prefill["retrieved"], selectors.visible_base_ids(user, prefill["retrieved"]))
    fields = {
        "prompt_version": prefill["prompt_version"],
        "input_variables": prefill["input_variables"],
        "input_text": prefill["input_text"],
        "context": prefill["context"],
        "actual": prefill["actual"],
        "model_name": prefill["model_name"],
        "retrieved": retrieved,
        "expected": expected,
        "note": f"From the review queue (item #{item.pk}: {item.get_reason_display().lower()}).",
    }
    unstorable = find_unstorable({name: value for name, value in fields.items() if name != "prompt_version"})
    if unstorable:
        raise ReviewError(unstorable[1], unstorable[0])
    case = case_create(
        user=user,
        fields=fields,
        source=FailureCase.Source.PRODUCTION,
        shared=shared,
        source_message=message,
        source_conversation=message.conversation,
    )
    Message.objects.filter(pk=message.pk).update(flagged_at=timezone.now())
    transaction.on_commit(lambda: reply_flagged.send(sender=Message, message_id=message.pk))
    return case
