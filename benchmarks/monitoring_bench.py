"""Measures monitoring for `make bench` (benchmarks/__main__.py runs it in a throwaway data folder
on SQLite, and on a throwaway PostgreSQL database when one answers): the metrics API of a prompt with
a million replies rolled up.

    .venv/bin/python -m benchmarks.monitoring_bench [--replies 1000000] [--sample 400] [--requests 50]

runs it alone on the configured database (the data folder of STUDIO_DATA_DIR, DATABASE_URL; migrated
first) and prints the figures as one JSON line.

1. A sample of real replies goes through the live path (reply_finish, its signal, the rollup upsert):
   its cost per reply is measured (reply_finish with monitoring's receiver and without, alternated),
   and its rollups are checked against the stored replies.
2. The rollups of `--replies` replies are written directly (what the live path would have left):
   rows per UTC hour over 90 days, for six (version, label, variant, model) series, each row's
   requests drawn around a daily cycle and their latencies and TTFTs from log-normal distributions.
3. `--requests` GET /api/prompts/<slug>/metrics/ of varied windows (24 hours to 366 days) and
   filters through Django's full request path (the token's check included), timed; the monitoring
   page's figures (its htmx partial) likewise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import django
import numpy as np

from studio.data_dir import prepare

DAYS = 90
SERIES = [  # (version, label, variant, model, latency median ms, share of the traffic)
    (1, "production", "", "base", 1800, 0.30),
    (2, "production", "production", "base", 1500, 0.25),
    (3, "candidate", "candidate", "base", 1200, 0.08),
    (2, "production", "", "tuned-1", 900, 0.17),
    (2, "", "", "base", 1600, 0.15),  # chats and playground runs from a version
    (3, "staging", "", "base", 1300, 0.05),
]
WINDOWS = [timedelta(hours=24), timedelta(days=7), timedelta(days=30), timedelta(days=90), timedelta(days=366)]
FILTERS = [{}, {"version": "2"}, {"label": "production"}, {"model": "tuned-1"}, {"variant": "candidate"}]


def bin_probabilities(median_ms: float, sigma: float = 0.8) -> np.ndarray:
    """The share of a log-normal's values in each histogram bin."""
    from monitoring.histogram import BINS, LOW_MS, RATIO

    edges = np.array([LOW_MS * RATIO**index for index in range(1, BINS)])
    below = np.array([0.5 * (1 + math.erf(math.log(edge / median_ms) / (sigma * math.sqrt(2)))) for edge in edges])
    return np.diff(np.concatenate([[0.0], below, [1.0]]))  # (BINS,)


def fill(prompt, replies: int, now: datetime) -> int:
    """Rollup rows (and their tallies) holding `replies` replies; how many rows."""
    from monitoring.models import LATENCY_BINS, TTFT_BINS, ReplyRollup, RollupTally

    rng = np.random.default_rng(29)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    hours = [start + timedelta(hours=index) for index in range(DAYS * 24)]
    daily = np.array([1.0 + 0.6 * math.sin(2 * math.pi * (hour.hour - 9) / 24) for hour in hours])
    weights = np.concatenate([daily * share for *_, share in SERIES])
    counts = rng.multinomial(replies, weights / weights.sum()).reshape(len(SERIES), len(hours))
    latency = [bin_probabilities(median) for *_, median, _ in SERIES]
    ttft = bin_probabilities(150, 0.6)
    rows, tallies = [], []
    for series_index, (version, label, variant, model, _, _) in enumerate(SERIES):
        for hour_index, hour in enumerate(hours):
            requests = int(counts[series_index, hour_index])
            if not requests:
                continue
            errors = int(rng.binomial(requests, 0.02))
            judged = int(rng.binomial(requests, 0.1))
            row = ReplyRollup(
                prompt=prompt,
                version=version,
                label=label,
                variant=variant,
                model_name=model,
                hour=hour,
                day=hour.date(),
                requests=requests,
                errors=errors,
                prompt_tokens=requests * 180,
                completion_tokens=requests * 95,
                tokens_per_s_sum=requests * 24.0,
                tokens_per_s_count=requests,
                feedback_up=int(rng.binomial(requests, 0.05)),
                feedback_down=int(rng.binomial(requests, 0.02)),
                flagged=int(rng.binomial(requests, 0.01)),
                format_valid=requests - errors,
                retrieved=requests,
                nothing_found=int(rng.binomial(requests, 0.03)),
            )
            for name, count in zip(LATENCY_BINS, rng.multinomial(requests - errors, latency[series_index])):
                setattr(row, name, int(count))
            for name, count in zip(TTFT_BINS, rng.multinomial(requests - errors, ttft)):
                setattr(row, name, int(count))
            rows.append(row)
            tallies.append((errors, judged))
    ReplyRollup.objects.bulk_create(rows, batch_size=500)
    RollupTally.objects.bulk_create(
        [
            tally
            for row, (errors, judged) in zip(rows, tallies)
            for tally in (
                RollupTally(rollup=row, kind="error", name="model_failed", count=errors),
                RollupTally(rollup=row, kind="score", name="judge", count=judged, total=judged * 0.8),
            )
            if tally.count
        ],
        batch_size=1000,
    )
    return len(rows)


def live_sample(owner, version, replies: int) -> dict:
    """`replies` replies finished through the live path, half with monitoring's receiver connected and
    half without (alternated), and the rollups they left checked against them."""
    from chat.models import Conversation, Message
    from chat.serving.queue import reply_finish
    from chat.signals import reply_finished
    from monitoring.models import ReplyRollup
    from monitoring.receivers import follow_reply

    timings = {True: [], False: []}
    counted = 0
    for index in range(replies):
        conversation = Conversation.objects.create(
            owner=owner, kind=Conversation.Kind.API, prompt_version=version, model_name="base"
        )
        asked = Message.objects.create(conversation=conversation, role="user", content="Where is my parcel?")
        reply = Message.objects.create(
            conversation=conversation, parent=asked, role="assistant", status="streaming", model_name="base"
        )
        followed = index % 2 == 0
        if not followed:
            reply_finished.disconnect(follow_reply, dispatch_uid=f"monitoring.follow_reply.{id(reply_finished)}")
        started = time.perf_counter()
        reply_finish(
            message_id=reply.pk,
            content="It ships today.",
            status="complete",
            usage={"prompt_tokens": 40, "completion_tokens": 12, "ttft_ms": 80.0, "tokens_per_s": 25.0},
            finish_reason="stop",
        )
        timings[followed].append((time.perf_counter() - started) * 1000)
        if not followed:
            reply_finished.connect(follow_reply, dispatch_uid=f"monitoring.follow_reply.{id(reply_finished)}")
        counted += followed
    rolled = ReplyRollup.objects.filter(prompt=version.prompt).values_list("requests", "completion_tokens")
    return {
        "replies": replies,
        "counted": counted,
        "rolled_up_requests": sum(requests for requests, _ in rolled),
        "rolled_up_completion_tokens": sum(tokens for _, tokens in rolled),
        "expected_completion_tokens": counted * 12,
        "finish_with_rollup_ms": statistics.median(timings[True]),
        "finish_without_rollup_ms": statistics.median(timings[False]),
    }


def timed_requests(path: str, queries: list[dict], client, headers: dict) -> list[float]:
    from urllib.parse import urlencode

    client.get(f"{path}?{urlencode(queries[0])}", **headers)  # warm-up: connections, caches
    took = []
    for query in queries:
        started = time.perf_counter()
        answer = client.get(f"{path}?{urlencode(query)}", **headers)
        took.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}?{urlencode(query)} answered {answer.status_code}: {answer.content[:300]!r}")
    return took


def percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(quantile * len(ordered))) - 1]


def measure(*, replies: int, sample: int, requests: int) -> dict:
    from django.contrib.auth.models import User
    from django.test import Client

    from accounts.services import api_token_create
    from prompts.services import label_move, prompt_create, version_create

    owner = User.objects.create_user("bench-monitoring", password="bench-monitoring-password")
    prompt = prompt_create(
        owner=owner, name="Bench monitoring", slug="bench-monitoring", version={"template": "{{ q }}"}
    )
    for _ in range(2):
        version_create(prompt=prompt, author=owner, fields={"template": "{{ q }}"})
    label_move(prompt=prompt, name="production", version=prompt.versions.get(number=2), user=owner)
    sampled = prompt_create(owner=owner, name="Bench sample", slug="bench-sample", version={"template": "{{ q }}"})
    sample_figures = live_sample(owner, sampled.versions.get(), sample)

    now = datetime.now(UTC)
    started = time.perf_counter()
    rows = fill(prompt, replies, now)
    fill_s = time.perf_counter() - started

    rng = np.random.default_rng(7)
    queries = []
    for index in range(requests):
        length = WINDOWS[index % len(WINDOWS)]
        until = now - timedelta(hours=int(rng.integers(0, 24 * 30))) if length < timedelta(days=90) else now
        queries.append(
            {
                "since": (until - length).isoformat(),
                "until": until.isoformat(),
                **FILTERS[(index // len(WINDOWS)) % len(FILTERS)],
            }
        )
    client = Client(HTTP_HOST="127.0.0.1")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=owner, name='bench')[1]}"}
    api_ms = timed_requests("/api/prompts/bench-monitoring/metrics/", queries, client, bearer)
    client.force_login(owner)
    page_ms = timed_requests("/monitoring/prompts/bench-monitoring/", queries, client, {"HTTP_HX_REQUEST": "true"})
    return {
        "replies": replies,
        "rows": rows,
        "days": DAYS,
        "fill_s": round(fill_s, 1),
        "sample": sample_figures,
        "requests": requests,
        "metrics_ms": [round(ms, 1) for ms in api_ms],
        "metrics_p50_ms": round(percentile(api_ms, 0.5), 1),
        "metrics_p95_ms": round(percentile(api_ms, 0.95), 1),
        "page_p50_ms": round(percentile(page_ms, 0.5), 1),
        "page_p95_ms": round(percentile(page_ms, 0.95), 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.monitoring_bench", description="Monitoring figures for make bench (JSON on stdout)."
    )
    parser.add_argument("--replies", type=int, default=1_000_000, help="replies in the rollups")
    parser.add_argument("--sample", type=int, default=400, help="replies through the live path")
    parser.add_argument("--requests", type=int, default=50, help="metrics requests timed")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    prepare()  # the data folder and its secret key, which the settings read
    django.setup()
    print(json.dumps(measure(replies=args.replies, sample=args.sample, requests=args.requests)), flush=True)


if __name__ == "__main__":
    main()
