"""A fine-tune trains on tool cases in the base model's own tool format, token for token what
serving renders for the case's input with the version's tools (render_prompt_ids): the Hermes
form where the chat template has no tools (the tiny model's, SmolLM2-135M's), the template's own
where it reads `tools`; trl's trainer tokenizes the rows so, whatever mix of tools they hold."""

import json
import shutil
from types import SimpleNamespace

import pytest
from django.utils import timezone

from evals import services as case_services
from evals.models import FailureCase
from finetune.training_data import case_prompt, prompt_text, rendered_text, row_tools, training_data
from prompts import selectors as prompt_selectors
from prompts import services as prompt_services
from prompts.models import Prompt, PromptVersion
from studio.llm.replies import render_prompt_ids
from studio.llm.tools import call_text, clean_tool_use, responses_text, template_takes_tools
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.django_db

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}
# A chat template with a tool format of its own (as Qwen's, shorter): the tools in the system turn,
# a call as `<call>name {arguments}</call>`, a result as a `tool` turn.
TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}# Tools
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content }}{% for call in message.tool_calls %}<call>{{ call.function.name }} {{ call.function.arguments | tojson }}</call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture
def tool_version(alice):
    """A version declaring two tools of different parameters (set on the row: the version form's
    tools field is another change's), and cases under it: a call, a call after an earlier call's
    result, and a plain answer."""
    fields = prompt_services.clean_version_fields(
        {"instructions": "Use the tools.", "template": "{{ ask }}"}, user=alice
    )
    prompt = Prompt.objects.create(owner=alice, name="Weather", slug="weather")
    version = PromptVersion.objects.create(
        prompt=prompt,
        number=1,
        author=alice,
        created_at=timezone.now(),
        tools=clean_tool_use([WEATHER, SEARCH], "auto"),
        **{name: value for name, value in fields.items() if name != "tools"},
    )
    case_services.cases_create(
        user=alice,
        source="api",
        rows=[
            {
                "prompt": "weather",
                "input": {"ask": "Weather in Paris?"},
                "expected": call_text("get_weather", {"city": "Paris"}),
            },
            {
                "prompt": "weather",
                "input": {"ask": "Any news about it?"},
                "context": [
                    {"role": "user", "content": "Weather in Lyon?"},
                    {"role": "assistant", "content": call_text("get_weather", {"city": "Lyon"})},
                    {"role": "user", "content": responses_text(['{"sky": "rain"}'])},
                    {"role": "assistant", "content": "Rain in Lyon."},
                ],
                "actual": "No idea.",
                "expected": "Looking.\n" + call_text("search", {"query": "Lyon rain", "limit": 3}),
            },
            {"prompt": "weather", "input": {"ask": "Thanks!"}, "actual": "?", "expected": "You are welcome."},
        ],
        shared=True,
    )
    return version


@pytest.fixture
def tools_model(tmp_path, settings):
    """The tiny model with a chat template that reads `tools`, as the served base model."""
    folder = tmp_path / "tiny-with-tools"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_MODEL_DIR / name, folder / name)
    (folder / "model.safetensors").symlink_to(TINY_MODEL_DIR / "model.safetensors")
    (folder / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    settings.LLM_MODEL = str(folder)
    return folder


def ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def served_and_trained(tokenizer, row, case, version, user):
    """(the prompt ids serving renders for the case's input, the row's prompt ids, its whole ids)."""
    served, _ = case_prompt(case, version=version, user=user)
    served_ids = render_prompt_ids(SimpleNamespace(tokenizer=tokenizer), served, tool_use=version.tool_use)
    tools = row_tools(row)
    prompt_ids = ids(
        tokenizer.apply_chat_template(row["prompt"], tools=tools, add_generation_prompt=True, tokenize=True)
    )
    whole_ids = ids(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tools=tools, tokenize=True))
    return served_ids, prompt_ids, whole_ids


def cases_in_order():
    return list(FailureCase.objects.order_by("pk"))


def test_without_a_tool_format_rows_list_the_tools_in_the_system_turn_and_complete_with_the_hermes_text(
    alice, tool_version
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    assert not template_takes_tools(tokenizer.chat_template)
    cases = cases_in_order()
    rows = training_data(cases, "sft", user=alice, version=tool_version).rows
    assert all("tools" not in row for row in rows)
    counter = prompt_selectors.prompt_counter()
    for row, case in zip(rows, cases, strict=True):
        assert row["prompt"][0]["role"] == "system" and "<tools>" in row["prompt"][0]["content"]
        assert '"name": "search"' in row["prompt"][0]["content"]
        assert row["completion"] == [{"role": "assistant", "content": case.expected}]  # the calls as stored
        served_ids, prompt_ids, whole_ids = served_and_trained(tokenizer, row, case, tool_version, alice)
        assert prompt_ids == served_ids and whole_ids[: len(served_ids)] == served_ids
        assert tokenizer.decode(whole_ids[len(served_ids) :]).startswith(case.expected)
        # The plan's figures render the same.
        assert counter.count_text(prompt_text(row, counter)) == len(served_ids)
        assert counter.count_text(rendered_text(row, counter)) == len(whole_ids)
    # Earlier calls and results stay in the Hermes text, as serving shows them.
    assert "<tool_response>" in rows[1]["prompt"][-3]["content"]


def test_with_a_tool_format_rows_carry_the_tools_and_complete_with_the_structured_calls(
    alice, tool_version, tools_model, tmp_path
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tools_model)
    assert template_takes_tools(tokenizer.chat_template)
    cases = cases_in_order()
    rows = training_data(cases, "sft", user=alice, version=tool_version).rows
    counter = prompt_selectors.prompt_counter()
    assert counter.takes_tools
    for row, case in zip(rows, cases, strict=True):
        assert json.loads(row["tools"]) == [WEATHER, SEARCH]
        assert "<tools>" not in json.dumps(row["prompt"])  # the template shows them its own way
        served_ids, prompt_ids, whole_ids = served_and_trained(tokenizer, row, case, tool_version, alice)
        assert prompt_ids == served_ids and whole_ids[: len(served_ids)] == served_ids
        assert counter.count_text(prompt_text(row, counter)) == len(served_ids)
        assert counter.count_text(rendered_text(row, counter)) == len(whole_ids)
    paris, lyon, thanks = rows
    (answer,) = paris["completion"]
    assert answer["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert [m["role"] for m in lyon["prompt"]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert lyon["completion"][0]["content"] == "Looking."
    assert thanks["completion"] == [{"role": "assistant", "content": "You are welcome."}]

    dpo = training_data(cases, "dpo", user=alice, version=tool_version).rows
    assert [json.loads(row["tools"]) for row in dpo] == [[WEATHER, SEARCH]] * 2  # the Paris case has no actual
    assert dpo[0]["chosen"][0]["tool_calls"][0]["function"]["name"] == "search"
    assert dpo[0]["rejected"] == [{"role": "assistant", "content": "No idea."}]

    # trl's trainer tokenizes each row as the template renders it with its own tools: the prompt
    # is what serving sends, the call what the template writes, and plain rows beside them.
    from studio.llm.training import TrainingConfig, build_trainer

    config = TrainingConfig(base_model_folder=str(tools_model), eval_share=0, max_length=1024, epochs=1)
    trainer, _, _ = build_trainer(config, rows, tmp_path / "run")
    for row, case, example in zip(rows, cases, trainer.train_dataset, strict=True):
        served_ids, _, whole_ids = served_and_trained(tokenizer, row, case, tool_version, alice)
        assert list(example["input_ids"]) == whole_ids
        trained = [token for token, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
        assert list(example["input_ids"][: len(served_ids)]) == served_ids and trained == whole_ids[len(served_ids) :]
    first = trainer.train_dataset[0]
    trained = [token for token, label in zip(first["input_ids"], first["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained).startswith('<call>get_weather {"city": "Paris"}</call>')


def test_rows_of_different_tools_and_none_read_back_as_written():
    from studio.llm.training import rows_dataset

    rows = [
        {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hello"}]},
        {
            "prompt": [{"role": "user", "content": "w"}],
            "completion": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "a", "arguments": {"city": "P"}}}],
                }
            ],
            "tools": json.dumps([WEATHER]),
        },
        {
            "prompt": [{"role": "user", "content": "s"}],
            "completion": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "b", "arguments": {"limit": 3}}}],
                }
            ],
            "tools": json.dumps([SEARCH]),
        },
    ]
    assert [dict(row) for row in rows_dataset(rows)] == [{"tools": None, **row} for row in rows]
