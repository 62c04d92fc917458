"""Tool calls through a real daphne with the official `openai` client, as agent frameworks make them:
required calls that always parse and validate, streaming deltas that assemble into the calls the
plain answer gives, the two-turn loop (call, the tool's result, a final text), parallel calls."""

import json

import jsonschema
import openai
import pytest

from benchmarks.processes import running_studio, shell_token, studio_env
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # starts a studio

MODEL = TINY_MODEL_DIR.name
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_PARAMETERS},
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 12}},
            "required": ["zone"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
ASKED = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tools-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir, LLM_MODEL=TINY_MODEL_DIR, LLM_EMBEDDED_WORKER="true", LLM_MAX_NEW_TOKENS=96
    )
    with running_studio(env, data_dir / "logs") as server:
        server.token = shell_token(
            "from django.contrib.auth.models import User\nfrom accounts.services import api_token_create\n"
            'print("TOKEN", api_token_create(user=User.objects.get(username="admin"), name="sdk")[1])',
            env,
        )
        yield server


@pytest.fixture
def client(studio):
    return openai.OpenAI(base_url=studio.base_url + "/v1", api_key=studio.token, max_retries=0, timeout=120)


def checked(tool_calls) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, its arguments validated against its tool's schema."""
    calls = []
    for call in tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        calls.append((call.function.name, arguments))
    return calls


def test_required_calls_at_temperature_one_always_parse_and_validate(client):
    for seed in range(20):
        answer = client.chat.completions.create(
            model=MODEL,
            messages=ASKED,
            tools=[WEATHER, TIME],
            tool_choice="required",
            parallel_tool_calls=False,  # one call each (a random model may chain parallel ones to its length)
            temperature=1.0,
            seed=seed,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert len(checked(choice.message.tool_calls)) == 1


def test_streamed_deltas_assemble_into_the_calls_of_the_plain_answer(client):
    asked = dict(
        model=MODEL,
        messages=ASKED,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=1.0,
        seed=11,
        max_tokens=400,
    )
    plain = client.chat.completions.create(**asked).choices[0]
    calls: dict[int, dict] = {}
    finishes, pieces = [], 0
    for chunk in client.chat.completions.create(**asked, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                assert entry["id"] is None  # the id and the name come first, once
                entry["id"], entry["name"] = call.id, call.function.name
            entry["arguments"] += call.function.arguments or ""
            pieces += 1
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
    assert finishes == ["tool_calls"]
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls
    ]
    assert pieces > len(calls)  # the arguments came in pieces, as they were written
    # The official client's stream helper assembles them the same way.
    with client.chat.completions.stream(**asked) as stream:
        final = stream.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls
    ]


def test_the_official_clients_tool_loop_call_result_final_text(client):
    first = client.chat.completions.create(
        model=MODEL,
        messages=ASKED,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=1.0,
        seed=5,
    )
    message = first.choices[0].message
    [(name, arguments)] = checked(message.tool_calls)
    assert name == "get_weather"
    result = json.dumps({"city": arguments["city"], "temperature": 18, "unit": arguments["unit"]})
    second = client.chat.completions.create(
        model=MODEL,
        messages=[*ASKED, message, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": result}],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=12,
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert isinstance(second.choices[0].message.content, str) and second.choices[0].message.tool_calls is None
    # Streaming, the same loop ends in text too.
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[*ASKED, message, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": result}],
            tools=[WEATHER],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
        ["tool_calls"],
    )


def test_auto_answers_with_text_or_a_valid_call(client):
    for seed in range(4):
        choice = client.chat.completions.create(
            model=MODEL, messages=ASKED, tools=[WEATHER], temperature=1.0, seed=seed, max_tokens=24
        ).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason in ("tool_calls", "length") and checked(choice.message.tool_calls)
        else:
            assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")


def test_parallel_calls_come_several_in_one_answer_only_when_allowed(client):
    counts = {True: [], False: []}
    for parallel in (True, False):
        for seed in range(8):
            choice = client.chat.completions.create(
                model=MODEL,
                messages=ASKED,
                tools=[WEATHER, TIME],
                tool_choice="required",
                parallel_tool_calls=parallel,
                temperature=1.0,
                seed=seed,
                max_tokens=160,
            ).choices[0]
            if choice.finish_reason == "tool_calls":
                counts[parallel].append(len(checked(choice.message.tool_calls)))
    assert counts[False] and set(counts[False]) == {1}
    assert counts[True] and max(counts[True]) >= 2, counts
