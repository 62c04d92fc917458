"""Production traffic of one prompt, stored through chat's real paths (replies finished by the queue's
reply_finish and the sweeper, thumbs through reply_feedback, flags through evals' case_flag, online
scores through monitoring's service), and a scan of the stored replies that computes the metrics
answer from them alone. Tests on SQLite run it in-process; on PostgreSQL a `manage.py shell` of a
scaled studio runs it (test_rollups_on_postgresql.py), so both databases are held to the same scan.

The clock is moved (django.utils.timezone.now) so that replies fall in several hours, with
latencies of a few milliseconds to minutes.
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.contrib.auth.models import User
from django.db import connection

from chat.models import Conversation, Message
from chat.services import reply_feedback
from chat.serving.queue import replies_fail_expired, reply_finish
from evals.services import case_flag
from monitoring.histogram import bin_of, percentile_ms
from monitoring.selectors import GROUPS, clean_window, prompt_metrics
from monitoring.services import record_online_score
from prompts.models import Prompt
from prompts.services import label_move, prompt_create, version_create

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
JSON_FORMAT = {"type": "json"}


@contextmanager
def clock(moment: datetime):
    with mock.patch("django.utils.timezone.now", return_value=moment):
        yield


def people():
    alice = User.objects.get_or_create(username="alice")[0]
    return alice


def make_prompt(owner, slug="support") -> Prompt:
    with clock(NOW - timedelta(days=30)):
        prompt = prompt_create(owner=owner, name="Support", slug=slug, version={"template": "{{ question }}"})
        v1 = prompt.versions.get()
        v2 = version_create(
            prompt=prompt, author=owner, fields={"template": "{{ question }}", "output_format": JSON_FORMAT}
        )
        label_move(prompt=prompt, name="production", version=v1, user=owner)
        label_move(prompt=prompt, name="candidate", version=v2, user=owner)
    return prompt


def conversation(owner, version, kind=Conversation.Kind.API, **fields) -> Conversation:
    return Conversation.objects.create(owner=owner, kind=kind, prompt_version=version, model_name="base", **fields)


def streaming_reply(conv, *, at, model="base", retrieval=None, variant="", lease=None) -> Message:
    with clock(at):
        asked = Message.objects.create(conversation=conv, role="user", content="Where is my parcel?")
        return Message.objects.create(
            conversation=conv,
            parent=asked,
            role="assistant",
            status=Message.Status.STREAMING,
            model_name=model,
            retrieval=retrieval or {},
            variant=variant,
            lease_expires_at=lease or at + timedelta(minutes=5),
        )


def finish(reply, *, after_ms, ttft_ms=None, tokens=(20, 10), speed=None, status="complete", code="", reason="stop"):
    with clock(reply.created_at + timedelta(milliseconds=after_ms)):
        reply_finish(
            message_id=reply.pk,
            content='{"answer": "soon"}',
            status=status,
            usage={
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "ttft_ms": ttft_ms,
                "tokens_per_s": speed,
            },
            error="It failed." if status == "failed" else "",
            error_code=code,
            finish_reason=reason if status != "failed" else "error",
        )
    reply.refresh_from_db()
    return reply


def build(*, online_scores: bool = True, slug: str = "support") -> tuple[Prompt, dict[str, float]]:
    """Stores the traffic; (the prompt, the online scores recorded: {"<message id>:<scorer>": value})."""
    alice = people()
    prompt = make_prompt(alice, slug=slug)
    v1, v2 = prompt.versions.order_by("number")
    hours = [NOW - timedelta(hours=h, minutes=10) for h in (0, 1, 3)]
    scores = {}
    # API requests to production (v1), two models, latencies from 3 ms to 4 minutes.
    latencies = [3, 40, 180, 650, 900, 1200, 2500, 7000, 15000, 240000]
    api = []
    for index, latency in enumerate(latencies):
        reply = streaming_reply(conversation(alice, v1), at=hours[index % 3], model="base" if index % 2 else "tuned-1")
        api.append(
            finish(reply, after_ms=latency, ttft_ms=latency / 4, speed=10 + index, tokens=(30 + index, 5 * index))
        )
    # Stopped by the person: counted, its latency too (the time they waited), not an error.
    stopped = streaming_reply(conversation(alice, v1), at=hours[1])
    finish(stopped, after_ms=5000, ttft_ms=400, status="stopped", reason="cancelled")
    # Failures: by the worker (codes), by the sweeper (worker lost), an old one without a code.
    failed = streaming_reply(conversation(alice, v1), at=hours[0])
    finish(failed, after_ms=100, status="failed", code="model_failed")
    oom = streaming_reply(conversation(alice, v1), at=hours[1])
    finish(oom, after_ms=100, status="failed", code="out_of_memory", ttft_ms=50)
    lost = streaming_reply(conversation(alice, v1), at=hours[2], lease=hours[2] + timedelta(seconds=1))
    with clock(hours[2] + timedelta(seconds=30)):
        replies_fail_expired()
    # The A/B variant "candidate" (v2, an output format): valid, cut by max tokens, format failed.
    candidate = [streaming_reply(conversation(alice, v2), at=hours[i % 3], variant="candidate") for i in range(4)]
    finish(candidate[0], after_ms=800, ttft_ms=90, speed=20.5)
    finish(candidate[1], after_ms=1500, ttft_ms=95, reason="length", speed=19.0)
    finish(candidate[2], after_ms=300, status="failed", code="output_format_failed")
    finish(candidate[3], after_ms=1200, ttft_ms=85)
    # A chat from v1 (no label), a playground run of v2, with retrieval that found nothing / something.
    searched_nothing = {"searched": ["Handbook"], "nothing_passed": True, "sources": []}
    searched_found = {"searched": ["Handbook"], "nothing_passed": False, "sources": [{"n": 1}]}
    chat = finish(
        streaming_reply(conversation(alice, v1, kind=Conversation.Kind.CHAT), at=hours[1], retrieval=searched_nothing),
        after_ms=2000,
        ttft_ms=300,
    )
    finish(
        streaming_reply(
            conversation(alice, v2, kind=Conversation.Kind.PLAYGROUND), at=hours[2], retrieval=searched_found
        ),
        after_ms=950,
        ttft_ms=120,
    )
    # A reply cut at its maximum tokens, then continued: counted once, with its whole figures.
    cut = finish(streaming_reply(conversation(alice, v1), at=hours[0]), after_ms=500, ttft_ms=60, reason="length")
    Message.objects.filter(pk=cut.pk).update(status=Message.Status.STREAMING)
    with clock(cut.created_at + timedelta(seconds=20)):
        reply_finish(
            message_id=cut.pk,
            content="longer",
            status="complete",
            usage={"prompt_tokens": 60, "completion_tokens": 90, "ttft_ms": 60, "tokens_per_s": 15},
            finish_reason="stop",
        )
    # Thumbs: up, down, up then down, down then cleared; flags.
    reply_feedback(message=api[0], value="up")
    reply_feedback(message=api[1], value="down")
    reply_feedback(message=api[2], value="up")
    reply_feedback(message=Message.objects.get(pk=api[2].pk), value="down")
    reply_feedback(message=chat, value="down")
    reply_feedback(message=Message.objects.get(pk=chat.pk), value="")
    reply_feedback(message=candidate[0], value="up")
    case_flag(user=alice, message=Message.objects.get(pk=api[3].pk), expected="It arrives Monday.")
    case_flag(user=alice, message=Message.objects.get(pk=candidate[3].pk), expected='{"answer": "Monday"}')
    # Online scores: one replaced by a second value, a scorer that failed (None), a reply not counted.
    for message, scorer, value in [
        (api[0], "judge", 0.2),
        (api[0], "judge", 0.9),
        (api[1], "judge", 0.4),
        (candidate[0], "judge", 1.0),
        (candidate[0], "json_valid", 1.0),
        (api[4], "judge", None),
    ]:
        if online_scores:
            record_online_score(message_id=message.pk, scorer=scorer, value=value)
            scores[f"{message.pk}:{scorer}"] = value
    # Not production traffic, or not finished, or outside the window: never in the figures.
    evaluation = conversation(alice, v1, kind=Conversation.Kind.EVALUATION)
    finish(streaming_reply(evaluation, at=hours[0]), after_ms=100)
    finish(streaming_reply(conversation(alice, None, kind=Conversation.Kind.CHAT), at=hours[0]), after_ms=100)
    streaming_reply(conversation(alice, v1), at=hours[0])  # still being written
    finish(streaming_reply(conversation(alice, v1), at=NOW - timedelta(days=9)), after_ms=100, ttft_ms=10)
    assert lost.pk
    return prompt, scores


def finish_concurrently(prompt: Prompt, *, threads: int = 8, each: int = 20) -> int:
    """Replies of one rollup (same hour, version, model) finished by `threads` writers at once, each
    on its own database connection; how many."""
    alice = people()
    version = prompt.versions.get(number=1)
    at = NOW - timedelta(minutes=5)
    replies = [streaming_reply(conversation(alice, version), at=at) for _ in range(threads * each)]
    start = threading.Barrier(threads)
    failures = []

    def writer(mine):
        # Not finish(): moving the clock (a module attribute) from several threads would race.
        try:
            start.wait()
            for reply in mine:
                usage = {"prompt_tokens": 10, "completion_tokens": 7, "ttft_ms": 50, "tokens_per_s": 12.0}
                reply_finish(message_id=reply.pk, content="ok", status="complete", usage=usage, finish_reason="stop")
        except Exception as exc:  # reported below: a thread's exception would vanish
            failures.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=writer, args=(replies[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not failures, failures
    return len(replies)


# --- the scan ---------------------------------------------------------------------------------------


def scan(prompt: Prompt, since: datetime, until: datetime, scores: dict, **filters) -> dict:
    """The metrics answer computed from the stored replies (and the scores recorded), nothing else."""
    window = clean_window(since.isoformat(), until.isoformat())
    replies = (
        Message.objects.filter(
            role="assistant",
            conversation__prompt_version__prompt=prompt,
            conversation__kind__in=["api", "chat", "playground"],
            status__in=["complete", "stopped", "failed"],
            created_at__gte=window.since,
        )
        .select_related("conversation__prompt_version")
        .order_by("pk")
    )
    rows = []
    for reply in replies:
        if reply.created_at.replace(minute=0, second=0, microsecond=0) >= window.until:
            continue  # whole hours: the hour `until` falls in counts whole
        conv = reply.conversation
        version = conv.prompt_version
        label = reply.variant or (
            "" if conv.kind != "api" else ("production" if version.labels.filter(name="production").exists() else "")
        )
        row = {"reply": reply, "version": version.number, "label": label, "variant": reply.variant}
        row["model"] = reply.model_name or conv.model_name
        if all(row[{"model_name": "model"}.get(column, column)] == value for column, value in filters.items()):
            rows.append(row)
    answer = {
        "since": window.since.isoformat().replace("+00:00", "Z"),
        "until": window.until.isoformat().replace("+00:00", "Z"),
        "bucket": window.bucket,
        **_figures([row["reply"] for row in rows], scores),
    }
    for name, column in GROUPS.items():
        key = "model" if column == "model_name" else column
        grouped = defaultdict(list)
        for row in rows:
            grouped[row[key]].append(row["reply"])
        answer[name] = [{key: value, **_figures(grouped[value], scores)} for value in sorted(grouped)]
    answer["by_variant"] = [row for row in answer["by_variant"] if row["variant"]]
    answer["series"] = _scan_series([row["reply"] for row in rows], window)
    return answer


def _latencies(replies) -> list[float]:
    return [
        (reply.finished_at - reply.created_at).total_seconds() * 1000 for reply in replies if reply.status != "failed"
    ]


def _binned_percentile(values: list[float], quantile: float) -> float | None:
    counts = [0] * 64
    for value in values:
        counts[bin_of(value)] += 1
    return percentile_ms(counts, quantile)


def exact_percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(quantile * len(ordered))) - 1]


def _figures(replies, scores: dict) -> dict:
    errors = defaultdict(int)
    for reply in replies:
        if reply.status == "failed":
            errors[reply.error_code or "failed"] += 1
    latencies, ttfts = _latencies(replies), [r.ttft_ms for r in replies if r.ttft_ms is not None]
    speeds = [r.tokens_per_s for r in replies if r.tokens_per_s is not None]
    formatted = [r for r in replies if r.conversation.prompt_version.output_format.get("type", "text") != "text"]
    online = defaultdict(lambda: {"mean": None, "n": 0, "errors": 0})
    values = defaultdict(list)
    ids = {reply.pk for reply in replies}
    for key, value in scores.items():
        message_id, scorer = key.split(":", 1)
        if int(message_id) in ids:
            if value is None:
                online[scorer]["errors"] += 1
            else:
                values[scorer].append(value)
    for scorer, scored in values.items():
        online[scorer].update(mean=round(sum(scored) / len(scored), 4), n=len(scored))
    searched = [r for r in replies if r.retrieval.get("searched")]
    return {
        "requests": len(replies),
        "errors": dict(sorted(errors.items())),
        "latency_ms": {"p50": _binned_percentile(latencies, 0.5), "p95": _binned_percentile(latencies, 0.95)},
        "ttft_ms": {"p50": _binned_percentile(ttfts, 0.5), "p95": _binned_percentile(ttfts, 0.95)},
        "tokens": {
            "prompt": sum(r.prompt_tokens or 0 for r in replies),
            "completion": sum(r.completion_tokens or 0 for r in replies),
        },
        "tokens_per_s": round(sum(speeds) / len(speeds), 2) if speeds else None,
        "feedback": {
            "up": sum(r.feedback == "up" for r in replies),
            "down": sum(r.feedback == "down" for r in replies),
        },
        "flagged": sum(r.flagged_at is not None for r in replies),
        "output_format": {
            "valid": sum(r.status == "complete" and r.finish_reason != "length" for r in formatted),
            "invalid": sum(
                r.error_code == "output_format_failed" or (r.status == "complete" and r.finish_reason == "length")
                for r in formatted
            ),
        },
        "retrieved": len(searched),
        "nothing_found": sum(bool(r.retrieval.get("nothing_passed")) for r in searched),
        "online_scores": dict(sorted(online.items())),
    }


def _scan_series(replies, window) -> list[dict]:
    points = []
    for start in window.buckets():
        end = start + (timedelta(days=1) if window.bucket == "day" else timedelta(hours=1))
        inside = [r for r in replies if start <= r.created_at < end]
        latencies = _latencies(inside)
        points.append(
            {
                "t": start.isoformat().replace("+00:00", "Z"),
                "requests": len(inside),
                "errors": sum(r.status == "failed" for r in inside),
                "p50_ms": _binned_percentile(latencies, 0.5),
                "p95_ms": _binned_percentile(latencies, 0.95),
                "ttft_p95_ms": _binned_percentile([r.ttft_ms for r in inside if r.ttft_ms is not None], 0.95),
                "feedback": {
                    "up": sum(r.feedback == "up" for r in inside),
                    "down": sum(r.feedback == "down" for r in inside),
                },
                "flagged": sum(r.flagged_at is not None for r in inside),
            }
        )
    return points


def compared(prompt: Prompt, scores: dict, since: datetime, until: datetime, **filters) -> dict:
    """{"rollups": the metrics answer, "scan": the scan's}, as JSON (a shell prints it)."""
    window = clean_window(since.isoformat(), until.isoformat())
    rolled = prompt_metrics(prompt=prompt, window=window, filters=filters)
    return json.loads(json.dumps({"rollups": rolled, "scan": scan(prompt, since, until, scores, **filters)}))


def same(left, right, where="") -> None:
    """Equal, floats to within 1e-6 (sums added in another order); a figure the answer rounds to two
    decimals (tokens per second) to within that rounding: 241.065 may come out 241.06 or 241.07."""
    if isinstance(left, float) or isinstance(right, float):
        tolerance = 0.0100001 if where.endswith("tokens_per_s") else 1e-6
        assert left is not None and right is not None and math.isclose(left, right, rel_tol=1e-6, abs_tol=tolerance), (
            where,
            left,
            right,
        )
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), (where, left, right)
        for key in left:
            same(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right), (where, left, right)
        for index, (a, b) in enumerate(zip(left, right)):
            same(a, b, f"{where}[{index}]")
    else:
        assert left == right, (where, left, right)
