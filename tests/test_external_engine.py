"""LLM_ENGINE=openai: a studio whose worker streams from another studio's /v1 (a real second
server, no mock) keeps the chat protocol, stop, usage and storage."""

import json

import openai
import pytest

from benchmarks.processes import frames_until, open_chat_socket, running_studio, shell_token, studio_env
from tests.scaled import TOKEN
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # starts two studios

ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture(scope="module")
def engine_studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("engine-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=400,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.token = shell_token(TOKEN, env)
        yield server


@pytest.fixture(scope="module")
def front_studio(engine_studio, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("front-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_ENGINE="openai",
        LLM_ENGINE_URL=engine_studio.base_url + "/v1",
        LLM_ENGINE_API_KEY=engine_studio.token,
        LLM_EMBEDDED_WORKER="true",
        LLM_MODEL="unused",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=24,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.token = shell_token(TOKEN, env)
        yield server


async def test_a_reply_streams_from_the_external_engine_and_is_stored(front_studio, engine_studio):
    session = front_studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    chat_socket = await open_chat_socket(front_studio, session, conversation_id)
    await chat_socket.send(json.dumps({"type": "send", "content": "Hello over there"}))
    frames = await frames_until(chat_socket, "done")
    await chat_socket.close()
    done = frames[-1]
    assert done["status"] == "complete" and done["usage"]["completion_tokens"] == 24
    reply = [f for f in frames if f["type"] == "message" and f["message"]["role"] == "assistant"][-1]["message"]
    assert reply["model"] == TINY_MODEL_DIR.name  # the engine's model, announced by the front worker
    streamed = "".join(f["text"] for f in frames if f["type"] == "token")
    direct = openai.OpenAI(base_url=engine_studio.base_url + "/v1", api_key=engine_studio.token, max_retries=0)
    same = direct.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        max_tokens=24,
        temperature=0,
        messages=[{"role": "user", "content": "Hello over there"}],
    )
    assert streamed == same.choices[0].message.content
    assert "external engine" in session.get("/chat/model-status/")[1]


async def test_stop_reaches_the_external_engine(front_studio):
    session = front_studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    chat_socket = await open_chat_socket(front_studio, session, conversation_id)
    await chat_socket.send(json.dumps({"type": "send", "content": "A long one, please"}))
    await frames_until(chat_socket, "token")
    await chat_socket.send('{"type": "stop"}')
    done = (await frames_until(chat_socket, "done"))[-1]
    assert done["status"] in ("stopped", "complete")  # the 24-token reply may already be written
    await chat_socket.close()


async def test_continue_asks_the_engine_to_continue_and_keeps_the_reply_when_it_cannot(front_studio):
    """The front worker asks for the cut reply's continuation (vLLM's `continue_final_message`);
    this engine (another studio) answers only a user's last message, so the reply stays as it was,
    cut and whole, with the reason under it."""
    session = front_studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    chat_socket = await open_chat_socket(front_studio, session, conversation_id)
    await chat_socket.send(json.dumps({"type": "send", "content": "Hello over there"}))
    frames = await frames_until(chat_socket, "done")
    cut = frames[-1]
    assert cut["finish_reason"] == "length"
    await chat_socket.send(json.dumps({"type": "continue", "message_id": cut["message_id"]}))
    done = (await frames_until(chat_socket, "done"))[-1]
    await chat_socket.close()
    assert done["status"] == "complete" and done["finish_reason"] == "length"
    assert "could not be continued" in done["error"] and "last message must be the user" in done["error"]
    assert done["usage"]["completion_tokens"] == 24
    page = session.get(f"/chat/{conversation_id}/messages/{cut['message_id']}/")[1]
    assert "cut at 24 tokens" in page and "could not be continued" in page


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_tools_go_to_the_external_engine_and_its_calls_come_back(front_studio, engine_studio):
    """The front studio passes tools, tool_choice and the history's calls and results on; the engine's
    streamed tool_calls come back as the front's own, streaming and not."""
    asked = [{"role": "user", "content": "Weather in Oslo?"}]
    request = dict(
        model=TINY_MODEL_DIR.name,
        messages=asked,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.0,
        seed=4,
        max_tokens=60,
    )
    front = openai.OpenAI(base_url=front_studio.base_url + "/v1", api_key=front_studio.token, max_retries=0)
    direct = openai.OpenAI(base_url=engine_studio.base_url + "/v1", api_key=engine_studio.token, max_retries=0)
    through = front.chat.completions.create(**request).choices[0]
    same = direct.chat.completions.create(**request).choices[0]
    assert through.finish_reason == "tool_calls"
    called = [(c.function.name, json.loads(c.function.arguments)) for c in through.message.tool_calls]
    assert called == [(c.function.name, json.loads(c.function.arguments)) for c in same.message.tool_calls]
    streamed = {}
    for chunk in front.chat.completions.create(**request, stream=True):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = streamed.setdefault(call.index, {"name": call.function.name, "arguments": ""})
            entry["arguments"] += call.function.arguments or ""
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed.values()] == called
    # The loop's second turn: the call and its result go on to the engine, a text comes back.
    result = {"role": "tool", "tool_call_id": through.message.tool_calls[0].id, "content": "4 degrees"}
    final = front.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        messages=[*asked, through.message, result],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=8,
        temperature=0,
    ).choices[0]
    assert isinstance(final.message.content, str) and final.message.tool_calls is None
