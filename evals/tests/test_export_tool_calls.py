"""An SFT export of tool cases is in OpenAI's structured form (assistant `tool_calls`, `role: "tool"`
results, a `tools` column) and loads with `datasets` beside text cases and other tools' cases; DPO
and CSV keep the stored text form."""

import json

import pytest
from django.utils import timezone

from evals import services
from prompts import services as prompt_services
from prompts.models import Prompt, PromptVersion
from studio.llm.tools import assistant_text, call_text, clean_tool_use, openai_tools, responses_text

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
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer"},
                "filters": {"type": "object", "properties": {"lang": {"type": "string", "enum": ["en", "fr"]}}},
            },
            "required": ["query"],
        },
    },
}


def tool_prompt(owner, slug, tools, tool_choice="auto"):
    """A prompt whose version 1 declares `tools` (set on the row: the version form's tools field is
    another change's)."""
    fields = prompt_services.clean_version_fields(
        {"instructions": "Use the tools.", "template": "{{ ask }}"}, user=owner
    )
    prompt = Prompt.objects.create(owner=owner, name=slug.title(), slug=slug)
    return PromptVersion.objects.create(
        prompt=prompt,
        number=1,
        author=owner,
        created_at=timezone.now(),
        tools=clean_tool_use(tools, tool_choice),
        **{name: value for name, value in fields.items() if name != "tools"},
    )


@pytest.fixture
def mixed_cases(alice, make_cases):
    """A text case (order-json), a weather case that only calls, a search case with text before its
    call and an earlier call and its result in its context."""
    make_cases(1)
    weather = tool_prompt(alice, "weather", [WEATHER], "required")
    search = tool_prompt(alice, "searcher", [SEARCH, WEATHER])
    earlier_call = call_text("get_weather", {"city": "Lyon"})
    services.cases_create(
        user=alice,
        source="api",
        rows=[
            {
                "prompt": "weather",
                "input": {"ask": "Weather in Paris?"},
                "expected": call_text("get_weather", {"city": "Paris"}),
            },
            {
                "prompt": "searcher",
                "input": {"ask": "And French news about it?"},
                "context": [
                    {"role": "user", "content": "Weather in Lyon?"},
                    {"role": "assistant", "content": earlier_call},
                    {"role": "user", "content": responses_text(['{"sky": "rain"}'])},
                    {"role": "assistant", "content": "Rain in Lyon."},
                ],
                "actual": "No news.",
                "expected": assistant_text(
                    "Searching.",
                    [("search", json.dumps({"query": "Lyon rain", "limit": 3, "filters": {"lang": "fr"}}))],
                ),
            },
        ],
        shared=True,
    )
    return weather, search


def export(client, export_format):
    response = client.get(f"/cases/export/?format={export_format}")
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_an_sft_export_with_tool_calls_loads_in_datasets_with_text_cases_and_other_tools(
    client, alice, mixed_cases, tmp_path
):
    import datasets

    weather, search = mixed_cases
    client.force_login(alice)
    path = tmp_path / "cases.sft.jsonl"
    path.write_text(export(client, "sft"))
    written = [json.loads(line) for line in path.read_text().splitlines()]

    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(loaded) == 3
    # Read back exactly as written: no argument or key of one row leaks into another's (Arrow's
    # merged structs would add nulls), and a text case has no tools.
    assert [dict(row) for row in loaded] == [{"tools": None, **line} for line in written]

    by_user = {row["messages"][-2]["content"] if row["messages"][-2]["role"] == "user" else "": row for row in loaded}
    text_case = by_user["Order: 2 apples"]
    assert text_case["tools"] is None
    assert text_case["messages"][-1] == {"role": "assistant", "content": '{"item": "apple", "quantity": 2}'}

    weather_case = by_user["Weather in Paris?"]
    assert weather_case["tools"] == openai_tools(weather.tool_use) == [WEATHER]
    (answer,) = weather_case["messages"][-1:]
    assert answer["role"] == "assistant" and answer["content"] == ""
    (call,) = answer["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}  # JSON text, as OpenAI writes it

    search_case = by_user["And French news about it?"]
    assert search_case["tools"] == [SEARCH, WEATHER]
    roles = [m["role"] for m in search_case["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    earlier, result = search_case["messages"][2], search_case["messages"][3]
    assert json.loads(earlier["tool_calls"][0]["function"]["arguments"]) == {"city": "Lyon"}
    assert result["content"] == '{"sky": "rain"}' and result["tool_call_id"] == earlier["tool_calls"][0]["id"]
    final = search_case["messages"][-1]
    assert final["content"] == "Searching."
    assert json.loads(final["tool_calls"][0]["function"]["arguments"]) == {
        "query": "Lyon rain",
        "limit": 3,
        "filters": {"lang": "fr"},
    }


def test_dpo_and_csv_exports_keep_the_calls_in_their_stored_text_form(client, alice, mixed_cases, tmp_path):
    import datasets

    client.force_login(alice)
    dpo_path = tmp_path / "cases.dpo.jsonl"
    dpo_path.write_text(export(client, "dpo"))
    dpo = datasets.load_dataset("json", data_files=str(dpo_path), split="train")
    (search_pair,) = [row for row in dpo if row["rejected"] == "No news."]
    assert search_pair["chosen"].startswith("Searching.\n<tool_call>\n") and "tool_calls" not in dpo.column_names
    csv_text = export(client, "csv")
    assert "<tool_call>" in csv_text and "tool_calls" not in csv_text


def test_a_case_whose_expected_answer_calls_a_tool_is_structured_even_without_declared_tools(client, alice, make_cases):
    make_cases(1, expected=call_text("lookup", {"sku": "A-1"}))
    client.force_login(alice)
    (line,) = [json.loads(text) for text in export(client, "sft").splitlines()]
    assert "tools" not in line
    assert line["messages"][-1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"sku": "A-1"}'}
