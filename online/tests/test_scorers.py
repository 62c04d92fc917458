"""Each reference-free scorer on a reply alone, the judge's answer read as a score, and the settings
refused with the place named."""

import pytest

from online import scorers
from online.scorers import ScorerError, ScoringFailed


@pytest.mark.parametrize(
    "spec, output, expected",
    [
        ({"type": "length", "min": 3, "max": 5}, "abcd", 1.0),
        ({"type": "length", "min": 3, "max": 5}, "ab", 0.0),
        ({"type": "length", "min": None, "max": 5}, "abcdef", 0.0),
        ({"type": "length", "min": 2, "max": None}, "abcdef", 1.0),
        ({"type": "contains", "text": "Order", "ignore_case": False}, "your order left", 0.0),
        ({"type": "contains", "text": "Order", "ignore_case": True}, "your order left", 1.0),
        ({"type": "not_contains", "text": "sorry", "ignore_case": True}, "Sorry, no.", 0.0),
        ({"type": "not_contains", "text": "sorry", "ignore_case": True}, "Here it is.", 1.0),
        ({"type": "regex", "pattern": r"\d{3}"}, "parcel 123", 1.0),
        ({"type": "regex", "pattern": r"\d{3}"}, "parcel ١٢٣", 0.0),  # \d is ASCII, as everywhere
        ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"a": 1}', 1.0),
        ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"b": 1}', 0.0),
        ({"type": "json_schema", "schema": {"type": "object"}}, "not json", 0.0),
    ],
)
def test_each_scorer_scores_a_reply_alone(spec, output, expected):
    assert scorers.score(spec, output) == expected


def test_a_pattern_that_runs_out_of_time_is_an_error_not_a_zero():
    with pytest.raises(ScoringFailed, match="longer than 1 s"):
        scorers.score({"type": "regex", "pattern": "(a|aa)+$"}, "a" * 60 + "!")


@pytest.mark.parametrize("reply, value", [("4", 0.75), ("5", 1.0), ("1", 0.0), (" Score: 3.", 0.5), ("2/5", 0.25)])
def test_the_judges_whole_number_1_to_5_is_a_score_0_to_1(reply, value):
    assert scorers.judge_score(reply) == value


@pytest.mark.parametrize("reply", ["", "great answer", "7", "0", "4.5"])
def test_a_judge_reply_without_a_score_is_an_error(reply):
    with pytest.raises(ScoringFailed, match="no score from 1 to 5"):
        scorers.judge_score(reply)


def test_the_judge_reads_the_rubric_the_question_and_the_answer():
    system, user = scorers.judge_messages({"rubric": "Be polite."}, "Question: where?", "")
    assert system["role"] == "system" and "1 to 5" in system["content"]
    assert "Rubric: Be polite." in user["content"] and "Question: where?" in user["content"]
    assert "Answer:\n(empty)" in user["content"]


def test_scorers_are_named_by_type_or_by_their_name():
    cleaned = scorers.clean_scorers(
        [{"type": "contains", "text": "a"}, {"type": "contains", "text": "b", "name": "has-b"}]
    )
    assert [spec["name"] for spec in cleaned] == ["contains", "has-b"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (None, "scorers: give at least one"),
        ([{"type": "length", "max": 1}] * 11, "scorers: at most 10"),
        ([{"type": "semantic_similarity"}], "scorers[0].type: choose one of"),
        ([{"type": "llm_judge", "rubric": "x", "model": 3}], "scorers[0].model"),
        ([{"type": "length", "max": -1}], "scorers[0].max"),
        ([{"type": "length", "max": True}], "scorers[0].max"),
        ([{"type": "contains", "text": "a", "name": "Bad Name"}], "scorers[0].name"),
        ([{"type": "json_schema", "schema": []}], "scorers[0].schema"),
        ([{"type": "regex", "pattern": r"[\D]"}], "scorers[0].pattern"),
    ],
)
def test_settings_are_refused_with_the_place_named(raw, message):
    with pytest.raises(ScorerError) as refused:
        scorers.clean_scorers(raw)
    assert str(refused.value).startswith(message)
