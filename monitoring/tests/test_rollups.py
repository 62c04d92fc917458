"""Rollups kept as replies happen equal a scan of the stored replies (SQLite here; PostgreSQL in
test_rollups_on_postgresql.py): the whole window, per version, label, variant and model, over time,
and with each filter; a reply's later events (thumbs, flags, Continue, online scores) move them."""

from datetime import timedelta

import pytest

from chat.models import Message
from chat.services import reply_feedback
from monitoring.models import CountedReply, ReplyRollup
from monitoring.selectors import clean_window, prompt_metrics
from monitoring.services import RollupError, record_online_score

from . import scenario
from .scenario import NOW

pytestmark = pytest.mark.django_db(transaction=True)  # signals are sent on commit, as in production


@pytest.fixture
def traffic(alice):
    return scenario.build()


def test_the_rollups_equal_a_scan_of_the_stored_replies(traffic):
    prompt, scores = traffic
    since, until = NOW - timedelta(days=7), NOW
    found = scenario.compared(prompt, scores, since, until)
    scenario.same(found["rollups"], found["scan"])
    rolled = found["rollups"]
    # What the scenario stored, said plainly: the scan could be wrong the same way.
    assert rolled["requests"] == 10 + 3 + 4 + 2 + 1 + 1
    assert rolled["errors"] == {"model_failed": 1, "out_of_memory": 1, "output_format_failed": 1, "worker_lost": 1}
    assert rolled["feedback"] == {"up": 2, "down": 2}
    assert rolled["flagged"] == 2
    assert rolled["output_format"] == {"valid": 3, "invalid": 2}
    assert (rolled["retrieved"], rolled["nothing_found"]) == (2, 1)
    assert rolled["online_scores"] == {
        "json_valid": {"mean": 1.0, "n": 1, "errors": 0},
        "judge": {"mean": round((0.9 + 0.4 + 1.0) / 3, 4), "n": 3, "errors": 1},
    }
    assert [row["version"] for row in rolled["by_version"]] == [1, 2]
    assert [row["label"] for row in rolled["by_label"]] == ["", "candidate", "production"]
    assert [row["variant"] for row in rolled["by_variant"]] == ["candidate"]
    assert rolled["bucket"] == "hour" and len(rolled["series"]) == 7 * 24 + 1


def test_percentiles_are_within_the_bins_resolution_of_the_exact_ones(traffic):
    prompt, _ = traffic
    window = clean_window((NOW - timedelta(days=2)).isoformat(), NOW.isoformat())
    rolled = prompt_metrics(prompt=prompt, window=window)
    replies = Message.objects.filter(
        role="assistant",
        conversation__prompt_version__prompt=prompt,
        conversation__kind__in=["api", "chat", "playground"],
        status__in=["complete", "stopped"],
        created_at__gte=window.since,
    )
    latencies = [(r.finished_at - r.created_at).total_seconds() * 1000 for r in replies]
    for quantile, name in ((0.5, "p50"), (0.95, "p95")):
        exact = scenario.exact_percentile(latencies, quantile)
        assert abs(rolled["latency_ms"][name] - exact) <= 0.12 * exact, (name, rolled["latency_ms"], exact)
    assert rolled["bucket"] == "hour" and len(rolled["series"]) == 49  # 15:00 two days ago to 15:30 today


@pytest.mark.parametrize(
    "filters",
    [{"version": 2}, {"label": "production"}, {"label": ""}, {"model_name": "tuned-1"}, {"variant": "candidate"}],
    ids=lambda filters: "-".join(f"{k}={v or 'none'}" for k, v in filters.items()),
)
def test_each_filter_equals_the_scan_with_it(traffic, filters):
    prompt, scores = traffic
    found = scenario.compared(prompt, scores, NOW - timedelta(days=30), NOW, **filters)
    scenario.same(found["rollups"], found["scan"])
    assert found["rollups"]["requests"] > 0


def test_a_window_leaves_out_what_came_before_it(traffic):
    prompt, scores = traffic
    week = scenario.compared(prompt, scores, NOW - timedelta(days=7), NOW)["rollups"]
    month = scenario.compared(prompt, scores, NOW - timedelta(days=30), NOW)["rollups"]
    assert month["requests"] == week["requests"] + 1  # the reply of 9 days ago
    assert month["bucket"] == "day" and len(month["series"]) == 31 and month["series"][0]["t"] == "2026-11-07T00:00:00Z"
    hour = scenario.compared(prompt, scores, NOW - timedelta(minutes=30), NOW)
    scenario.same(hour["rollups"], hour["scan"])
    assert len(hour["rollups"]["series"]) == 1


def test_a_thumbs_change_moves_the_counts_of_the_replys_hour(traffic):
    prompt, scores = traffic
    reply = Message.objects.filter(conversation__prompt_version__prompt=prompt, feedback="up").earliest("pk")
    rollup = ReplyRollup.objects.get(pk=CountedReply.objects.get(message=reply).rollup_id)
    before = (rollup.feedback_up, rollup.feedback_down)
    reply_feedback(message=reply, value="down")
    rollup.refresh_from_db()
    assert (rollup.feedback_up, rollup.feedback_down) == (before[0] - 1, before[1] + 1)
    reply_feedback(message=Message.objects.get(pk=reply.pk), value="")
    rollup.refresh_from_db()
    assert (rollup.feedback_up, rollup.feedback_down) == (before[0] - 1, before[1])
    assert rollup.hour == reply.created_at.replace(minute=0, second=0, microsecond=0)
    found = scenario.compared(prompt, scores, NOW - timedelta(days=7), NOW)
    scenario.same(found["rollups"], found["scan"])


def test_writers_at_once_lose_no_count(traffic):
    prompt, scores = traffic
    before = prompt_metrics(prompt=prompt, window=clean_window(None, None, now=NOW))["requests"]
    added = scenario.finish_concurrently(prompt, threads=6, each=10)
    after = prompt_metrics(prompt=prompt, window=clean_window(None, None, now=NOW))
    assert after["requests"] == before + added
    found = scenario.compared(prompt, scores, NOW - timedelta(days=7), NOW)
    scenario.same(found["rollups"], found["scan"])


def test_an_online_score_is_a_number_or_none_for_a_reply_that_is_counted(traffic):
    prompt, _ = traffic
    reply = Message.objects.filter(conversation__prompt_version__prompt=prompt, status="complete").first()
    with pytest.raises(RollupError):
        record_online_score(message_id=reply.pk, scorer="judge", value=float("nan"))
    with pytest.raises(RollupError):
        record_online_score(message_id=reply.pk, scorer="", value=0.5)
    evaluation = Message.objects.filter(conversation__kind="evaluation", role="assistant").get()
    assert record_online_score(message_id=evaluation.pk, scorer="judge", value=0.5) is False
    assert not CountedReply.objects.filter(message=evaluation).exists()
