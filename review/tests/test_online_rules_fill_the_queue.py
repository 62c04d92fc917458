"""Online evaluation and the queue together: a rule of the prompt (every reply, review below 0.5)
scores a live reply with its real scoring code, and a reply it scores low lands with its scores; one
it scores high does not."""

import pytest

from online.sampling import samples_queue
from online.scoring import score_sample
from online.services import rule_create
from review.models import ReviewItem

from .conftest import live_reply

pytestmark = pytest.mark.django_db


def test_a_reply_the_rule_scores_low_lands_and_one_it_scores_high_does_not(alice, support, support_version, bob):
    rule_create(
        user=alice,
        prompt=support,
        version=1,
        sample_rate=1.0,
        scorers=[{"type": "length", "max": 20}],
        review_below=0.5,
    )
    rambling = live_reply(support_version, owner=bob, answer="Well, let me tell you a long story about parcels.")
    short = live_reply(support_version, owner=bob, answer="Tomorrow.")
    for reply in (rambling, short):
        for sample_id in samples_queue(message_id=reply.pk):
            score_sample(sample_id)
    item = ReviewItem.objects.get()
    assert (item.message, item.reason, item.scores, item.judge_below) == (rambling, "low_score", {"length": 0.0}, True)
