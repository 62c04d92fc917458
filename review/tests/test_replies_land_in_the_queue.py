"""Replies land in the queue: a thumbs down, an online score below the rule's threshold, a reply
picked by hand; never a reply that is not a prompt's live traffic, and once per reply."""

import pytest

from chat.models import Conversation
from chat.services import reply_feedback
from online.signals import reply_scored
from review.models import ReviewItem

from .conftest import live_reply

pytestmark = pytest.mark.django_db


def thumbs(message, value, capture):
    with capture(execute=True):  # chat sends feedback_changed once the change is committed
        reply_feedback(message=message, value=value)


def scored(message, scores, below, capture):
    with capture(execute=True):
        reply_scored.send(sender=None, message_id=message.pk, rule_id=7, scores=scores, below_threshold=below)


def test_a_thumbs_down_lands_the_reply(reply, support, django_capture_on_commit_callbacks):
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    item = ReviewItem.objects.get()
    assert (item.message, item.prompt, item.reason, item.status) == (reply, support, "thumbs_down", "open")
    assert item.scores == {} and item.judge_below is None


def test_a_thumbs_down_taken_back_leaves_the_queue(reply, django_capture_on_commit_callbacks):
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    thumbs(reply, "", django_capture_on_commit_callbacks)
    assert not ReviewItem.objects.exists()


def test_a_thumbs_up_lands_nothing(reply, django_capture_on_commit_callbacks):
    thumbs(reply, "up", django_capture_on_commit_callbacks)
    assert not ReviewItem.objects.exists()


def test_a_low_online_score_lands_the_reply_with_its_scores(reply, django_capture_on_commit_callbacks):
    scored(reply, {"llm_judge": 0.2, "length": 1.0}, True, django_capture_on_commit_callbacks)
    item = ReviewItem.objects.get()
    assert item.reason == "low_score" and item.scores == {"llm_judge": 0.2, "length": 1.0} and item.judge_below is True


def test_a_score_above_the_threshold_lands_nothing_but_joins_an_item_already_there(
    reply, django_capture_on_commit_callbacks
):
    scored(reply, {"llm_judge": 0.9}, False, django_capture_on_commit_callbacks)
    assert not ReviewItem.objects.exists()
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    scored(reply, {"regex": 1.0}, False, django_capture_on_commit_callbacks)
    item = ReviewItem.objects.get()
    assert item.reason == "thumbs_down" and item.scores == {"regex": 1.0} and item.judge_below is False


def test_a_reply_is_in_the_queue_once_whatever_sends_it(reply, django_capture_on_commit_callbacks):
    scored(reply, {"llm_judge": 0.1}, True, django_capture_on_commit_callbacks)
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    scored(reply, {"contains": 0.0}, True, django_capture_on_commit_callbacks)
    item = ReviewItem.objects.get()
    assert item.reason == "low_score" and item.scores == {"llm_judge": 0.1, "contains": 0.0}


def test_a_thumbs_down_taken_back_keeps_an_item_the_judge_also_scored_low(reply, django_capture_on_commit_callbacks):
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    scored(reply, {"llm_judge": 0.1}, True, django_capture_on_commit_callbacks)
    thumbs(reply, "", django_capture_on_commit_callbacks)
    assert ReviewItem.objects.get().reason == "low_score"


@pytest.mark.parametrize("kind", [Conversation.Kind.CHAT, Conversation.Kind.PLAYGROUND])
def test_chats_and_playground_runs_of_a_version_are_traffic_too(
    support_version, alice, kind, django_capture_on_commit_callbacks
):
    message = live_reply(support_version, owner=alice, kind=kind)
    thumbs(message, "down", django_capture_on_commit_callbacks)
    assert ReviewItem.objects.get().message == message


def test_evaluation_replies_and_plain_chats_are_never_reviewed(
    support_version, alice, django_capture_on_commit_callbacks
):
    evaluation_reply = live_reply(support_version, owner=alice, kind=Conversation.Kind.EVALUATION)
    scored(evaluation_reply, {"llm_judge": 0.0}, True, django_capture_on_commit_callbacks)
    plain = live_reply(support_version, owner=alice, kind=Conversation.Kind.CHAT)
    Conversation.objects.filter(pk=plain.conversation_id).update(prompt_version=None)
    plain.refresh_from_db()
    thumbs(plain, "down", django_capture_on_commit_callbacks)
    assert not ReviewItem.objects.exists()


def test_a_reviewed_reply_is_not_sent_again_by_a_rule_but_may_be_picked_by_hand(
    reply, api, django_capture_on_commit_callbacks
):
    scored(reply, {"llm_judge": 0.1}, True, django_capture_on_commit_callbacks)
    item = ReviewItem.objects.get()
    assert api("alice").post(f"/api/review-queue/{item.pk}/", {"verdict": "fine"}).status_code == 200
    thumbs(reply, "down", django_capture_on_commit_callbacks)
    assert ReviewItem.objects.count() == 1
    picked = api("alice").post("/api/review-queue/", {"message": reply.pk})
    assert picked.status_code == 201 and ReviewItem.objects.get(pk=picked.json()["id"]).reason == "picked"
    again = api("alice").post("/api/review-queue/", {"message": reply.pk})
    assert again.status_code == 200 and again.json()["id"] == picked.json()["id"]


def test_a_receiver_that_fails_never_fails_the_thumbs(reply, monkeypatch, django_capture_on_commit_callbacks):
    from review import services

    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(services, "item_add", broken)
    thumbs(reply, "down", django_capture_on_commit_callbacks)  # logged, not raised
    reply.refresh_from_db()
    assert reply.feedback == "down" and not ReviewItem.objects.exists()
