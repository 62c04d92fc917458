"""The OpenAI-compatible API refuses what it cannot do before anything is stored, counts its
per-person limit atomically, and answers a reply stopped while queued (no worker runs here)."""

import asyncio
import json
import threading

import pytest
from django.test import AsyncClient, Client

from accounts.services import api_token_create
from chat.models import Conversation, Message
from chat.serving import queue
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = TINY_MODEL_DIR.name


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="sdk")[1]


def post(client, token, body):
    return client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("functions", [{"name": "f"}]),  # the deprecated form of `tools` (chat/tests/test_tool_calls.py)
        ("tool_choice", "required"),  # with no tools to call
        ("response_format", {"type": "xml"}),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
    ],
)
def test_unsupported_parameters_are_refused_naming_them(token, name, value):
    answer = post(Client(), token, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], name: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == name and error["type"] == "invalid_request_error" and name in error["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "response_format, message",
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}}, "not a valid JSON Schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "not": {}}}},
            "Unimplemented",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": list(range(10_000))}}},
            "at most 1,000",
        ),
        ({"type": "json_schema"}, "must be"),
        ("json", "must be"),
    ],
)
def test_a_response_format_that_cannot_be_enforced_is_refused_before_anything_is_stored(
    token, response_format, message
):
    answer = post(
        Client(),
        token,
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": response_format},
    )
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["param"] == "response_format" and message in error["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "schema, code, message",
    [
        (
            {
                "type": "object",
                "properties": {"s": {"type": "string", "pattern": "^(a{1000}){1000}$"}},
                "required": ["s"],
            },
            "output_format_too_complex",
            "properties → s → pattern: its repetitions written out come to 1,000,002",
        ),
        (
            {
                "$defs": {"n": {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}, "required": ["n"]}},
                "$ref": "#/$defs/n",
            },
            "invalid_output_format",
            "has no finite answer",
        ),
        (
            {"type": "object", "properties": {"priority": {"type": "integr"}}},
            "invalid_output_format",
            "at properties → priority → type: 'integr' is not one of the JSON Schema types",
        ),
    ],
)
def test_a_costly_or_endless_schema_is_refused_with_a_code_before_it_reaches_a_worker(token, schema, code, message):
    """The issue's attack: each such request grew the model worker ~215 MB and answered `{"` as "stop"."""
    answer = post(
        Client(),
        token,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        },
    )
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["param"] == "response_format" and error["code"] == code and message in error["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "name, value, said",
    [
        ("temperature", 2.5, "`temperature` must be between 0 and 2."),
        ("top_p", 0, "`top_p` must be above 0 and at most 1."),
        ("seed", 2**63, "`seed` must be between"),
        ("max_tokens", 1.5, "`max_tokens` must be a whole number."),
        ("stop", ["a", "b", "c", "d", "e"], "`stop` must be at most 4, each at most 200 characters."),
        ("stop", ["x" * 201], "`stop` must be at most 4"),
        ("stop", [""], "`stop` must be a list of non-empty texts."),
    ],
)
def test_sampling_out_of_the_shared_range_is_refused_saying_the_range(token, name, value, said):
    answer = post(Client(), token, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], name: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (name, "invalid_sampling") and error["message"].startswith(said)
    assert not Message.objects.exists()


def test_their_off_values_are_accepted(token):
    answer = post(
        Client(),
        token,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "n": 1,
            "logprobs": False,
            "tools": [],
            "response_format": {"type": "text"},
            "frequency_penalty": 0,
            "stream": True,
        },
    )
    assert answer.status_code == 200
    answer.close()


def test_a_history_longer_than_the_context_is_refused_with_how_much_it_is_over(token, alice):
    # 499 alternating messages of 4,000 characters: 1.9 MiB, under the body limit, far over the context.
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"{n} " + "lorem ipsum " * 333} for n in range(499)
    ]
    answer = post(Client(), token, {"model": MODEL, "messages": messages, "max_tokens": 1})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "maximum context length is 32768 tokens" in error["message"] and "too many" in error["message"]
    assert not Conversation.objects.filter(owner=alice).exists()


async def test_a_body_over_the_limit_gets_413_in_openais_shape(token):
    from channels.testing import HttpCommunicator

    from studio.asgi import application

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 3_000_000}]}).encode()
    answer = await HttpCommunicator(
        application,
        "POST",
        "/v1/chat/completions",
        body=body,
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    ).get_response(timeout=30)
    assert answer["status"] == 413
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "request_too_large" and "too large" in error["message"] and "param" in error


def test_simultaneous_requests_cannot_pass_the_per_person_queue_limit_together(token, alice, settings):
    settings.LLM_MAX_QUEUED_PER_USER = 4
    statuses, retry_afters, start = [], set(), threading.Barrier(12)

    def request():
        start.wait()
        answer = post(
            Client(), token, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            retry_afters.add(answer.get("Retry-After"))
        answer.close()  # never read: the reply stays queued (no worker runs here)

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [200] * 4 + [429] * 8
    assert retry_afters == {"10"}  # each refusal says when to ask again
    assert Message.objects.filter(status="queued", conversation__owner=alice).count() == 4


def wait_for_queued_reply(alice) -> Message:
    """In a plain thread (the request holds asgiref's thread for sync code while it waits)."""
    import time

    for _ in range(600):
        queued = Message.objects.filter(conversation__owner=alice, status="queued").first()
        if queued is not None:
            return queued
        time.sleep(0.1)
    raise AssertionError("the API request never queued a reply")


async def stop_when_queued(alice):
    queued = await asyncio.to_thread(wait_for_queued_reply, alice)
    assert await asyncio.to_thread(queue.reply_stop_if_queued, message=queued)  # the chat tab's stop


async def test_a_queued_reply_stopped_from_the_chat_tab_answers_the_api_instead_of_500(token, alice):
    client = AsyncClient()
    request = asyncio.create_task(
        client.post(
            "/v1/chat/completions",
            json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
    )
    await stop_when_queued(alice)
    answer = await asyncio.wait_for(request, 60)
    assert answer.status_code == 200
    body = json.loads(answer.content)
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["content"] == ""


async def test_a_queued_reply_stopped_from_the_chat_tab_ends_the_stream_with_done(token, alice):
    client = AsyncClient()

    async def stream():
        answer = await client.post(
            "/v1/chat/completions",
            json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        return [part async for part in answer.streaming_content]

    request = asyncio.create_task(stream())
    await stop_when_queued(alice)
    events = b"".join(await asyncio.wait_for(request, 60)).decode()
    assert events.rstrip().endswith("data: [DONE]")
    assert '"finish_reason": "stop"' in events


async def test_a_non_streaming_client_that_goes_away_stops_its_reply(token, alice):
    client = AsyncClient()
    request = asyncio.create_task(
        client.post(
            "/v1/chat/completions",
            json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
    )
    queued = await asyncio.to_thread(wait_for_queued_reply, alice)
    request.cancel()  # what Django does to the view when the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.to_thread(queued.refresh_from_db)
    assert queued.status == "stopped"
