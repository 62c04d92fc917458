"""Which finished replies a rule samples: none at 0, all at 1, a fixed draw per (rule, reply) in
between; by version or by the label the reply was served under; production traffic only; each
reply once per rule. The receiver only stores and hands over: a reply finishes without waiting."""

import time

import pytest

from chat.models import Conversation, Message
from chat.serving import queue
from online import sampling
from online.models import OnlineRule, OnlineSample, OnlineScore

from .conftest import LENGTH, live_reply

pytestmark = pytest.mark.django_db


def make_rule(prompt, user, *, rate=1.0, label="production", version=None, **fields):
    return OnlineRule.objects.create(
        prompt=prompt,
        label="" if version else label,
        version=version,
        sample_rate=rate,
        scorers=[{**LENGTH, "name": "length", "min": None}],
        created_by=user,
        **fields,
    )


def test_a_rate_of_0_samples_nothing_and_1_everything(support, v1, alice, bob, sent):
    never, always = make_rule(support, alice, rate=0.0), make_rule(support, alice, rate=1.0)
    replies = [live_reply(v1, owner=bob, question=f"q{n}") for n in range(40)]
    for reply in replies:
        sampling.samples_queue(message_id=reply.pk)
    assert not OnlineSample.objects.filter(rule=never).exists()
    assert OnlineSample.objects.filter(rule=always).count() == 40
    assert sorted(sent.sample_ids) == sorted(OnlineSample.objects.values_list("pk", flat=True))


def test_a_rate_between_draws_the_same_way_for_the_same_reply():
    draws = [sampling.sampled(7, message_id, 0.3) for message_id in range(5000)]
    assert draws == [sampling.sampled(7, message_id, 0.3) for message_id in range(5000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert draws != [sampling.sampled(8, message_id, 0.3) for message_id in range(5000)]  # per rule
    assert not any(sampling.sampled(7, m, 0.0) for m in range(5000))
    assert all(sampling.sampled(7, m, 1.0) for m in range(5000))


def test_a_reply_finished_twice_is_sampled_once(support, v1, alice, bob, sent):
    rule = make_rule(support, alice)
    reply = live_reply(v1, owner=bob)
    assert len(sampling.samples_queue(message_id=reply.pk)) == 1
    assert sampling.samples_queue(message_id=reply.pk) == [OnlineSample.objects.get().pk]  # still unsent: sent again
    OnlineSample.objects.update(dispatched_at="2026-01-01T00:00:00Z")
    assert sampling.samples_queue(message_id=reply.pk) == []
    assert OnlineSample.objects.filter(rule=rule, message=reply).count() == 1


def test_a_version_rule_follows_every_reply_of_its_version(support, v1, v2, alice, bob, sent):
    rule = make_rule(support, alice, version=v2)
    of_v1 = live_reply(v1, owner=bob)
    of_v2 = [live_reply(v2, owner=bob, kind=kind) for kind in ("api", "chat", "playground")]
    for reply in [of_v1, *of_v2]:
        sampling.samples_queue(message_id=reply.pk)
    assert set(OnlineSample.objects.filter(rule=rule).values_list("message_id", flat=True)) == {r.pk for r in of_v2}


def test_a_label_rule_follows_the_replies_served_under_its_label(support, v1, v2, alice, bob, sent):
    production, latest = make_rule(support, alice), make_rule(support, alice, label="latest")
    served = live_reply(v1, owner=bob)  # `prompt:support`: its production label
    asked_latest = live_reply(v2, owner=bob, requested_model="prompt:support@latest")
    by_number = live_reply(v1, owner=bob, requested_model="prompt:support@v1")
    chat = live_reply(v1, owner=bob, kind=Conversation.Kind.CHAT)  # a chat names a version, not a label
    for reply in (served, asked_latest, by_number, chat):
        sampling.samples_queue(message_id=reply.pk)
    assert list(OnlineSample.objects.filter(rule=production).values_list("message_id", flat=True)) == [served.pk]
    assert list(OnlineSample.objects.filter(rule=latest).values_list("message_id", flat=True)) == [asked_latest.pk]


def test_an_ab_variant_is_the_label_a_reply_was_served_under(support, v1, alice, bob, sent):
    candidate = make_rule(support, alice, label="latest")
    reply = live_reply(v1, owner=bob)
    Message.objects.filter(pk=reply.pk).update(variant="latest")
    sampling.samples_queue(message_id=reply.pk)
    assert OnlineSample.objects.filter(rule=candidate, message=reply).exists()


@pytest.mark.parametrize(
    "kind, status",
    [
        (Conversation.Kind.EVALUATION, Message.Status.COMPLETE),
        (Conversation.Kind.RETRIEVAL, Message.Status.COMPLETE),
        (Conversation.Kind.API, Message.Status.FAILED),
        (Conversation.Kind.API, Message.Status.STOPPED),
    ],
)
def test_only_complete_production_replies_are_sampled(support, v1, alice, bob, sent, kind, status):
    make_rule(support, alice, version=v1)
    reply = live_reply(v1, owner=bob, kind=kind, status=status)
    assert sampling.samples_queue(message_id=reply.pk) == []


def test_a_plain_chat_and_a_disabled_rule_sample_nothing(support, v1, alice, bob, sent):
    make_rule(support, alice, version=v1, active=False)
    conversation = Conversation.objects.create(owner=bob, title="plain")
    plain = Message.objects.create(conversation=conversation, role="assistant", content="hi", status="complete")
    for reply in (plain, live_reply(v1, owner=bob)):
        assert sampling.samples_queue(message_id=reply.pk) == []
    assert sent.sample_ids == []


@pytest.mark.django_db(transaction=True)
def test_the_receiver_only_queues_the_reply_finishes_without_waiting_for_scoring(support, v1, alice, bob, sent):
    """Through chat's real path: reply_finish stores the reply and, on commit, sends reply_finished;
    the receiver stores a sample for a judge rule and hands it on. Nothing is scored here."""
    OnlineRule.objects.create(
        prompt=support,
        version=v1,
        sample_rate=1.0,
        scorers=[{"type": "llm_judge", "name": "llm_judge", "rubric": "Polite.", "model": ""}],
        created_by=alice,
    )
    reply = live_reply(v1, owner=bob, status=Message.Status.STREAMING)
    started = time.perf_counter()
    assert queue.reply_finish(message_id=reply.pk, content="Here.", status="complete", usage={})
    took = time.perf_counter() - started
    sample = OnlineSample.objects.get()
    assert (sample.message_id, sample.status) == (reply.pk, "queued")
    assert sent.sample_ids == [sample.pk] and not OnlineScore.objects.exists()
    assert took < 2.0  # a few queries; the judge (seconds) runs elsewhere


@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_never_stops_a_reply(support, v1, alice, bob, monkeypatch):
    make_rule(support, alice, version=v1)

    def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(sampling, "samples_queue", broken)
    reply = live_reply(v1, owner=bob, status=Message.Status.STREAMING)
    assert queue.reply_finish(message_id=reply.pk, content="Here.", status="complete", usage={})
    assert Message.objects.get(pk=reply.pk).status == "complete"
