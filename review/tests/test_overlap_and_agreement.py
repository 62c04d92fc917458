"""A share REVIEW_OVERLAP of the items needs two reviewers (drawn from the item's id); the queue
reports how often the two agree (and Cohen's kappa), and how often the online judge agrees with them."""

import pytest

from review.models import ReviewItem
from review.selectors import agreement, cohen_kappa
from review.services import item_add

from .conftest import live_reply

pytestmark = pytest.mark.django_db


def test_the_overlap_share_is_drawn_from_the_items_id():
    drawn = [ReviewItem.needs_for(item_id, 0.1) for item_id in range(1, 5001)]
    assert 0.08 <= drawn.count(2) / len(drawn) <= 0.12 and set(drawn) == {1, 2}
    assert drawn == [ReviewItem.needs_for(item_id, 0.1) for item_id in range(1, 5001)]  # the same every time
    assert {ReviewItem.needs_for(item_id, 0.0) for item_id in range(1, 500)} == {1}
    assert {ReviewItem.needs_for(item_id, 1.0) for item_id in range(1, 500)} == {2}


def test_a_new_item_needs_two_reviewers_as_the_setting_says(reply, support_version, bob, settings):
    settings.REVIEW_OVERLAP = 1.0
    assert item_add(message_id=reply.pk, reason=ReviewItem.Reason.PICKED).needs == 2
    settings.REVIEW_OVERLAP = 0.0
    other = live_reply(support_version, owner=bob)
    assert item_add(message_id=other.pk, reason=ReviewItem.Reason.PICKED).needs == 1


def test_cohen_kappa():
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    assert cohen_kappa([(True, True), (True, True)]) is None  # one verdict only: undefined
    # 4 pairs, 3 agree; each rater says yes half the time: chance 0.5, kappa (0.75 - 0.5) / 0.5
    assert cohen_kappa([(True, True), (False, False), (True, False), (False, True)]) == 0.0
    assert cohen_kappa([(True, True), (True, True), (False, False), (True, False)]) == pytest.approx(0.5)


def test_the_agreement_of_two_reviewers_and_of_the_judge(api, support, support_version, bob, settings, client, alice):
    settings.REVIEW_OVERLAP = 1.0
    verdicts = [  # (judge below its threshold?, alice's review, dave's review)
        (True, {"expected": "Better."}, {"expected": "Also better."}),
        (True, {"expected": "Better."}, {"verdict": "fine"}),
        (False, {"verdict": "fine"}, {"verdict": "fine"}),
        (False, {"verdict": "fine"}, {"verdict": "skip"}),  # a skip is no judgment: no pair
    ]
    for judge_below, first, second in verdicts:
        message = live_reply(support_version, owner=bob)
        item = item_add(message_id=message.pk, reason=ReviewItem.Reason.CALIBRATION, scores={"llm_judge": 0.5})
        ReviewItem.objects.filter(pk=item.pk).update(judge_below=judge_below)
        assert api("alice").post(f"/api/review-queue/{item.pk}/", first).status_code in (200, 201)
        assert api("dave").post(f"/api/review-queue/{item.pk}/", second).status_code in (200, 201)
    figures = agreement(support)
    assert (figures.pairs, figures.agreeing) == (3, 2)
    # pairs (alice corrected?, dave corrected?): (T, T), (T, F), (F, F): observed 2/3, chance 2/3 x 1/3 + 1/3 x 2/3
    assert figures.kappa == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    # the judge against the first review: below & corrected, below & corrected, above & fine, above & fine
    assert (figures.judged, figures.judge_agreeing) == (4, 4)
    assert api("alice").get("/api/review-queue/agreement/?prompt=support").json() == {
        "prompt": "support",
        "reviewers": {"pairs": 3, "agreeing": pytest.approx(2 / 3), "kappa": pytest.approx(0.4)},
        "judge": {"items": 4, "agreeing": 1.0},
    }
    client.force_login(alice)
    page = client.get("/review/?prompt=support").content.decode()
    assert "Reviewers agree on 2 of 3 overlapped items (67 %, Cohen’s κ 0.40)" in " ".join(page.split())
    assert "the online judge agrees with them on 4 of 4 scored items (100 %)" in " ".join(page.split())
