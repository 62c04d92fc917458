"""Fine and skip close an item (200) without a case; a closed item takes no other review."""

import pytest

from evals.models import FailureCase
from review.models import ReviewItem
from review.services import item_add

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("verdict, status", [("fine", "fine"), ("skip", "skipped")])
def test_a_verdict_closes_the_item_without_a_case(api, reply, verdict, status):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.PICKED)
    answer = api("dave").post(f"/api/review-queue/{item.pk}/", {"verdict": verdict})
    assert answer.status_code == 200 and answer.json() == {"id": item.pk, "status": status, "verdict": verdict}
    assert ReviewItem.objects.get().status == status and not FailureCase.objects.exists()
    assert api("dave").get("/api/review-queue/?prompt=support").json()["items"] == []  # open items only
    listed = api("dave").get(f"/api/review-queue/?prompt=support&status={status}").json()["items"]
    assert [entry["id"] for entry in listed] == [item.pk]


def test_a_closed_item_takes_no_other_review(api, reply):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.PICKED)
    api("dave").post(f"/api/review-queue/{item.pk}/", {"verdict": "fine"})
    late = api("alice").post(f"/api/review-queue/{item.pk}/", {"expected": "Something else."})
    assert late.status_code == 409 and late.json() == {
        "error": "already reviewed by dave (fine)",
        "code": "already_reviewed",
    }
    assert not FailureCase.objects.exists()
