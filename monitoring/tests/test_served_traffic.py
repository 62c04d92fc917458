"""End to end: requests to `prompt:<slug>` through the OpenAI-compatible API, answered by a real
model worker (the tiny model), are in the prompt's metrics as soon as they end, per A/B variant,
equal to a scan of the stored replies; a thumbs down given later moves them."""

import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_create
from chat.models import Message
from chat.services import reply_feedback
from prompts import services as prompt_services
from prompts.models import PromptSplit
from prompts.splits import split_set

from . import scenario

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("model_worker")]

VERSION = {"instructions": "Answer briefly.", "template": "{{ text }}", "max_new_tokens": 4}


def ask(token, **body):
    return Client().post(
        "/v1/chat/completions",
        json.dumps({"messages": [{"role": "user", "content": "Is the printer broken?"}], **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def metrics(token, **query):
    answer = Client().get("/api/prompts/triage/metrics/", query, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 200, answer.content[:300]
    return answer.json()


def test_served_replies_are_in_the_metrics_as_they_end(alice):
    prompt = prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(VERSION))
    prompt_services.version_create(prompt=prompt, author=alice, fields={**VERSION, "instructions": "One word."})
    for name, number in (("production", 1), ("candidate", 2)):
        prompt_services.label_move(prompt=prompt, name=name, version=prompt.versions.get(number=number), user=alice)
    split_set(
        prompt=prompt,
        variants=[{"label": "production", "weight": 0.5}, {"label": "candidate", "weight": 0.5}],
        user=alice,
    )
    token = api_token_create(user=alice, name="sdk")[1]
    split = PromptSplit.objects.get(ended_at=None)
    served = {}
    for n in range(40):
        served.setdefault(split.variant_for(f"user:customer-{n}"), []).append(f"customer-{n}")
    asked = [("prompt:triage", {"user": served["production"][0]}), ("prompt:triage", {"user": served["candidate"][0]})]
    asked += [("prompt:triage", {"user": served["candidate"][1]}), ("prompt:triage@v1", {})]
    for model, extra in asked:
        assert ask(token, model=model, **extra).status_code == 200

    deadline = time.monotonic() + 60
    while (figures := metrics(token))["requests"] < len(asked) and time.monotonic() < deadline:
        time.sleep(0.1)  # counted when each reply ended, by the worker that wrote it
    assert figures["requests"] == len(asked) and figures["errors"] == {}
    assert {row["variant"]: row["requests"] for row in figures["by_variant"]} == {"production": 1, "candidate": 2}
    assert {row["label"]: row["requests"] for row in figures["by_label"]} == {"production": 2, "candidate": 2}
    assert figures["ttft_ms"]["p50"] is not None and figures["tokens"]["completion"] > 0
    now = timezone.now()
    found = scenario.compared(prompt, {}, now - timedelta(hours=2), now + timedelta(hours=1))
    scenario.same(found["rollups"], found["scan"])

    reply = Message.objects.filter(role="assistant", variant="candidate").earliest("pk")
    reply_feedback(message=reply, value="down")
    assert metrics(token, variant="candidate")["feedback"] == {"up": 0, "down": 1}
