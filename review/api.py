"""HTTP API of the review queue (Bearer tokens, JSON). Routes and answers are in README.md, "Review
queue". A prompt's items are seen by its owner, its editors and staff; anyone else's requests
for an item are answered as if it did not exist."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from prompts import selectors as prompt_selectors
from studio.errors import Forbidden, NotFound, StudioError
from studio.input_checks import whole_number_or_none

from . import selectors, services
from .models import Review, ReviewItem

STATUSES = (*ReviewItem.Status.values, "all")
REVIEW_SHAPE = (
    'Send {"expected": "the answer the model should have given"}, or {"verdict": "fine"} or {"verdict": "skip"}.'
)


def prompt_to_review(user, slug: str):
    """The prompt `slug` names, if `user` reviews its traffic: 404 when there is none, 403 when they
    may see it (prompts are team data) but not review it."""
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug[:100]}”.")
    if not prompt.can_edit(user):
        raise Forbidden(f"Only the owner, the editors and staff review the traffic of “{prompt.slug}”.")
    return prompt


def _item_or_404(user, item_id):
    item = selectors.item_for(user=user, item_id=item_id)
    if item is None:
        raise NotFound(f"There is no review item {item_id}.")
    return item


@api_endpoint("GET", "POST", json_body=True)
def review_queue(request, user, body):
    if request.method == "POST":
        return _pick(user, body)
    slug = request.GET.get("prompt", "")
    prompt = prompt_to_review(user, slug) if slug else None
    status = request.GET.get("status") or ReviewItem.Status.OPEN
    if status not in STATUSES:
        raise StudioError(f"must be one of {', '.join(STATUSES)}", "status")
    after = request.GET.get("after")
    after_id = whole_number_or_none(after) if after not in (None, "") else 0
    if after_id is None:
        raise StudioError("must be an item id, as a page's `next` gives it", "after")
    items, next_after = selectors.items_page(user=user, prompt=prompt, status=status, after=after_id)
    shown = selectors.shown(items, user=user)
    query = request.GET.copy()
    if next_after is not None:
        query["after"] = str(next_after)
    return JsonResponse(
        {
            "items": [selectors.item_json(item, shown_item) for item, shown_item in zip(items, shown, strict=True)],
            "next": f"{request.path}?{query.urlencode()}" if next_after is not None else None,
        }
    )


def _pick(user, body):
    if not isinstance(body, dict) or set(body) != {"message"}:
        raise StudioError('Send {"message": the id of a reply} to send it to review.')
    message_id = whole_number_or_none(body["message"]) if not isinstance(body["message"], bool) else None
    if message_id is None:
        raise StudioError("must be the id of a reply", "message")
    item, created = services.item_pick(user=user, message_id=message_id)
    return JsonResponse({"id": item.pk, "status": item.status}, status=201 if created else 200)


@api_endpoint("POST", json_body=True)
def review_item(request, user, body, item_id):
    item = _item_or_404(user, item_id)
    if not isinstance(body, dict) or not ({"expected", "verdict"} & set(body)):
        raise StudioError(REVIEW_SHAPE)
    if "expected" in body:
        if body.get("verdict", Review.Verdict.EXPECTED) != Review.Verdict.EXPECTED:
            raise StudioError('an expected answer is a correction: send it without "verdict"', "verdict")
        verdict = Review.Verdict.EXPECTED
    elif body["verdict"] in (Review.Verdict.FINE, Review.Verdict.SKIP):
        verdict = body["verdict"]
    else:
        raise StudioError(REVIEW_SHAPE, "verdict")
    review = services.item_review(
        item=item, user=user, verdict=verdict, expected=body.get("expected", ""), shared=body.get("shared")
    )
    if review.case_id:
        return JsonResponse({"case": review.case_id, "id": item.pk, "status": item.status}, status=201)
    return JsonResponse({"id": item.pk, "status": item.status, "verdict": review.verdict})


@api_endpoint("POST")
def review_item_claim(request, user, item_id):
    item = services.item_claim(item=_item_or_404(user, item_id), user=user)
    return JsonResponse({"id": item.pk, "claimed_by": user.get_username(), "claimed_at": item.claimed_at.isoformat()})


@api_endpoint("POST", json_body=True)
def review_item_assign(request, user, body, item_id):
    if not isinstance(body, dict) or "user" not in body:
        raise StudioError('Send {"user": a user name}, or {"user": null} to unassign.')
    item = services.item_assign(item=_item_or_404(user, item_id), username=body["user"])
    return JsonResponse({"id": item.pk, "assigned_to": item.assigned_to.get_username() if item.assigned_to else None})


@api_endpoint("GET")
def review_agreement(request, user):
    prompt = prompt_to_review(user, request.GET.get("prompt", ""))
    return JsonResponse({"prompt": prompt.slug, **selectors.agreement(prompt).to_dict()})
