"""Tool calls checked from outside, as a client that knows only the README would: a studio serving the
bundled SmolLM2-135M (as `make run` does, in a data folder of its own), the official `openai` client,
a weather tool and `tool_choice="required"` at temperature 1: 20 calls plain and 20 streamed, each
parsing and validating against the tool's schema; then the tool's result and a final answer.

    .venv/bin/python -m benchmarks.tool_client_check

About 10 minutes on 2 CPU cores (SmolLM2 at temperature 1 writes several calls a reply)."""

import json
import tempfile
import time
from pathlib import Path

import jsonschema
import openai

from benchmarks.processes import running_studio, shell_token, studio_env

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ASKED = [{"role": "user", "content": "What is the weather like in Paris today?"}]

data_dir = Path(tempfile.mkdtemp())
env = studio_env(STUDIO_DATA_DIR=data_dir, LLM_EMBEDDED_WORKER="true")
with running_studio(env, data_dir / "logs") as server:
    token = shell_token(
        "from django.contrib.auth.models import User\nfrom accounts.services import api_token_create\n"
        'print("TOKEN", api_token_create(user=User.objects.get(username="admin"), name="sdk")[1])',
        env,
    )
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    print("model", model)
    valid = {"plain": 0, "stream": 0}
    started = time.monotonic()
    for n in range(20):
        answer = client.chat.completions.create(
            model=model, messages=ASKED, tools=[WEATHER], tool_choice="required", temperature=1.0
        )
        calls = answer.choices[0].message.tool_calls or []
        ok = answer.choices[0].finish_reason == "tool_calls" and calls
        for call in calls:
            args = json.loads(call.function.arguments)
            jsonschema.validate(args, WEATHER["function"]["parameters"])
            ok = ok and call.function.name == "get_weather"
        valid["plain"] += bool(ok)
        if n < 3:
            print("plain", [(c.function.name, c.function.arguments) for c in calls])
    for _ in range(20):
        stream = client.chat.completions.create(
            model=model, messages=ASKED, tools=[WEATHER], tool_choice="required", temperature=1.0, stream=True
        )
        calls, finish = {}, None
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for piece in delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"name": "", "arguments": ""})
                if piece.function and piece.function.name:
                    call["name"] = piece.function.name
                if piece.function and piece.function.arguments:
                    call["arguments"] += piece.function.arguments
            finish = chunk.choices[0].finish_reason or finish
        ok = finish == "tool_calls" and calls
        for call in calls.values():
            jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])
            ok = ok and call["name"] == "get_weather"
        valid["stream"] += bool(ok)
    print(
        "valid calls: plain %d/20, streamed %d/20 in %.0f s"
        % (valid["plain"], valid["stream"], time.monotonic() - started)
    )
    first = client.chat.completions.create(model=model, messages=ASKED, tools=[WEATHER], tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    result = {
        "role": "tool",
        "tool_call_id": call.id,
        "content": '{"temperature": 18, "unit": "celsius", "sky": "sunny"}',
    }
    final = client.chat.completions.create(
        model=model, messages=[*ASKED, first.choices[0].message, result], tools=[WEATHER]
    )
    print(
        "final:",
        final.choices[0].finish_reason,
        repr(final.choices[0].message.content)[:300],
        final.choices[0].message.tool_calls,
    )
