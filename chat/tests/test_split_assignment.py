"""A/B splits in the OpenAI-compatible API: `prompt:<slug>` is served by the label the prompt's split
gives each end user (OpenAI's `user`, else the token), always the same one, in the weights'
proportions; every answer says which variant and version served it, and the reply keeps it."""

import json
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from accounts.models import ApiToken
from accounts.services import api_token_create
from chat.models import Message
from chat.serving.openai_api import _split_version
from prompts import services as prompt_services
from prompts.models import PromptSplit
from prompts.splits import split_set

VERSION = {"instructions": "Answer briefly.", "template": "{{ text }}", "max_new_tokens": 4}


@pytest.fixture
def split_prompt(alice):
    """alice's "triage": production → v1, candidate → v2, split 0.9 / 0.1."""
    prompt = prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(VERSION))
    prompt_services.version_create(
        prompt=prompt, author=alice, fields={**VERSION, "instructions": "Answer in one word."}
    )
    for name, number in (("production", 1), ("candidate", 2)):
        prompt_services.label_move(prompt=prompt, name=name, version=prompt.versions.get(number=number), user=alice)
    split_set(
        prompt=prompt,
        variants=[{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}],
        user=alice,
    )
    return prompt


@pytest.mark.django_db
def test_a_thousand_end_users_are_shared_out_by_the_weights_and_each_keeps_their_variant(split_prompt):
    served = {f"customer-{n}": _split_version(split_prompt, f"customer-{n}", "") for n in range(1000)}
    shares = Counter(variant for _, variant in served.values())
    assert set(shares) == {"production", "candidate"}
    assert abs(shares["candidate"] / 1000 - 0.1) <= 0.03, shares
    for end_user, (version, variant) in list(served.items())[:200]:  # asked again: the same answer
        assert _split_version(split_prompt, end_user, "") == (version, variant)
    assert {variant: version.number for version, variant in served.values()} == {"production": 1, "candidate": 2}


@pytest.mark.django_db
def test_three_variants_follow_their_weights_too(alice, split_prompt):
    prompt_services.version_create(prompt=split_prompt, author=alice, fields={**VERSION, "instructions": "Be terse."})
    prompt_services.label_move(
        prompt=split_prompt, name="staging", version=split_prompt.versions.get(number=3), user=alice
    )
    weights = {"production": 0.5, "candidate": 0.3, "staging": 0.2}
    split = split_set(prompt=split_prompt, variants=[{"label": k, "weight": w} for k, w in weights.items()], user=alice)
    shares = Counter(split.variant_for(f"user:{n}") for n in range(1000))
    for label, weight in weights.items():
        assert abs(shares[label] / 1000 - weight) <= 0.04, shares


@pytest.mark.django_db
def test_without_a_user_the_token_is_the_end_user(alice, split_prompt):
    split = PromptSplit.objects.get(ended_at=None)
    for n in range(20):
        raw = api_token_create(user=alice, name=f"app {n}")[1]
        token_id = ApiToken.objects.get(prefix=raw[:10]).pk
        expected = split.variant_for(f"token:{token_id}")
        assert _split_version(split_prompt, "", f"Bearer {raw}")[1] == expected
        assert _split_version(split_prompt, "", f"Bearer {raw}")[1] == expected


@pytest.mark.django_db
def test_without_a_split_the_production_label_serves_with_no_variant(alice, split_prompt):
    PromptSplit.objects.update(ended_at="2026-01-01T00:00:00Z")
    version, variant = _split_version(split_prompt, "customer-1", "")
    assert (version.number, variant) == (1, "")


def _end_user_of_each_variant(split) -> dict[str, str]:
    """An end user's name for each variant (the split decides: these are found, not chosen)."""
    found = {}
    for n in range(1000):
        found.setdefault(split.variant_for(f"user:customer-{n}"), f"customer-{n}")
        if len(found) == len(split.variants):
            return found
    raise AssertionError("no end user of some variant among 1,000")


def _ask(token: str, **body):
    return Client().post(
        "/v1/chat/completions",
        json.dumps({"messages": [{"role": "user", "content": "Is the printer broken?"}], **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def _events(answer) -> list[dict]:
    async def read():
        return [part.decode() async for part in answer.streaming_content]

    text = "".join(async_to_sync(read)())
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", lines[-3:]
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_every_answer_says_which_variant_and_version_served_it(alice, split_prompt):
    token = api_token_create(user=alice, name="sdk")[1]
    split = PromptSplit.objects.get(ended_at=None)
    for variant, end_user in _end_user_of_each_variant(split).items():
        number = 1 if variant == "production" else 2
        answer = _ask(token, model="prompt:triage", user=end_user)
        assert answer.status_code == 200, answer.content[:500]
        studio = answer.json()["studio"]
        assert (studio["variant"], studio["version"]) == (variant, number)
        reply = Message.objects.select_related("conversation__prompt_version").get(pk__in=_reply_of(studio))
        assert reply.variant == variant and reply.conversation.prompt_version.number == number
        assert reply.status == "complete"

        events = _events(_ask(token, model="prompt:triage", user=end_user, stream=True))
        first, finish = events[0], next(e for e in events if e.get("choices") and e["choices"][0]["finish_reason"])
        for event in (first, finish):
            assert (event["studio"]["variant"], event["studio"]["version"]) == (variant, number), event
        assert Message.objects.get(conversation_id=first["studio"]["conversation"], role="assistant").variant == variant


def _reply_of(studio: dict) -> list[int]:
    return list(
        Message.objects.filter(conversation_id=studio["conversation"], role="assistant").values_list("pk", flat=True)
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_a_request_naming_a_label_or_version_is_not_split(alice, split_prompt):
    token = api_token_create(user=alice, name="sdk")[1]
    for model, number in (("prompt:triage@candidate", 2), ("prompt:triage@v1", 1)):
        answer = _ask(token, model=model, user="customer-1")
        assert answer.status_code == 200, answer.content[:500]
        studio = answer.json()["studio"]
        assert (studio["variant"], studio["version"]) == ("", number)
        assert Message.objects.get(conversation_id=studio["conversation"], role="assistant").variant == ""


@pytest.mark.django_db(transaction=True)  # the API's view is async: its database work runs in a thread
def test_the_user_field_must_be_text(alice, split_prompt):
    token = api_token_create(user=alice, name="sdk")[1]
    for wrong in ({"id": 1}, 7, "x" * 257):
        answer = _ask(token, model="prompt:triage", user=wrong)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "user"
    assert not Message.objects.exists()
