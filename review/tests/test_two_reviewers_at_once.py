"""Two reviewers posting the same item at once: one wins, the other is told who did (409). An item
that needs two reviews takes a second, distinct reviewer, never the same one twice."""

import threading

import pytest
from django.db import connection
from django.test import Client

from evals.models import FailureCase
from review.models import Review, ReviewItem
from review.services import item_add

from .conftest import Api


def at_once(requests):
    """Run each request (a no-argument callable) in its own thread, released together; their answers."""
    barrier = threading.Barrier(len(requests))
    answers = [None] * len(requests)

    def run(n, request):
        try:
            barrier.wait(timeout=30)
            answers[n] = request()
        finally:
            connection.close()  # the thread's own database connection

    threads = [threading.Thread(target=run, args=(n, request)) for n, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return answers


@pytest.mark.django_db(transaction=True)
def test_one_correction_wins_and_the_other_reviewer_is_told(reply, tokens):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    ReviewItem.objects.filter(pk=item.pk).update(needs=1)
    path = f"/api/review-queue/{item.pk}/"
    alice, dave = Api(Client(), tokens["alice"]), Api(Client(), tokens["dave"])
    answers = at_once(
        [lambda: alice.post(path, {"expected": "From alice."}), lambda: dave.post(path, {"expected": "From dave."})]
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 409]
    winner = next(answer for answer in answers if answer.status_code == 201)
    loser = next(answer for answer in answers if answer.status_code == 409)
    case = FailureCase.objects.get()  # one case, the winner's
    assert winner.json()["case"] == case.pk
    assert loser.json()["error"] == f"already reviewed by {case.created_by.username} (corrected)"
    assert Review.objects.count() == 1 and ReviewItem.objects.get().status == "corrected"


@pytest.mark.django_db(transaction=True)
def test_an_overlapped_item_takes_two_distinct_reviewers(reply, tokens):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    ReviewItem.objects.filter(pk=item.pk).update(needs=2)
    path = f"/api/review-queue/{item.pk}/"
    alice, dave, carol = (Api(Client(), tokens[name]) for name in ("alice", "dave", "carol"))
    answers = at_once([lambda: alice.post(path, {"verdict": "fine"}), lambda: dave.post(path, {"expected": "Better."})])
    assert sorted(answer.status_code for answer in answers) == [200, 201]
    item.refresh_from_db()
    assert (item.reviewed, item.status) == (2, "corrected")
    assert carol.post(path, {"verdict": "fine"}).status_code == 409


@pytest.mark.django_db
def test_the_same_reviewer_twice_is_refused(api, reply):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    ReviewItem.objects.filter(pk=item.pk).update(needs=2)
    path = f"/api/review-queue/{item.pk}/"
    assert api("alice").post(path, {"verdict": "fine"}).status_code == 200
    again = api("alice").post(path, {"expected": "Changed my mind."})
    assert again.status_code == 409 and again.json()["error"].startswith("already reviewed by alice (you)")
    assert ReviewItem.objects.get().status == "open"  # it waits for a second reviewer
    assert api("dave").post(path, {"verdict": "fine"}).status_code == 200
    assert ReviewItem.objects.get().status == "fine"


@pytest.mark.django_db
def test_a_claimed_item_is_kept_for_its_reviewer(api, reply):
    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    claimed = api("dave").post(f"/api/review-queue/{item.pk}/claim/")
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "dave"
    taken = api("alice").post(f"/api/review-queue/{item.pk}/claim/")
    assert taken.status_code == 409 and taken.json()["error"] == "claimed by dave"
    assert api("alice").post(f"/api/review-queue/{item.pk}/", {"verdict": "fine"}).status_code == 409
    assert api("dave").post(f"/api/review-queue/{item.pk}/", {"verdict": "fine"}).status_code == 200


@pytest.mark.django_db
def test_a_claim_lapses(api, reply):
    from datetime import timedelta

    from django.utils import timezone

    from review.services import CLAIM_MINUTES

    item = item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    api("dave").post(f"/api/review-queue/{item.pk}/claim/")
    ReviewItem.objects.filter(pk=item.pk).update(claimed_at=timezone.now() - timedelta(minutes=CLAIM_MINUTES + 1))
    assert api("alice").post(f"/api/review-queue/{item.pk}/claim/").json()["claimed_by"] == "alice"
