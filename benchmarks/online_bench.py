"""`make bench`'s online evaluation path: chat speed while a rule scores every reply, against no rule.

Replies are requests to `prompt:<slug>` through the OpenAI-compatible API, streamed (the served
path that production traffic takes), timed as the client sees the chunks: tokens/s between the
first and the last content chunk, as the WebSocket measurements time frames. In rounds: replies of
a prompt no rule follows (once nothing is left to score), then replies of an identical prompt whose
rule samples every reply
(sample rate 1) and scores it with length, regex and contains and an LLM judge, so that each reply
is written while the previous one is being scored (the judge in the model worker's background
lane, the rest in the job worker of the evaluations lane). The rule's own page figures then confirm
it scored them all.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request

from .measure import OtherLoad, _api, decode_speed, server_pids

SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
for slug in ("bench-online", "bench-online-plain"):
    prompt_create(owner=admin, name=slug, slug=slug, version={
        "instructions": "You are a helpful assistant.", "template": "{{ question }}", "temperature": 0})
print("TOKEN", api_token_create(user=admin, name="bench-online")[1])
"""
RULE = {
    "prompt": "bench-online",
    "version": 1,
    "sample_rate": 1.0,
    "scorers": [
        {"type": "length", "min": 1, "max": 4000},
        {"type": "regex", "pattern": r"[A-Za-z]+"},
        {"type": "contains", "text": "the", "ignore_case": True},
        {"type": "llm_judge", "rubric": "The answer is a coherent short story."},
    ],
}


def api_reply(server, token: str, model: str, prompt: str, *, timeout: float = 300) -> dict:
    """One streamed chat completion; the chunks timed as they arrive."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        server.base_url + "/v1/chat/completions",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    token_times, usage = [], None
    sent_at = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:  # server-sent events, a line at a time as the server flushes them
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                raise RuntimeError(f"the server answered with an error: {chunk['error']}")
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                token_times.append(time.perf_counter())
            usage = chunk.get("usage") or usage
    if len(token_times) < 2 or not usage:
        raise RuntimeError(
            f"the reply came in {len(token_times)} content chunks (usage {usage}): no speed to measure; "
            "ask for longer replies (--tokens)"
        )
    count = usage["completion_tokens"]
    return {
        "completion_tokens": count,
        "ttft_ms": (token_times[0] - sent_at) * 1000,
        "tokens_per_s": decode_speed(count, token_times[0], token_times[-1]),
    }


def _timed(server, token: str, model: str, prompt: str) -> dict:
    with OtherLoad(server_pids(server)) as other:
        reply = api_reply(server, token, model, prompt)
    return {**reply, "other_load": other.cores}


def _until_scored(server, token: str, rule_id: int, replies: int, timeout: float = 600) -> dict:
    """The rule's figures once it has scored `replies` replies (and none waits)."""
    deadline = time.monotonic() + timeout
    while True:
        rule = _api(server, token, "GET", f"/api/online-evaluations/{rule_id}/")
        scored = min(figures["n"] + figures["errors"] for figures in rule["scores"].values())
        if (scored >= replies and rule["waiting"] == 0) or time.monotonic() > deadline:
            return rule
        time.sleep(0.5)


def chat_during_online_evaluation(server, token: str, prompt: str, *, replies: int = 5, rounds: int = 2) -> dict:
    """Medians of replies with no rule and of replies while a rule scores every one, measured in
    `rounds` rounds of `replies` each way, so that drift on a shared machine touches both alike
    (each round's replies with no rule start once the rule has nothing left to score)."""
    rule_id = _api(server, token, "POST", "/api/online-evaluations/", RULE)["id"]
    # Warm-up: the job worker's first scoring (its imports, the judge's first conversation) and
    # a first reply of each prompt.
    api_reply(server, token, "prompt:bench-online", prompt)
    api_reply(server, token, "prompt:bench-online-plain", prompt)
    alone, during = [], []
    for round_number in range(rounds):
        _until_scored(server, token, rule_id, 1 + round_number * replies)
        alone += [_timed(server, token, "prompt:bench-online-plain", prompt) for _ in range(replies)]
        during += [_timed(server, token, "prompt:bench-online", prompt) for _ in range(replies)]
    rule = _until_scored(server, token, rule_id, 1 + rounds * replies)
    _api(server, token, "POST", f"/api/online-evaluations/{rule_id}/disable/")
    alone_tps = statistics.median(r["tokens_per_s"] for r in alone)
    during_tps = statistics.median(r["tokens_per_s"] for r in during)
    return {
        "alone": alone,
        "during": during,
        "alone_tokens_per_s": alone_tps,
        "during_tokens_per_s": during_tps,
        "ratio": during_tps / alone_tps,
        "scores": rule["scores"],  # each scorer's mean, count and errors over the warm-up and the measured replies
    }
