"""A sampled reply scored in the job worker: every scorer's value or its error (a judge model that
is not served or fails is an error with the reason, never 0, and counts in no mean), the day's
figures equal a scan of the scores, monitoring and the review queue told."""

import pytest

from online import scoring, selectors
from online.models import OnlineRule, OnlineSample, OnlineScore
from online.signals import reply_scored

from .conftest import live_reply

pytestmark = pytest.mark.django_db(transaction=True)

CHEAP = [
    {"type": "length", "name": "length", "min": None, "max": 10},
    {"type": "contains", "name": "contains", "text": "order", "ignore_case": True},
    {"type": "regex", "name": "digits", "pattern": r"\d+"},
]
JUDGE = {"type": "llm_judge", "name": "llm_judge", "rubric": "Answers the question politely.", "model": ""}


def sampled_reply(prompt, version, user, scorers, *, answer="Your order 42 left today.", review_below=None):
    rule = OnlineRule.objects.create(
        prompt=prompt, version=version, sample_rate=1.0, scorers=scorers, review_below=review_below, created_by=user
    )
    reply = live_reply(version, owner=user, answer=answer)
    return rule, OnlineSample.objects.create(rule=rule, message=reply)


@pytest.fixture
def told(monkeypatch):
    """What monitoring and the review queue were told."""
    calls = {"monitoring": [], "scored": []}
    monkeypatch.setattr(
        scoring.monitoring_services,
        "record_online_score",
        lambda **kwargs: calls["monitoring"].append((kwargs["scorer"], kwargs["value"])),
    )

    def listen(sender, **kwargs):
        calls["scored"].append(kwargs)

    reply_scored.connect(listen, dispatch_uid="test.listen")
    yield calls
    reply_scored.disconnect(dispatch_uid="test.listen")


def test_each_scorer_leaves_its_score_and_the_review_queue_hears_of_a_low_one(support, v1, alice, told):
    rule, sample = sampled_reply(support, v1, alice, CHEAP, review_below=0.5)
    scoring.score_sample(sample.pk)
    sample.refresh_from_db()
    assert sample.status == "finished" and sample.done == 3
    scores = {s.scorer: (s.value, s.status) for s in OnlineScore.objects.filter(rule=rule)}
    assert scores == {"length": (0.0, "scored"), "contains": (1.0, "scored"), "digits": (1.0, "scored")}
    assert told["monitoring"] == [("length", 0.0), ("contains", 1.0), ("digits", 1.0)]
    assert told["scored"] == [
        {
            "signal": reply_scored,
            "message_id": sample.message_id,
            "rule_id": rule.pk,
            "scores": {"length": 0.0, "contains": 1.0, "digits": 1.0},
            "below_threshold": True,
        }
    ]


def test_a_sample_delivered_twice_is_scored_once(support, v1, alice, told):
    rule, sample = sampled_reply(support, v1, alice, CHEAP)
    scoring.score_sample(sample.pk)
    scoring.score_sample(sample.pk)
    assert OnlineScore.objects.filter(rule=rule).count() == 3 and len(told["scored"]) == 1


def test_a_judge_model_that_is_not_served_is_an_error_with_the_reason_never_0(support, v1, alice, told):
    rule, sample = sampled_reply(support, v1, alice, [CHEAP[1], {**JUDGE, "model": "gpt-9"}], review_below=0.5)
    scoring.score_sample(sample.pk)
    judged = OnlineScore.objects.get(rule=rule, scorer="llm_judge")
    assert (judged.status, judged.value) == ("error", None)
    assert "the judge model “gpt-9” is not served" in judged.reason
    assert told["monitoring"] == [("contains", 1.0), ("llm_judge", None)]  # an error, counted apart
    assert told["scored"][0]["scores"] == {"contains": 1.0, "llm_judge": None}
    assert told["scored"][0]["below_threshold"] is False  # an error is not a low score
    means = selectors.scorer_means(rule)
    assert means["llm_judge"] == {"mean": None, "n": 0, "errors": 1}


def test_a_judge_no_model_worker_answers_is_an_error_saying_so(support, v1, alice, told, settings):
    from studio import sweeping

    settings.LLM_QUEUE_TIMEOUT_SECONDS = 1
    rule, sample = sampled_reply(support, v1, alice, [JUDGE])
    stop = sweeping.start_thread(0.2)  # the job worker's sweeper fails the replies no worker took
    try:
        scoring.score_sample(sample.pk)
    finally:
        stop.set()
    judged = OnlineScore.objects.get(rule=rule)
    assert (judged.status, judged.value) == ("error", None)
    assert judged.reason.startswith("no model worker answered the judge")
    sample.refresh_from_db()
    assert sample.status == "finished"


@pytest.mark.usefixtures("model_worker")
def test_the_judge_is_answered_by_the_model_workers_with_a_score_1_to_5(support, v1, alice, told):
    from chat.models import Conversation

    rule, sample = sampled_reply(support, v1, alice, [JUDGE])
    scoring.score_sample(sample.pk)
    judged = OnlineScore.objects.get(rule=rule)
    assert judged.status == "scored", judged.reason
    assert judged.value in (0.0, 0.25, 0.5, 0.75, 1.0)  # its answer is held to a whole number 1-5
    assert not Conversation.objects.filter(kind="evaluation").exists()  # the judge's conversation is gone


def test_the_days_figures_equal_a_scan_of_the_scores(support, v1, alice, told):
    answers = ["Your order 1 left.", "No.", "order order order order", "42"]
    rule = OnlineRule.objects.create(prompt=support, version=v1, sample_rate=1.0, scorers=CHEAP, created_by=alice)
    for answer in answers:
        reply = live_reply(v1, owner=alice, answer=answer)
        scoring.score_sample(OnlineSample.objects.create(rule=rule, message=reply).pk)
    means = selectors.scorer_means(rule)
    for spec in CHEAP:
        values = list(OnlineScore.objects.filter(rule=rule, scorer=spec["name"]).values_list("value", flat=True))
        assert means[spec["name"]] == {"mean": round(sum(values) / len(values), 4), "n": len(values), "errors": 0}
    (day,) = selectors.series(rule)
    assert day["scorers"] == means
    page = selectors.scored_page(rule)
    assert [r["output"] for r in page["replies"]] == answers[::-1]
    assert page["replies"][0]["scores"]["digits"] == {"value": 1.0, "status": "scored", "reason": ""}


def test_a_rule_deleted_while_its_reply_is_scored_keeps_nothing(support, v1, alice, told, monkeypatch):
    rule, sample = sampled_reply(support, v1, alice, CHEAP)
    scored = scoring._scored

    def delete_meanwhile(claimed):
        outcomes = scored(claimed)
        OnlineRule.objects.filter(pk=rule.pk).delete()
        return outcomes

    monkeypatch.setattr(scoring, "_scored", delete_meanwhile)
    scoring.score_sample(sample.pk)
    assert not OnlineScore.objects.exists() and told["scored"] == []
