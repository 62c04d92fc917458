"""`prompt:<slug>` in the OpenAI-compatible API calls its version's tools: they apply when the
request sends none, a request's `tools` replace them, and a request's `tool_choice` without `tools`
chooses among the version's (a function it names must be one of them)."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from chat.models import Conversation, Message
from prompts import services as prompt_services

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Oslo", "Paris"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
VERSION = {
    "template": "{{ question }}",
    "max_new_tokens": 96,
    "tools": [WEATHER],
    "tool_choice": "required",
    "parallel_tool_calls": False,
}


@pytest.fixture
def weather_prompt(alice):
    return prompt_services.prompt_create(owner=alice, name="Weather", slug="weather", version=dict(VERSION))


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="sdk")[1]


def ask(token, **body):
    return Client().post(
        "/v1/chat/completions",
        json.dumps({"model": "prompt:weather", "messages": [{"role": "user", "content": "Oslo?"}], **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def calls_of(answer) -> list[tuple[str, dict]]:
    assert answer.status_code == 200, answer.content[:500]
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    return [
        (call["function"]["name"], json.loads(call["function"]["arguments"]))
        for call in choice["message"]["tool_calls"]
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker", "weather_prompt")
def test_a_prompt_with_tools_answers_with_a_call_to_them(token):
    [(name, arguments)] = calls_of(ask(token))
    assert name == "get_weather" and set(arguments) == {"city"}
    conversation = Conversation.objects.get(kind=Conversation.Kind.API)
    assert "tools" not in conversation.parameters  # the version's apply (chat.selectors.tools_for)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker", "weather_prompt")
def test_a_requests_tools_replace_the_versions(token):
    [(name, arguments)] = calls_of(ask(token, tools=[TIME], tool_choice="required", parallel_tool_calls=False))
    assert name == "get_time" and arguments["zone"] in ("UTC", "CET")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_a_requests_tool_choice_without_tools_chooses_among_the_versions(alice, token):
    prompt_services.prompt_create(
        owner=alice,
        name="Weather",
        slug="weather",
        version={**VERSION, "tools": [WEATHER, TIME], "tool_choice": "auto"},
    )
    [(name, _)] = calls_of(ask(token, tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert name == "get_time"
    stored = Conversation.objects.get(kind=Conversation.Kind.API).parameters["tools"]
    assert (stored["choice"], stored["function"], [t["name"] for t in stored["tools"]]) == (
        "function",
        "get_time",
        ["get_weather", "get_time"],
    )
    answer = ask(token, tool_choice="none")  # shown, never called: the reply is text
    assert answer.status_code == 200 and "tool_calls" not in answer.json()["choices"][0]["message"]


@pytest.mark.django_db(transaction=True)  # the API's view is async: its database work runs in a thread
@pytest.mark.usefixtures("weather_prompt")
def test_a_tool_choice_naming_a_tool_the_version_lacks_is_refused(token):
    answer = ask(token, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "tool_choice" and "get_time" in error["message"] and "get_weather" in error["message"]
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_tool_choice_for_a_prompt_without_tools_is_refused(alice, token):
    prompt_services.prompt_create(owner=alice, name="Weather", slug="weather", version={"template": "{{ q }}"})
    answer = ask(token, tool_choice="required")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "tool_choice"
    assert not Message.objects.exists()
