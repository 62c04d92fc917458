"""Replies whose worker died, or never came, end as failed with a reason: never a spinner forever."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import services
from chat.models import Message
from chat.serving import queue, registry

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice):
    return services.conversation_create(owner=alice)


def test_a_reply_whose_worker_stopped_renewing_is_failed(conversation):
    _, reply = services.reply_request(conversation=conversation, content="hi")
    queue.reply_claim(message_id=reply.pk, worker_channel="worker-1", model_name="tiny")
    queue.reply_renew_lease(message_id=reply.pk, content="partial text")
    Message.objects.filter(pk=reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    [failed] = queue.replies_fail_expired()
    assert failed.pk == reply.pk and failed.status == "failed"
    assert failed.content == "partial text" and "model worker stopped" in failed.error
    # The worker coming back to life cannot overwrite the verdict.
    assert not queue.reply_finish(message_id=reply.pk, content="late", status="complete", usage={})


def test_a_reply_no_worker_picked_up_is_failed_after_the_queue_timeout(conversation):
    _, reply = services.reply_request(conversation=conversation, content="hi")
    assert queue.replies_fail_expired() == []  # still within its time
    Message.objects.filter(pk=reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    [failed] = queue.replies_fail_expired()
    assert "No model worker is running" in failed.error
    assert queue.reply_claim(message_id=reply.pk, worker_channel="w", model_name="tiny") is None


def test_a_reply_stopped_while_queued_is_never_claimed(conversation):
    _, reply = services.reply_request(conversation=conversation, content="hi")
    assert queue.reply_stop_if_queued(message=reply)
    assert queue.reply_claim(message_id=reply.pk, worker_channel="w", model_name="tiny") is None
    assert Message.objects.get(pk=reply.pk).status == "stopped"


def test_only_one_reply_is_in_progress_per_conversation(conversation):
    services.reply_request(conversation=conversation, content="first")
    with pytest.raises(services.ChatError, match="still answering"):
        services.reply_request(conversation=conversation, content="second")
    assert conversation.messages.count() == 2


def test_the_first_message_names_the_conversation(conversation):
    services.reply_request(conversation=conversation, content="How do I   bake bread?\nAsking for a friend")
    conversation.refresh_from_db()
    assert conversation.title == "How do I bake bread? Asking for a friend"


def test_a_reply_that_waited_behind_others_says_the_model_was_busy(conversation):
    registry.worker_heartbeat(channel_name="w!1", hostname="h", pid=1, state="ready")
    _, reply = services.reply_request(conversation=conversation, content="hi")
    Message.objects.filter(pk=reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    [failed] = queue.replies_fail_expired()
    assert "stayed busy" in failed.error and "no model worker" not in failed.error.lower()
