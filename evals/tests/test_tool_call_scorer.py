"""The tool_call scorer: a reply's calls against the expected calls, by name and order, arguments
as JSON (all of them, or the named fields), with the reason a reply scored 0."""

import pytest

from evals.runner import reply_scores
from evals.scorers import NotApplicable, ScorerError, clean_scorers, score, tool_call_score
from studio.llm.tools import assistant_text, call_text

EXPECTED = call_text("get_weather", {"city": "Lyon", "unit": "celsius", "where": {"country": "FR"}})


def tool_call(**params):
    return clean_scorers([{"type": "tool_call", **params}])[0]


def test_the_same_call_with_arguments_in_another_order_and_spacing_scores_1():
    reply = call_text("get_weather", '{"where": {"country":"FR"}, "unit": "celsius", "city": "Lyon"}')
    assert tool_call_score(tool_call(), reply, EXPECTED) == (1.0, "")
    assert score(tool_call(), reply, EXPECTED) == 1.0


def test_a_different_argument_scores_0_naming_it():
    reply = call_text("get_weather", {"city": "Paris", "unit": "celsius", "where": {"country": "FR"}})
    assert tool_call_score(tool_call(), reply, EXPECTED) == (0.0, 'arguments.city: got "Paris", expected "Lyon"')


def test_a_missing_or_extra_argument_scores_0():
    assert tool_call_score(tool_call(), call_text("get_weather", {"city": "Lyon"}), EXPECTED)[1] == (
        'arguments.unit: got missing, expected "celsius"'
    )
    extra = call_text("get_weather", {"city": "Lyon", "unit": "celsius", "where": {"country": "FR"}, "days": 3})
    assert tool_call_score(tool_call(), extra, EXPECTED) == (0.0, "arguments.days: got 3, expected missing")


def test_true_is_not_1_but_1_is_1_point_0():
    assert tool_call_score(tool_call(), call_text("f", {"n": True}), call_text("f", {"n": 1}))[0] == 0.0
    assert tool_call_score(tool_call(), call_text("f", {"n": 1.0}), call_text("f", {"n": 1}))[0] == 1.0


def test_fields_compare_only_those_dotted_paths_included():
    reply = call_text("get_weather", {"city": "Lyon", "unit": "kelvin", "where": {"country": "FR", "zip": "69"}})
    assert tool_call_score(tool_call(fields=["city", "where.country"]), reply, EXPECTED) == (1.0, "")
    assert tool_call_score(tool_call(fields=["city", "unit"]), reply, EXPECTED) == (
        0.0,
        'arguments.unit: got "kelvin", expected "celsius"',
    )
    elsewhere = call_text("get_weather", {"city": "Lyon", "where": {"country": "BE"}})
    assert tool_call_score(tool_call(fields=["where.country"]), elsewhere, EXPECTED)[1] == (
        'arguments.where.country: got "BE", expected "FR"'
    )


def test_a_call_to_another_tool_scores_0_naming_both():
    assert tool_call_score(tool_call(), call_text("get_time", {"city": "Lyon"}), EXPECTED) == (
        0.0,
        "called get_time, expected get_weather",
    )


def test_a_text_reply_where_a_call_was_expected_scores_0():
    assert tool_call_score(tool_call(), "It is sunny in Lyon.", EXPECTED) == (
        0.0,
        "expected a call to get_weather, the reply is text",
    )


def test_a_call_where_text_was_expected_scores_0_and_text_for_text_does_not_apply():
    assert tool_call_score(tool_call(), EXPECTED, "Sunny.") == (0.0, "called get_weather, expected text")
    with pytest.raises(NotApplicable, match="not applicable"):
        tool_call_score(tool_call(), "Sunny.", "Sunny.")


def test_parallel_calls_are_compared_in_order():
    time = call_text("get_time", {"zone": "CET"})
    expected = assistant_text("", [("get_weather", '{"city": "Lyon"}'), ("get_time", '{"zone": "CET"}')])
    same = "\n".join([call_text("get_weather", {"city": "Lyon"}), time])
    assert tool_call_score(tool_call(), same, expected) == (1.0, "")
    swapped = "\n".join([time, call_text("get_weather", {"city": "Lyon"})])
    assert tool_call_score(tool_call(), swapped, expected) == (
        0.0,
        "called get_time, get_weather, expected get_weather, get_time",
    )
    wrong_second = "\n".join([call_text("get_weather", {"city": "Lyon"}), call_text("get_time", {"zone": "UTC"})])
    assert tool_call_score(tool_call(), wrong_second, expected)[1] == (
        'call 2 (get_time): arguments.zone: got "UTC", expected "CET"'
    )
    assert tool_call_score(tool_call(), call_text("get_weather", {"city": "Lyon"}), expected)[0] == 0.0


def test_a_reply_whose_arguments_are_malformed_scores_0():
    cut_short = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Ly'
    assert tool_call_score(tool_call(), cut_short, EXPECTED) == (0.0, "the reply's arguments are not valid JSON")


@pytest.mark.parametrize(
    "fields",
    ["city", [], [""], ["  "], [3], ["f"] * 51],
)
def test_fields_must_be_a_short_list_of_names(fields):
    with pytest.raises(ScorerError, match=r"scorers\[0\]\.fields: a list of 1 to 50"):
        tool_call(fields=fields)


def test_in_an_evaluation_a_scorer_that_does_not_apply_is_left_out_and_none_applying_is_an_error():
    specs = clean_scorers([{"type": "tool_call"}, {"type": "contains"}])
    reasons = {}
    scores, passed, failures = reply_scores(specs, None, "Sunny today", "Sunny", reasons=reasons)
    assert (scores, passed, failures) == ({"contains": 1.0}, True, [])
    assert reasons == {"tool_call": "tool_call: not applicable, the case expects text and the reply is text"}
    scores, passed, failures = reply_scores(specs[:1], None, "Sunny", "Sunny")
    assert scores == {} and not passed and failures[0].startswith("no scorer applies to this case")
    reasons = {}
    scores, passed, _ = reply_scores(specs[:1], None, "Sunny", EXPECTED, reasons=reasons)
    assert scores == {"tool_call": 0.0} and not passed
    assert reasons == {"tool_call": "expected a call to get_weather, the reply is text"}
