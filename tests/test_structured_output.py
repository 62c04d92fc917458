"""Output formats enforced while decoding (studio/llm/constraints.py), on the tiny model: sampled
answers always have the shape, free replies in the same batch are untouched, a format that allows
nothing fails its reply alone. No Django needed."""

import json
import threading
from concurrent.futures import Future

import jsonschema
import pytest

from studio.llm import GenerationSettings, load_model
from studio.llm.constraints import (
    FORMAT_FAILED,
    FORMAT_INVALID,
    FORMAT_TOO_COMPLEX,
    FormatError,
    ReplyConstraint,
    check_format,
    clean_format,
    pattern_cost,
    sample_of,
)
from studio.llm.engine import BatchEngine, EngineRequest
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund", "exchange", "question"]},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "vip": {"type": "boolean"}},
            "required": ["name", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 8},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["intent", "customer", "items"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine():
    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")
    engine = BatchEngine(loaded, max_batch=8)
    yield engine
    engine.close()


def answers(engine, requests):
    """[(prompt, settings, output_format)] submitted together; their results in order."""
    futures = []
    for key, (prompt, settings, output_format) in enumerate(requests):
        future = Future()
        engine.submit(
            EngineRequest(
                key=(id(futures), key),
                messages=[{"role": "user", "content": prompt}],
                settings=settings,
                output_format=output_format,
                on_delta=lambda delta: None,
                on_done=future.set_result,
            )
        )
        futures.append(future)
    return [future.result(300) for future in futures]


@pytest.mark.slow  # minutes of decoding: the whole suite's, not the edit loop's
def test_fifty_sampled_answers_under_a_schema_all_validate(engine):
    results = answers(
        engine,
        [
            (
                f"Order {n}",
                GenerationSettings(max_new_tokens=300, temperature=1.0, seed=n),
                {"type": "json_schema", "schema": SCHEMA},
            )
            for n in range(50)
        ],
    )
    for result in results:
        assert result.finish_reason == "stop", result
        jsonschema.validate(json.loads(result.text), SCHEMA)
    assert len({result.text for result in results}) > 10  # sampled, not one answer repeated


def test_free_replies_in_a_batch_with_constrained_ones_are_what_they_are_alone(engine):
    greedy = GenerationSettings(max_new_tokens=24, temperature=0)
    prompts = ["Tell me about the sea", "Write a poem", "Count to ten"]
    alone = [answers(engine, [(prompt, greedy, None)])[0].text for prompt in prompts]
    mixed = answers(
        engine,
        [
            (prompts[0], greedy, None),
            ("json!", greedy, {"type": "json_schema", "schema": SCHEMA}),
            (prompts[1], greedy, None),
            ("pick", greedy, {"type": "choice", "choices": ["a", "b"]}),
            (prompts[2], greedy, None),
        ],
    )
    assert [mixed[0].text, mixed[2].text, mixed[4].text] == alone
    assert mixed[3].text in ("a", "b")


def test_a_regular_expression_and_a_choice_list_are_matched_exactly(engine):
    pattern = r"[0-9]{3}-[A-Z]{2}"
    results = answers(
        engine,
        [
            (
                f"code {n}",
                GenerationSettings(max_new_tokens=20, temperature=1.0, seed=n),
                {"type": "regex", "pattern": pattern},
            )
            for n in range(10)
        ],
    )
    import re

    assert all(re.fullmatch(pattern, result.text) for result in results)
    choices = ["yes", "no", "maybe later"]
    picked = answers(
        engine,
        [
            (
                f"q{n}",
                GenerationSettings(max_new_tokens=20, temperature=1.0, seed=n),
                {"type": "choice", "choices": choices},
            )
            for n in range(10)
        ],
    )
    assert all(result.text in choices and result.finish_reason == "stop" for result in picked)


def test_an_answer_cut_by_the_maximum_tokens_is_marked_length(engine):
    result = answers(
        engine,
        [("json", GenerationSettings(max_new_tokens=5, temperature=0), {"type": "json_schema", "schema": SCHEMA})],
    )[0]
    assert result.finish_reason == "length"  # and so never "valid by construction"


def test_a_format_that_allows_no_token_fails_its_reply_alone_and_never_hangs_the_batch(engine, monkeypatch):
    original = ReplyConstraint.restrict
    calls = {"n": 0}
    lock = threading.Lock()

    def stuck_after_three(self, logits, **kwargs):
        with lock:
            calls["n"] += 1
        if getattr(self, "_steps", 0) >= 3:
            return False
        self._steps = getattr(self, "_steps", 0) + 1
        return original(self, logits)

    monkeypatch.setattr(ReplyConstraint, "restrict", stuck_after_three)
    greedy = GenerationSettings(max_new_tokens=20, temperature=0)
    stuck, free = answers(engine, [("x", greedy, {"type": "json"}), ("y", greedy, None)])
    assert stuck.finish_reason == "error" and "allows no token" in stuck.error
    assert free.finish_reason == "length" and free.usage.completion_tokens == 20


@pytest.mark.parametrize(
    "output_format, message",
    [
        ({"type": "json_schema", "schema": {"type": "strng"}}, "not a valid JSON Schema"),
        ({"type": "json_schema", "schema": {"type": "object", "not": {"type": "null"}}}, "Unimplemented"),
        ({"type": "json_schema", "schema": {"enum": list(range(10_000))}}, "at most 1,000"),
        ({"type": "json_schema", "schema": {"type": "object", "description": "x" * 70_000}}, "at most 64 KB"),
        ({"type": "json_schema", "schema": json.loads("{" + '"a": {' * 40 + "}" * 40 + "}")}, "nested deeper"),
        ({"type": "regex", "pattern": ""}, "regular expression"),
        ({"type": "regex", "pattern": "(a"}, "not a valid regular expression: unclosed group"),
        ({"type": "choice", "choices": []}, "choices"),
        ({"type": "yaml"}, "choose one of"),
    ],
)
def test_a_format_that_cannot_be_enforced_is_refused_with_the_reason(output_format, message):
    with pytest.raises(FormatError, match=message):
        check_format(clean_format(output_format))


def test_recursive_refs_and_catastrophic_patterns_compile_without_blowing_up():
    linked = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}},
                "required": ["value"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    }
    assert check_format(clean_format({"type": "json_schema", "schema": linked})) == []
    assert check_format(clean_format({"type": "regex", "pattern": "(a+)+$"})) == []  # no backtracking engine


def test_a_schema_has_a_sample_answer_that_validates():
    jsonschema.validate(sample_of(SCHEMA), SCHEMA)


def test_properties_are_written_in_the_order_the_schema_requires_them(engine):
    """PostgreSQL stores a schema's keys sorted; `required` keeps the order the person wrote."""
    schema = {
        "type": "object",
        "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 9}, "zone": {"enum": ["north", "south"]}},
        "required": ["zone", "amount"],
        "additionalProperties": False,
    }
    greedy = GenerationSettings(max_new_tokens=30, temperature=0)
    (answer,) = answers(engine, [("Where?", greedy, {"type": "json_schema", "schema": schema})])
    assert answer.finish_reason == "stop", answer
    assert list(json.loads(answer.text)) == ["zone", "amount"]


# --- what a format may cost (issue #25: a schema's pattern kept 215 MB of the model worker a request) ---

HOSTILE = {
    "type": "json_schema",
    "schema": {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a{1000}){1000}$"}},
        "required": ["s"],
    },
}
ENDLESS = {
    "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}},
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    "output_format, code, message",
    [
        (HOSTILE, FORMAT_TOO_COMPLEX, "properties → s → pattern: its repetitions written out come to 1,000,002"),
        ({"type": "regex", "pattern": "(?:x{1000}){1000}"}, FORMAT_TOO_COMPLEX, "come to 1,000,000 characters"),
        (
            {"type": "regex", "pattern": "(?:x{1000}[)]){1000}"},
            FORMAT_TOO_COMPLEX,
            "more than 10,000",
        ),  # a ) in a class
        ({"type": "regex", "pattern": "(?x) # [ comment\n(?:x{1000}){1000}"}, FORMAT_TOO_COMPLEX, "more than 10,000"),
        ({"type": "regex", "pattern": "x{999999999}"}, FORMAT_TOO_COMPLEX, "come to 999,999,999"),
        (
            {"type": "json_schema", "schema": {"type": "object", "patternProperties": {"^(?:k{100}){200}$": {}}}},
            FORMAT_TOO_COMPLEX,
            "patternProperties → ^(?:k{100}){200}$",
        ),
        (
            {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "properties": {f"p{n}": {"type": "string", "pattern": "^x{9000}$"} for n in range(6)},
                },
            },
            FORMAT_TOO_COMPLEX,
            "patterns written out come to more than 50,000",
        ),
        ({"type": "json_schema", "schema": ENDLESS}, FORMAT_INVALID, "$defs → node ($ref #/$defs/node) has no finite"),
        (
            {
                "type": "json_schema",
                "schema": {
                    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
                    "$ref": "#/$defs/a",
                },
            },
            FORMAT_INVALID,
            "has no finite answer",
        ),
        (
            {"type": "json_schema", "schema": {"type": "array", "minItems": 1, "items": {"$ref": "#"}}},
            FORMAT_INVALID,
            "the schema itself ($ref #) has no finite answer",
        ),
    ],
)
def test_hostile_formats_are_refused_with_a_code_before_anything_compiles(output_format, code, message, monkeypatch):
    import llguidance

    monkeypatch.setattr(llguidance, "LLMatcher", None)  # nothing may compile: clean_format judges the text
    with pytest.raises(FormatError) as refused:
        clean_format(output_format)
    assert refused.value.code == code and message in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    "schema",
    [
        {
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node",
        },
        {
            "$defs": {
                "tree": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}},
                    "required": ["kids"],
                }
            },
            "$ref": "#/$defs/tree",
        },  # an empty list of kids ends it
        {
            "$defs": {
                "e": {"anyOf": [{"type": "integer"}, {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/e"}}]}
            },
            "$ref": "#/$defs/e",
        },  # a number ends it
        {
            "$defs": {
                "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}, "required": ["b"]},
                "b": {"type": ["object", "null"], "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]},
            },
            "$ref": "#/$defs/a",
        },  # null ends it
        {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{4}$"},
                "note": {"type": "string", "pattern": "^(?:[a-z]{1,20} ){1,100}$"},
            },
        },
    ],
)
def test_recursive_schemas_with_an_end_and_ordinary_patterns_are_accepted(schema):
    assert check_format(clean_format({"type": "json_schema", "schema": schema})) == []


@pytest.mark.parametrize(
    "pattern, cost",
    [
        ("x{3}", 3),
        ("(ab){2}", 4),
        ("(?:a{1000}){1000}", 1_000_000),
        (r"[0-9]{3}-[A-Z]{2}", 6),
        ("a|b{10}", 11),
        ("(?P<name>x){100}", 100),
        ("[(]{50}", 50),
        (r"\{1000\}", 6),
        ("a{2,5}{3}", 15),
    ],
)
def test_a_patterns_cost_is_its_counted_repetitions_written_out(pattern, cost):
    assert pattern_cost(pattern) == cost


def test_a_schema_that_names_a_wrong_type_says_where_in_words():
    schema = {"type": "object", "properties": {"priority": {"type": "integr"}}}
    with pytest.raises(
        FormatError,
        match="at properties → priority → type: 'integr' is not one of the JSON Schema "
        r"types \(array, boolean, integer, null, number, object, string\); did you "
        "mean 'integer'",
    ):
        clean_format({"type": "json_schema", "schema": schema})


def test_digits_in_a_pattern_are_ascii_as_a_person_means_them(engine):
    constraint = ReplyConstraint(engine.loaded.tokenizer, clean_format({"type": "regex", "pattern": r"\d{3}"}))
    assert not constraint.matcher.consume_tokens(engine.loaded.tokenizer.encode("١٢٣", add_special_tokens=False))
    constraint = ReplyConstraint(engine.loaded.tokenizer, clean_format({"type": "regex", "pattern": r"\d{3}"}))
    assert constraint.matcher.consume_tokens(engine.loaded.tokenizer.encode("123", add_special_tokens=False))
    assert constraint.matcher.is_accepting()


def test_a_reply_whose_matcher_fails_is_failed_with_a_code_never_stop(engine):
    """The issue's schema, as a format stored before these checks: the matcher reaches its limit
    after `{"` and allows only the end. It used to end "stop" with `{"` for a whole answer."""
    greedy = GenerationSettings(max_new_tokens=2, temperature=0)
    results = answers(
        engine,
        [
            (
                f"json {n}",
                greedy,
                {
                    **HOSTILE,
                    "schema": {
                        **HOSTILE["schema"],
                        "properties": {"s": {"type": "string", "pattern": f"^({letter}{{1000}}){{1000}}$"}},
                    },
                },
            )
            for n, letter in enumerate("abc")
        ],
    )
    for result in results:
        assert result.finish_reason == "error" and result.error_code == FORMAT_FAILED, result
        assert "could not be followed to its end" in result.error


def test_an_accepted_format_that_keeps_building_states_fails_its_reply_at_the_limit(engine):
    """`[a-z]*a[a-z]{200}` is cheap to write and passes every check, but its automaton doubles with
    each letter written: under llguidance's defaults it grew 29 MB in 300 tokens and went on. At
    GRAMMAR_LIMITS' 20,000 states its reply fails with a code instead."""
    output_format = clean_format({"type": "regex", "pattern": "[a-z]*a[a-z]{200}"})
    results = answers(
        engine,
        [
            (f"letters {n}", GenerationSettings(max_new_tokens=600, temperature=1.0, seed=n), output_format)
            for n in range(2)
        ],
    )
    for result in results:
        assert result.finish_reason == "error" and result.error_code == FORMAT_FAILED, result
        assert "too many states" in result.error


def test_each_reply_compiles_a_matcher_of_its_own_freed_with_it(engine, monkeypatch):
    """Copies of a cached matcher share its lexer: what every reply made it build stayed for as long
    as the cache kept the format (256 of them). A matcher per reply goes with its reply."""
    import llguidance

    compiled = []
    original = llguidance.LLMatcher

    class CountedMatcher:  # llguidance's matcher, each construction counted
        grammar_from_json_schema = staticmethod(original.grammar_from_json_schema)

        def __new__(cls, *args, **kwargs):
            compiled.append(kwargs.get("limits"))
            return original(*args, **kwargs)

    monkeypatch.setattr(llguidance, "LLMatcher", CountedMatcher)
    greedy = GenerationSettings(max_new_tokens=30, temperature=0)
    first, second = answers(
        engine,
        [
            ("one", greedy, {"type": "json_schema", "schema": SCHEMA}),
            ("two", greedy, {"type": "json_schema", "schema": SCHEMA}),
        ],
    )
    assert len(compiled) == 2 and all(limits is not None for limits in compiled)
    assert compiled[0].max_lexer_states == 20_000 and compiled[0].initial_lexer_fuel == 100_000


def test_a_stop_string_never_cuts_a_constrained_answer_short_of_its_shape(engine):
    choices = ["north pole", "south pole"]
    (result,) = answers(
        engine,
        [
            (
                "where?",
                GenerationSettings(max_new_tokens=20, temperature=0, stop=(" ",)),
                {"type": "choice", "choices": choices},
            )
        ],
    )
    assert result.finish_reason == "stop" and result.text in choices
