"""GET /api/review-queue/?prompt=<slug>: the issue's shape, pages of at most 50 followed by
`next`, a bounded number of queries whatever the page holds."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from review.models import ReviewItem
from review.services import item_add

from .conftest import live_reply

pytestmark = pytest.mark.django_db


def test_an_item_in_the_issues_shape(api, reply, support_version):
    item = item_add(
        message_id=reply.pk, reason=ReviewItem.Reason.LOW_SCORE, scores={"llm_judge": 0.2}, judge_below=True
    )
    answer = api("alice").get("/api/review-queue/?prompt=support")
    assert answer.status_code == 200 and answer.json()["next"] is None
    (entry,) = answer.json()["items"]
    assert {"id", "conversation", "input", "output", "reason", "scores", "status", "claimed_by", "assigned_to"} <= set(
        entry
    )
    assert entry["id"] == item.pk and entry["conversation"] == reply.conversation_id
    assert entry["input"] == {"question": "Where is my order?"} and entry["output"] == "No idea."
    assert entry["context"] == {
        "system": "Answer the customer in one sentence.",
        "sources": [],
        "withheld": 0,
        "nothing_found": False,
    }
    assert (entry["reason"], entry["scores"], entry["status"]) == ("low_score", {"llm_judge": 0.2}, "open")
    assert (entry["claimed_by"], entry["assigned_to"], entry["prompt"], entry["version"]) == (None, None, "support", 1)
    assert entry["model"] == "tiny-llama-v2" and entry["needs"] in (1, 2) and entry["reviews"] == []


def test_pages_of_fifty_follow_next_and_cost_the_same_queries(api, support_version, bob):
    for n in range(51):
        message = live_reply(support_version, owner=bob, question=f"Question {n}")
        item_add(message_id=message.pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    alice = api("alice")
    with CaptureQueriesContext(connection) as first_page:
        first = alice.get("/api/review-queue/?prompt=support").json()
    assert len(first["items"]) == 50 and first["next"].startswith("/api/review-queue/?prompt=support&after=")
    with CaptureQueriesContext(connection) as second_page:
        second = alice.get(first["next"]).json()
    assert len(second["items"]) == 1 and second["next"] is None
    assert [entry["input"]["question"] for entry in first["items"] + second["items"]] == [
        f"Question {n}" for n in range(51)
    ]
    # the token, the prompt, the page, its reviews (the knowledge bases only when a reply retrieved)
    assert len(first_page.captured_queries) == len(second_page.captured_queries) <= 8


def test_bad_paging_and_status_are_refused(api, reply):
    assert api("alice").get("/api/review-queue/?prompt=support&after=abc").status_code == 400
    assert api("alice").get("/api/review-queue/?prompt=support&status=gone").status_code == 400
    assert api("alice").get("/api/review-queue/?prompt=support&status=all").status_code == 200
    assert api("alice").client.get("/api/review-queue/").status_code == 401  # no token
