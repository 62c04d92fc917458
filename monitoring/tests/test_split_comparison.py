"""The variants of an A/B split side by side, read from the rollups (monitoring.comparison): each
variant's figures, and each difference from the control with its 95 % interval where one is known.
Then end to end: requests served through the API under a split are counted under their variants."""

import json
import math
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_create
from chat.models import Message
from monitoring.comparison import comparison_data, comparison_for
from monitoring.histogram import bin_middle_ms, bin_of
from monitoring.models import ReplyRollup, RollupTally
from prompts import services as prompt_services
from prompts.splits import split_end, split_set

VERSION = {"instructions": "Answer briefly.", "template": "{{ text }}", "max_new_tokens": 4}
HALVES = [{"label": "production", "weight": 0.5}, {"label": "candidate", "weight": 0.5}]


@pytest.fixture
def triage(alice):
    """alice's "triage": production → v1, candidate → v2."""
    prompt = prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(VERSION))
    prompt_services.version_create(prompt=prompt, author=alice, fields={**VERSION, "instructions": "One word."})
    for name, number in (("production", 1), ("candidate", 2)):
        prompt_services.label_move(prompt=prompt, name=name, version=prompt.versions.get(number=number), user=alice)
    return prompt


def rollup(prompt, variant, hour, *, latency_ms=None, scores=None, **figures):
    """A rollup row of `variant` (version 1 for production, 2 else) with these sums; its replies
    that did not fail all took `latency_ms`."""
    if latency_ms is not None:
        figures[f"latency_{bin_of(latency_ms):02d}"] = figures["requests"] - figures.get("errors", 0)
    row = ReplyRollup.objects.create(
        prompt=prompt,
        version=1 if variant == "production" else 2,
        label=variant or "production",
        variant=variant,
        model_name="",
        hour=hour,
        **figures,
    )
    for name, (count, total) in (scores or {}).items():
        RollupTally.objects.create(rollup=row, kind=RollupTally.Kind.SCORE, name=name, count=count, total=total)
    return row


def hour_ago(hours: int):
    return (timezone.now() - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


@pytest.mark.django_db
def test_without_a_split_there_is_nothing_to_compare(triage):
    now = timezone.now()
    assert comparison_for(triage, now - timedelta(days=7), now) is None


@pytest.mark.django_db
def test_each_variant_is_compared_with_the_control(alice, triage):
    split = split_set(prompt=triage, variants=HALVES, user=alice)
    split.created_at = timezone.now() - timedelta(hours=3)
    split.save(update_fields=["created_at"])
    for hours in (3, 2):
        rollup(triage, "production", hour_ago(hours), requests=500, errors=5, feedback_up=40, feedback_down=10,
               flagged=2, latency_ms=500, scores={"judge": (25, 20.0)})  # fmt: skip
        rollup(triage, "candidate", hour_ago(hours), requests=500, errors=20, feedback_up=25, feedback_down=25,
               flagged=3, latency_ms=1000, scores={"judge": (25, 15.0)})  # fmt: skip
    rollup(triage, "", hour_ago(2), requests=300, errors=300)  # no split chose these: not counted
    rollup(triage, "candidate", hour_ago(30), requests=300, errors=300)  # before the split started
    now = timezone.now()

    compared = comparison_data(triage, now - timedelta(days=7), now)

    assert compared["control"] == "production" and compared["split"]["running"] is True
    production, candidate = compared["variants"]
    assert (production["label"], production["version"], candidate["label"], candidate["version"]) == (
        "production", 1, "candidate", 2,
    )  # fmt: skip
    assert (production["requests"], candidate["requests"]) == (1000, 1000)
    assert (production["share"], candidate["share"]) == (0.5, 0.5)
    assert (production["error_rate"], candidate["error_rate"]) == (0.01, 0.04)
    assert (production["thumbs_up_rate"], candidate["thumbs_up_rate"]) == (0.8, 0.5)
    assert production["latency_ms"]["p50"] == round(bin_middle_ms(bin_of(500)), 1)
    assert candidate["online_scores"] == {"judge": {"mean": 0.6, "n": 50}}
    assert production["against_control"] == {}

    errors = candidate["against_control"]["error_rate"]
    assert errors["difference"] == pytest.approx(0.03)
    # Agresti-Caffo: one success and one failure added to each side, then the normal interval.
    p1, p0 = 41 / 1002, 11 / 1002
    spread = math.sqrt(p1 * (1 - p1) / 1002 + p0 * (1 - p0) / 1002)
    assert errors["low"] == pytest.approx(p1 - p0 - 1.959964 * spread)
    assert errors["high"] == pytest.approx(p1 - p0 + 1.959964 * spread)
    assert errors["clear"] is True
    thumbs = candidate["against_control"]["thumbs_up_rate"]
    assert thumbs["difference"] == pytest.approx(-0.3) and thumbs["high"] < 0 and thumbs["clear"]
    flagged = candidate["against_control"]["flagged_rate"]
    assert flagged["low"] < 0 < flagged["high"] and flagged["clear"] is False  # 2 ‰ against 3 ‰: unclear
    latency = candidate["against_control"]["latency_p50_ms"]
    assert latency["difference"] == pytest.approx(bin_middle_ms(bin_of(1000)) - bin_middle_ms(bin_of(500)), abs=0.1)
    assert latency["clear"] is True
    judge = candidate["against_control"]["online_scores.judge"]
    assert judge["difference"] == pytest.approx(-0.2) and judge["low"] is None and judge["clear"] is False
    assert any("sum of squares" in note for note in compared["notes"])


@pytest.mark.django_db
def test_the_page_shows_the_differences_as_text(alice, triage):
    split_set(prompt=triage, variants=HALVES, user=alice)
    rollup(triage, "production", hour_ago(0), requests=4, errors=0, latency_ms=300)
    rollup(triage, "candidate", hour_ago(0), requests=3, errors=1, latency_ms=300)
    now = timezone.now()
    table = {row["figure"]: row["cells"] for row in comparison_for(triage, now - timedelta(days=1), now)["table"]}
    assert table["Requests"][0]["value"].startswith("4 · 57.1 % of the split (weight 50 %)")
    assert table["Errors"][1]["value"] == "33.3 %" and table["Errors"][1]["difference"].startswith("+33.3 pts (95 %: ")
    assert table["Errors"][1]["clear"] is False  # 1 of 3 against 0 of 4: too few to tell
    assert table["Latency p50"][1]["difference"].startswith("±0 ms")
    assert table["Errors"][0]["difference"] == ""  # the control


@pytest.mark.django_db
def test_a_split_that_ended_in_the_window_is_still_compared(alice, triage):
    split_set(prompt=triage, variants=HALVES, user=alice)
    rollup(triage, "candidate", hour_ago(0), requests=2)
    split_end(prompt=triage, user=alice)
    now = timezone.now()
    compared = comparison_data(triage, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert compared["split"]["running"] is False and compared["variants"][1]["requests"] == 2
    assert comparison_data(triage, now + timedelta(minutes=1), now + timedelta(hours=1)) is None


@pytest.mark.django_db(transaction=True)  # a real model worker answers, and the API's view is async
@pytest.mark.usefixtures("model_worker")
def test_requests_served_under_a_split_are_counted_under_their_variants(alice, triage):
    split = split_set(prompt=triage, variants=HALVES, user=alice)
    token = api_token_create(user=alice, name="sdk")[1]
    for n in range(8):
        answer = Client().post(
            "/v1/chat/completions",
            json.dumps(
                {"model": "prompt:triage", "user": f"customer-{n}", "messages": [{"role": "user", "content": "Hi"}]}
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert answer.status_code == 200, answer.content[:300]
    served = {label: Message.objects.filter(variant=label, role="assistant").count() for label in split.labels}
    assert sum(served.values()) == 8
    deadline = time.monotonic() + 60  # the rollups follow each reply's end, after its commit
    while time.monotonic() < deadline:
        now = timezone.now()
        compared = comparison_data(triage, now - timedelta(hours=1), now + timedelta(minutes=1))
        counted = {variant["label"]: variant["requests"] for variant in compared["variants"]}
        if counted == served:
            break
        time.sleep(0.2)
    assert counted == served
    status = Client().get("/api/prompts/triage/split/", HTTP_AUTHORIZATION=f"Bearer {token}")
    api_counted = {v["label"]: v["requests"] for v in status.json()["comparison"]["variants"]}
    assert api_counted == served


@pytest.mark.django_db
def test_the_monitoring_page_compares_the_variants_and_promotes_one(client, alice, triage):
    split_set(prompt=triage, variants=HALVES, user=alice)
    rollup(triage, "production", hour_ago(0), requests=4, latency_ms=300)
    rollup(triage, "candidate", hour_ago(0), requests=3, latency_ms=900)
    client.force_login(alice)
    page = client.get("/monitoring/prompts/triage/").content.decode()
    assert 'id="split-comparison"' in page and "A/B split: production vs candidate" in page
    assert "Promote candidate" in page and 'hx-post="/prompts/triage/split/promote/"' in page
    card = client.post("/prompts/triage/split/promote/", {"label": "candidate"}).content.decode()
    assert "Promoted candidate: production now points at v2; the split ended." in card
    page = client.get("/monitoring/prompts/triage/").content.decode()
    assert "A/B split: production vs candidate" in page and "Ended;" in page and "Promote candidate" not in page
