"""Pages of the review queue: `/review/?prompt=<slug>` (the queue beside the item being reviewed,
htmx), an item's own page, and the forms that review, claim, assign, pick and sample. Who may see
what is the API's rule: a prompt's owner, editors and staff; anyone else gets a 404 for an item
(a 403 for a prompt they may see but not review)."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from prompts import selectors as prompt_selectors
from studio.errors import NotFound
from studio.input_checks import whole_number_or_none

from . import selectors, services
from .models import Review, ReviewItem
from .services import ReviewError

STATUS_TABS = (*ReviewItem.Status.values, "all")


def _prompt_or_error(request, slug: str):
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise Http404("There is no such prompt.")
    if not prompt.can_edit(request.user):
        raise PermissionDenied(f"Only the owner, the editors and staff review the traffic of “{prompt.name}”.")
    return prompt


def _item_or_404(request, item_id):
    item = selectors.item_for(user=request.user, item_id=item_id)
    if item is None:
        raise Http404("There is no such review item.")
    return item


def _status(request) -> str:
    status = request.GET.get("status") or ReviewItem.Status.OPEN
    return status if status in STATUS_TABS else ReviewItem.Status.OPEN


def _list_context(request, prompt, status: str, after: int = 0) -> dict:
    items, next_after = selectors.items_page(user=request.user, prompt=prompt, status=status, after=after)
    return {"prompt": prompt, "status": status, "items": items, "next_after": next_after}


def _item_context(request, item: ReviewItem, **extra) -> dict:
    reviewed_by_me = any(review.reviewer_id == request.user.pk for review in item.review_list)
    return {
        "item": item,
        "shown": selectors.shown([item], user=request.user)[0],
        "version": item.message.conversation.prompt_version,
        "asked_from": selectors.KIND_WORDS.get(item.message.conversation.kind, ""),
        "can_review": item.status == ReviewItem.Status.OPEN and not reviewed_by_me,
        "reviewed_by_me": reviewed_by_me,
        **extra,
    }


@login_required
@require_GET
def queue(request):
    """Without a prompt: the prompts the person reviews, with their open items. With one: its queue."""
    slug = request.GET.get("prompt", "")
    if not slug:
        prompts = (
            selectors.reviewable_prompts(request.user)
            .annotate(open_items=Count("review_items", filter=Q(review_items__status=ReviewItem.Status.OPEN)))
            .order_by("name", "id")[:200]
        )
        return render(request, "review/prompts.html", {"prompts": prompts})
    prompt = _prompt_or_error(request, slug)
    context = _list_context(request, prompt, _status(request))
    chosen = whole_number_or_none(request.GET.get("item"))
    item = selectors.item_for(user=request.user, item_id=chosen) if chosen else None
    item = item if item is not None and item.prompt_id == prompt.pk else (context["items"] or [None])[0]
    context.update(
        counts=selectors.queue_counts(prompt),
        agreement=selectors.agreement(prompt),
        status_tabs=STATUS_TABS,
        **(_item_context(request, item) if item is not None else {}),
    )
    return render(request, "review/queue.html", context)


@login_required
@require_GET
def queue_items(request):
    """The next page of the queue's list ("More"), appended below the rows shown."""
    prompt = _prompt_or_error(request, request.GET.get("prompt", ""))
    after = whole_number_or_none(request.GET.get("after")) or 0
    return render(request, "review/_queue_rows.html", _list_context(request, prompt, _status(request), after))


@login_required
@require_GET
def item_detail(request, item_id):
    item = _item_or_404(request, item_id)
    if request.htmx:
        return render(request, "review/_item.html", _item_context(request, item))
    query = f"?prompt={item.prompt.slug}&status=all&item={item.pk}"
    return redirect(reverse("review:queue") + query)


def _item_answer(request, item_id, action) -> object:
    """Run `action(item)` (a service call that returns what to tell the person) and answer with the
    item as it is now, or with the refusal beside the buttons (409: another reviewer was first)."""
    item = _item_or_404(request, item_id)
    try:
        done = action(item)
    except ReviewError as exc:
        # Beside what caused it: the answer's textarea, the assignment's field, else the buttons.
        error_at = {"expected": "expected", "user": "assign"}.get(exc.field, "actions")
        context = _item_context(request, item, error=exc.message, error_at=error_at)
        return render(request, "review/_item.html", context, status=exc.status)
    item = _item_or_404(request, item_id)
    next_item = selectors.next_open_item(item=item, user=request.user)
    return render(request, "review/_item.html", _item_context(request, item, done=done, next_item=next_item))


@login_required
@require_POST
def item_review(request, item_id):
    verdict = request.POST.get("verdict") or Review.Verdict.EXPECTED

    def review(item):
        made = services.item_review(
            item=item,
            user=request.user,
            verdict=verdict,
            expected=request.POST.get("expected", ""),
            shared=request.POST.get("shared") == "on",
        )
        if made.case_id:
            return {"text": f"Saved as failure case #{made.case_id}.", "case": made.case_id}
        return {"text": "Marked fine." if made.verdict == Review.Verdict.FINE else "Skipped."}

    return _item_answer(request, item_id, review)


@login_required
@require_POST
def item_claim(request, item_id):
    def claim(item):
        services.item_claim(item=item, user=request.user)
        return {"text": f"Claimed for you for {services.CLAIM_MINUTES} minutes."}

    return _item_answer(request, item_id, claim)


@login_required
@require_POST
def item_assign(request, item_id):
    username = request.POST.get("user", "").strip()

    def assign(item):
        services.item_assign(item=item, username=username)
        return {"text": f"Assigned to {username}." if username else "Unassigned."}

    return _item_answer(request, item_id, assign)


@login_required
@require_POST
def pick(request):
    """ "Send to review" on a reply: its item (new or open already), shown in its prompt's queue."""
    message_id = whole_number_or_none(request.POST.get("message"))
    try:
        item, _ = services.item_pick(user=request.user, message_id=message_id)
    except NotFound:
        raise Http404("There is no such reply of a prompt you review.") from None
    return redirect(reverse("review:queue") + f"?prompt={item.prompt.slug}&item={item.pk}")


@login_required
@require_POST
def calibration(request):
    """Add a random sample of the prompt's recent replies to its queue (the page's form)."""
    prompt = _prompt_or_error(request, request.POST.get("prompt", ""))
    count = whole_number_or_none(request.POST.get("count"), high=services.MAX_CALIBRATION_SAMPLE) or 10
    services.calibration_sample(prompt=prompt, count=count)
    return redirect(reverse("review:queue") + f"?prompt={prompt.slug}")
