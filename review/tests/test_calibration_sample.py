"""A random sample of a prompt's recent finished replies joins its queue for calibration: never a
reply already in it, an evaluation's reply or an old one; the command does it for every prompt."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from chat.models import Conversation, Message
from review.models import ReviewItem
from review.services import ReviewError, calibration_sample, item_add

from .conftest import live_reply

pytestmark = pytest.mark.django_db


def test_a_sample_adds_that_many_replies_nothing_sent_yet(support, support_version, bob):
    replies = [live_reply(support_version, owner=bob, question=f"Q{n}") for n in range(20)]
    item_add(message_id=replies[0].pk, reason=ReviewItem.Reason.THUMBS_DOWN)
    added = calibration_sample(prompt=support, count=5, seed=1)
    assert len(added) == 5 and {item.reason for item in added} == {"calibration"}
    assert replies[0].pk not in {item.message_id for item in added}
    assert len({item.message_id for item in added}) == 5
    more = calibration_sample(prompt=support, count=100, seed=2)
    assert len(more) == 14  # every reply left, none twice
    assert calibration_sample(prompt=support, count=3) == []


def test_evaluation_replies_old_replies_and_unfinished_ones_are_left_out(support, support_version, bob):
    live_reply(support_version, owner=bob, kind=Conversation.Kind.EVALUATION)
    old = live_reply(support_version, owner=bob)
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    failed = live_reply(support_version, owner=bob)
    Message.objects.filter(pk=failed.pk).update(status=Message.Status.FAILED)
    assert calibration_sample(prompt=support, count=10) == []


def test_the_sample_size_is_bounded(support):
    for count in (0, 101):
        with pytest.raises(ReviewError):
            calibration_sample(prompt=support, count=count)


def test_the_command_samples_every_prompt(support, support_version, bob, capsys):
    for n in range(3):
        live_reply(support_version, owner=bob, question=f"Q{n}")
    call_command("review_calibration_sample", "--per-prompt", "2", "--seed", "3")
    assert ReviewItem.objects.filter(reason="calibration").count() == 2
    assert "support: 2 replies added" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("review_calibration_sample", "--per-prompt", "0")
    with pytest.raises(CommandError):
        call_command("review_calibration_sample", "--prompt", "nope")


def test_the_page_adds_a_sample(client, alice, support, support_version, bob):
    for n in range(3):
        live_reply(support_version, owner=bob, question=f"Q{n}")
    client.force_login(alice)
    answer = client.post("/review/calibration/", {"prompt": "support", "count": "2"})
    assert answer.status_code == 302 and ReviewItem.objects.filter(reason="calibration").count() == 2
