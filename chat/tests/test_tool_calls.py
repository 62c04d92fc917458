"""Tools in the OpenAI-compatible API, before any decoding (no worker runs here): a request's tools,
tool choice and history of calls and results are checked, bounded and refused naming the field
before anything is stored; an accepted one is stored with its tools, its history in the Hermes text
form the model reads."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from chat.models import Conversation, Message
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = TINY_MODEL_DIR.name
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
ASKED = {"role": "user", "content": "Weather in Oslo?"}


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="sdk")[1]


def post(token, **body):
    return Client().post(
        "/v1/chat/completions",
        json.dumps({"model": MODEL, "messages": [ASKED], **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def refused(answer, param: str, said: str) -> dict:
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["param"] == param and said in error["message"], error
    assert not Message.objects.exists()
    return error


def test_a_request_with_tools_and_a_history_of_calls_is_stored_in_the_text_form_the_model_reads(token):
    answer = post(
        token,
        stream=True,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        messages=[
            {"role": "developer", "content": "Be brief."},
            ASKED,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 4}'},
        ],
    )
    assert answer.status_code == 200, answer.content
    answer.close()
    conversation = Conversation.objects.get(kind=Conversation.Kind.API)
    assert conversation.parameters["tools"] == {
        "tools": [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["function"]["parameters"],
            }
        ],
        "choice": "required",
        "function": "",
        "parallel": False,
    }
    assert conversation.system_prompt == "Be brief."
    assert conversation.title.startswith("Weather in Oslo?")  # the question, not the tool's result
    stored = list(conversation.messages.order_by("pk").values_list("role", "content"))
    assert stored[:3] == [
        ("user", "Weather in Oslo?"),
        ("assistant", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'),
        ("user", '<tool_response>\n{"temperature": 4}\n</tool_response>'),
    ]
    assert stored[3][0] == "assistant"  # the reply, queued


def test_several_results_of_one_turn_are_one_user_turn(token):
    second = {**CALL, "id": "call_def", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    answer = post(
        token,
        stream=True,
        tools=[WEATHER],
        messages=[
            ASKED,
            {"role": "assistant", "content": "Checking both.", "tool_calls": [CALL, second]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "4"},
            {"role": "tool", "tool_call_id": "call_def", "content": [{"type": "text", "text": "19"}]},
        ],
    )
    assert answer.status_code == 200, answer.content
    answer.close()
    stored = list(Message.objects.order_by("pk").values_list("content", flat=True))
    assert stored[1] == (
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    assert stored[2] == "<tool_response>\n4\n</tool_response>\n<tool_response>\n19\n</tool_response>"


def test_a_thousand_tools_are_refused_naming_the_bound(token):
    tools = [{"type": "function", "function": {"name": f"tool_{n}"}} for n in range(1000)]
    refused(post(token, tools=tools), "tools", "`tools` holds 1,000 tools; at most 128 a request.")


def test_a_megabyte_of_tools_is_refused_naming_the_bound(token):
    tools = [
        {"type": "function", "function": {"name": f"tool_{n}", "description": "lorem ipsum " * 700}} for n in range(120)
    ]
    refused(post(token, tools=tools), "tools", "KB of JSON; at most 256 KB")


def test_tools_that_fit_the_bounds_but_not_the_context_are_a_context_overflow(token):
    tools = [
        {"type": "function", "function": {"name": f"tool_{n}", "description": f"{n} lorem ipsum " * 100}}
        for n in range(120)
    ]
    error = refused(post(token, tools=tools, max_tokens=1), "messages", "maximum context length is 32768 tokens")
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "parameters, said",
    [
        (
            {"type": "object", "properties": {"city": {"type": "strng"}}},
            "`tools[1].function.parameters`: not a valid JSON Schema",
        ),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 2}}, "required": ["n"]},
            "`tools[1].function.parameters`:",
        ),
        ({"type": "object", "properties": {"tags": {"enum": list(range(10_000))}}}, "at most 1,000"),
        ({"type": "array"}, "tools[1].function.parameters: a JSON Schema of the arguments, which are an object"),
    ],
)
def test_a_tool_schema_that_cannot_be_enforced_is_refused_naming_the_tool(token, parameters, said):
    tools = [WEATHER, {"type": "function", "function": {"name": "pick", "parameters": parameters}}]
    refused(post(token, tools=tools, tool_choice="required"), "tools", said)


@pytest.mark.parametrize(
    "tool_choice, said",
    [
        ({"type": "function", "function": {"name": "get_time"}}, "`get_time`, which is not one of the tools"),
        ({"type": "function", "function": {}}, "`tool_choice` must be"),
        ({"type": "function"}, "`tool_choice` must be"),
        ("sometimes", "`tool_choice` must be"),
    ],
)
def test_a_tool_choice_naming_no_tool_is_refused(token, tool_choice, said):
    refused(post(token, tools=[WEATHER], tool_choice=tool_choice), "tool_choice", said)


def test_a_tool_result_answering_no_earlier_call_is_refused_naming_the_message(token):
    messages = [
        ASKED,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "4"},
    ]
    refused(post(token, tools=[WEATHER], messages=messages), "messages", "messages[2]: its `tool_call_id` 'call_zzz'")
    refused(
        post(token, messages=[{"role": "tool", "tool_call_id": "call_abc", "content": "4"}]),
        "messages",
        "messages[0]: its `tool_call_id`",
    )


def test_a_history_call_whose_arguments_are_no_json_object_is_refused(token):
    broken = {**CALL, "function": {"name": "get_weather", "arguments": "{city: Oslo"}}
    messages = [ASKED, {"role": "assistant", "content": None, "tool_calls": [broken]}, ASKED]
    refused(post(token, messages=messages), "messages", "messages[1].tool_calls[0].function.arguments")


@pytest.mark.parametrize(
    "body, param, said",
    [
        ({"functions": [WEATHER["function"]]}, "functions", "deprecated form: send `tools`"),
        ({"function_call": {"name": "get_weather"}}, "function_call", "deprecated form: send `tool_choice`"),
        (
            {"messages": [ASKED, {"role": "function", "name": "get_weather", "content": "4"}]},
            "messages",
            "the `function` role is OpenAI's deprecated form",
        ),
    ],
)
def test_the_deprecated_functions_form_is_refused_saying_what_to_send(token, body, param, said):
    error = refused(post(token, **body), param, said)
    assert error["code"] == "unsupported_parameter"
