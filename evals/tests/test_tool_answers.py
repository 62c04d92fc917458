"""Tool calls as a case's answers: JSON in every accepted shape becomes the Hermes text a reply that
called the tool has; shapes that look like calls but cannot be one are refused naming the field."""

import json

import pytest

from evals.tool_answers import MAX_CALLS, AnswerError, answer_calls, answer_cards, answer_text
from studio.llm.tools import assistant_text, call_text

WEATHER = call_text("get_weather", {"city": "Paris"})


@pytest.mark.parametrize(
    "given",
    [
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',  # a CSV cell holding the JSON
    ],
)
def test_each_shape_of_one_call_is_stored_as_the_text_a_reply_has(given):
    assert answer_text(given, "expected") == WEATHER


def test_several_calls_and_the_content_before_them_are_kept_in_order():
    given = {
        "role": "assistant",
        "content": "Looking both up.",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }
    text = answer_text(given, "expected")
    assert text == assistant_text("Looking both up.", [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")])
    assert answer_calls(text) == ("Looking both up.", [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")])


@pytest.mark.parametrize(
    "given",
    ["The weather is fine.", '{"item": "apple", "quantity": 2}', "[1, 2]", "{not json", '{"name": "Bob"}'],
)
def test_anything_that_is_no_call_stays_as_it_was(given):
    assert answer_text(given, "expected") == given
    assert answer_calls(given) == (given, [])


@pytest.mark.parametrize(
    "given, field, said",
    [
        ({"name": "get_weather", "arguments": [1]}, "expected.arguments", "must be a JSON object"),
        ({"name": "get_weather", "arguments": "{oops"}, "expected.arguments", "is not valid JSON"),
        ({"name": "get weather!", "arguments": {}}, "expected.name", "1 to 64 letters"),
        ({"tool_calls": "get_weather"}, "expected.tool_calls", "must be a list"),
        ({"tool_calls": []}, "expected", "`tool_calls` is empty"),
        (
            {
                "tool_calls": [
                    {"name": "a", "arguments": {}},
                    {"type": "function", "function": {"name": "b", "arguments": "3"}},
                ]
            },
            "expected.tool_calls[1].function.arguments",
            "must be a JSON object",
        ),
        (
            [{"name": "a", "arguments": {}}, {"name": "b", "arguments": 7}],
            "expected[1].arguments",
            "must be a JSON object",
        ),
    ],
)
def test_a_call_that_cannot_be_one_is_refused_naming_the_field(given, field, said):
    with pytest.raises(AnswerError) as refused:
        answer_text(given, "expected")
    assert refused.value.field == field and said in refused.value.message


def test_more_calls_than_the_bound_are_refused():
    calls = [{"name": "ping", "arguments": {}}] * (MAX_CALLS + 1)
    with pytest.raises(AnswerError, match=f"at most {MAX_CALLS}"):
        answer_text(json.dumps({"tool_calls": calls}), "expected")
    assert answer_text({"tool_calls": calls[:MAX_CALLS]}, "expected").count("<tool_call>") == MAX_CALLS


def test_a_page_shows_a_call_as_its_name_and_pretty_arguments():
    assert answer_cards("Sure.\n" + WEATHER) == {
        "content": "Sure.",
        "calls": [{"name": "get_weather", "arguments": '{\n  "city": "Paris"\n}'}],
    }
