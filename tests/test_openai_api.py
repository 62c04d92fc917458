"""The OpenAI-compatible API through a real daphne, with the official `openai` client, while the
web chat runs at the same time: streaming and not, usage, models, prompts as models, errors."""

import asyncio
import json
import re

import openai
import pytest

from benchmarks.processes import frames_until, manage, open_chat_socket, running_studio, shell_token, studio_env
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # starts a studio

ADMIN_PASSWORD = "admin-password-1"
SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="Order JSON", slug="order-json", version={
    "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": 6,
    "examples": [{"input": "Order: 2 figs", "output": "{\\"item\\": \\"fig\\", \\"quantity\\": 2}"}]})
prompt_create(owner=admin, name="Fruit pick", slug="fruit-pick", version={
    "instructions": "Name the fruit.", "template": "{{ text }}", "max_new_tokens": 8,
    "output_format": {"type": "choice", "choices": ["pear", "apple", "fig"]}})
print("TOKEN", api_token_create(user=admin, name="sdk")[1])
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("openai-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=32,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.token = shell_token(SETUP, env)
        server.env = env
        yield server


@pytest.fixture
def client(studio):
    return openai.OpenAI(base_url=studio.base_url + "/v1", api_key=studio.token, max_retries=0, timeout=60)


def test_a_completion_without_streaming(client):
    answer = client.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        max_tokens=8,
        temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert answer.object == "chat.completion" and answer.model == TINY_MODEL_DIR.name
    assert isinstance(answer.choices[0].message.content, str) and answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8


def test_a_streamed_completion_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=TINY_MODEL_DIR.name,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            seed=3,
            temperature=1.0,
            messages=[{"role": "user", "content": "Tell me a story"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"] and chunks[-1].usage.completion_tokens == 12 and len(chunks) > 3
    assert isinstance(text, str)


def test_models_list_the_base_model_and_the_prompts(client):
    ids = [model.id for model in client.models.list()]
    assert ids[0] == TINY_MODEL_DIR.name and "prompt:order-json" in ids
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.body["code"] == "model_not_found"


def test_a_prompt_is_a_model_with_its_instructions_examples_and_parameters(client, studio):
    answer = client.chat.completions.create(
        model="prompt:order-json@v1", messages=[{"role": "user", "content": "three pears"}]
    )
    assert answer.usage.completion_tokens == 6  # the version's max_new_tokens
    stored = json.loads(
        manage(
            [
                "shell",
                "-c",
                (
                    "import json; from chat.models import Conversation; c = Conversation.objects.filter(kind='api').order_by('id').last(); "
                    "print(json.dumps([c.prompt_version.prompt.slug, c.prompt_variables, c.system_prompt, "
                    "[m.content for m in c.messages.all()], c.title]))"
                ),
            ],
            studio.env,
        )
        .strip()
        .splitlines()[-1]
    )
    assert stored[:3] == ["order-json", {"order": "three pears"}, "Reply with JSON only."]
    assert stored[3][0] == "Order: three pears"
    # Titled by what was asked and when, not "API: prompt:order-json" for every request.
    assert re.fullmatch(r"three pears · \d{1,2} [A-Z][a-z]{2} \d\d:\d\d", stored[4]), stored[4]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="prompt:order-json",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"variables": {"wrong": "x"}},
        )


@pytest.mark.parametrize(
    "call, error",
    [
        (dict(model="nope", messages=[{"role": "user", "content": "hi"}]), openai.NotFoundError),
        (dict(model=TINY_MODEL_DIR.name, messages=[]), openai.BadRequestError),
        (
            dict(model=TINY_MODEL_DIR.name, messages=[{"role": "user", "content": "hi"}], temperature=7),
            openai.BadRequestError,
        ),
        (dict(model=TINY_MODEL_DIR.name, messages=[{"role": "assistant", "content": "hi"}]), openai.BadRequestError),
    ],
)
def test_errors_come_in_openais_shape(client, call, error):
    with pytest.raises(error) as refused:
        client.chat.completions.create(**call)
    assert set(refused.value.body) >= {"message", "type"}


def test_a_bad_token_is_refused(studio):
    bad = openai.OpenAI(base_url=studio.base_url + "/v1", api_key="cps_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


async def test_the_api_and_the_web_chat_answer_at_the_same_time(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    chat_socket = await open_chat_socket(studio, session, conversation_id)
    client = openai.AsyncOpenAI(base_url=studio.base_url + "/v1", api_key=studio.token, max_retries=0)
    await chat_socket.send('{"type": "send", "content": "from the page"}')
    api_answer, frames = await asyncio.gather(
        client.chat.completions.create(
            model=TINY_MODEL_DIR.name, messages=[{"role": "user", "content": "from the API"}]
        ),
        frames_until(chat_socket, "done"),
    )
    assert frames[-1]["status"] == "complete" and api_answer.usage.completion_tokens == 32
    await chat_socket.close()
    # The API request is stored as the token owner's conversation, and its reply can be flagged.
    conversations = (
        manage(
            [
                "shell",
                "-c",
                "from chat.models import Conversation, Message; "
                "m = Message.objects.filter(conversation__kind='api', role='assistant').last(); "
                "print(m.conversation_id, m.pk)",
            ],
            studio.env,
        )
        .strip()
        .splitlines()[-1]
        .split()
    )
    assert session.get(f"/chat/{conversations[0]}/")[0] == 200
    assert session.get(f"/cases/flag/{conversations[1]}/")[0] == 200


def test_structured_output_with_the_official_clients_pydantic_helper(client):
    """`response_format` json_schema (what `parse(response_format=Model)` sends) is enforced while
    decoding: the tiny model's answer always parses into the model, streamed or not; a
    `prompt:<slug>` model answers in its version's format."""
    from typing import Literal

    import pydantic

    class Order(pydantic.BaseModel):
        item: Literal["pear", "apple", "fig"]
        express: bool
        size: Literal["small", "large"]

    completion = client.chat.completions.parse(
        model=TINY_MODEL_DIR.name,
        response_format=Order,
        max_tokens=80,
        messages=[{"role": "user", "content": "Two pears, fast."}],
    )
    order = completion.choices[0].message.parsed
    assert isinstance(order, Order) and completion.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        stream=True,
        max_tokens=80,
        temperature=1.0,
        seed=5,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "order", "schema": Order.model_json_schema(), "strict": True},
        },
        messages=[{"role": "user", "content": "One fig."}],
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    Order.model_validate_json(text)
    picked = client.chat.completions.create(
        model="prompt:fruit-pick",
        temperature=1.0,
        seed=11,
        messages=[{"role": "user", "content": "A green one, please."}],
    )
    assert picked.choices[0].message.content in ("pear", "apple", "fig")  # the version's format applies
    answer = client.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        response_format={"type": "json_object"},
        max_tokens=200,
        messages=[{"role": "user", "content": "JSON please"}],
    )
    if answer.choices[0].finish_reason == "stop":  # not cut by max_tokens: then it is whole JSON
        assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_a_structured_answer_cut_by_max_tokens_ends_length_never_stop(client):
    schema = {
        "type": "object",
        "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}},
        "required": ["item", "quantity"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=TINY_MODEL_DIR.name,
        max_tokens=2,
        temperature=0,
        messages=[{"role": "user", "content": "two figs"}],
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": schema}},
    )
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 2
    with pytest.raises(ValueError):
        json.loads(answer.choices[0].message.content)  # incomplete, and said so


def test_a_schema_that_would_cost_a_worker_too_much_is_refused_with_its_code(client):
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a{1000}){1000}$"}},
        "required": ["s"],
    }
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=TINY_MODEL_DIR.name,
            max_tokens=2,
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    assert refused.value.body["code"] == "output_format_too_complex"
    assert refused.value.body["param"] == "response_format"
