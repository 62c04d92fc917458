"""Output formats enforced while decoding (studio/llm/constraints.py), on the tiny model: sampled
answers always have the shape, free replies in the same batch are untouched, a format that allows
nothing fails its reply alone. No Django needed."""

import json
import threading
from concurrent.futures import Future

import jsonschema
import pytest

from studio.llm import GenerationSettings, load_model
from studio.llm.constraints import FormatError, ReplyConstraint, check_format, clean_format, sample_of
from studio.llm.engine import BatchEngine, EngineRequest
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund", "exchange", "question"]},
        "customer": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                      "vip": {"type": "boolean"}},
                     "required": ["name", "vip"], "additionalProperties": False},
        "items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 8}, "quantity": {"type": "integer", "minimum": 1, "maximum": 99}},
            "required": ["sku", "quantity"], "additionalProperties": False}},
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
        engine.submit(EngineRequest(key=(id(futures), key), messages=[{"role": "user", "content": prompt}],
                                    settings=settings, output_format=output_format, on_delta=lambda delta: None,
                                    on_done=future.set_result))
        futures.append(future)
    return [future.result(300) for future in futures]


def test_fifty_sampled_answers_under_a_schema_all_validate(engine):
    results = answers(engine, [(f"Order {n}", GenerationSettings(max_new_tokens=300, temperature=1.0, seed=n),
                                {"type": "json_schema", "schema": SCHEMA}) for n in range(50)])
    for result in results:
        assert result.finish_reason == "stop", result
        jsonschema.validate(json.loads(result.text), SCHEMA)
    assert len({result.text for result in results}) > 10  # sampled, not one answer repeated


def test_free_replies_in_a_batch_with_constrained_ones_are_what_they_are_alone(engine):
    greedy = GenerationSettings(max_new_tokens=24, temperature=0)
    prompts = ["Tell me about the sea", "Write a poem", "Count to ten"]
    alone = [answers(engine, [(prompt, greedy, None)])[0].text for prompt in prompts]
    mixed = answers(engine, [(prompts[0], greedy, None), ("json!", greedy, {"type": "json_schema", "schema": SCHEMA}),
                             (prompts[1], greedy, None), ("pick", greedy, {"type": "choice", "choices": ["a", "b"]}),
                             (prompts[2], greedy, None)])
    assert [mixed[0].text, mixed[2].text, mixed[4].text] == alone
    assert mixed[3].text in ("a", "b")


def test_a_regular_expression_and_a_choice_list_are_matched_exactly(engine):
    pattern = r"[0-9]{3}-[A-Z]{2}"
    results = answers(engine, [(f"code {n}", GenerationSettings(max_new_tokens=20, temperature=1.0, seed=n),
                                {"type": "regex", "pattern": pattern}) for n in range(10)])
    import re

    assert all(re.fullmatch(pattern, result.text) for result in results)
    choices = ["yes", "no", "maybe later"]
    picked = answers(engine, [(f"q{n}", GenerationSettings(max_new_tokens=20, temperature=1.0, seed=n),
                               {"type": "choice", "choices": choices}) for n in range(10)])
    assert all(result.text in choices and result.finish_reason == "stop" for result in picked)


def test_an_answer_cut_by_the_maximum_tokens_is_marked_length(engine):
    result = answers(engine, [("json", GenerationSettings(max_new_tokens=5, temperature=0),
                               {"type": "json_schema", "schema": SCHEMA})])[0]
    assert result.finish_reason == "length"  # and so never "valid by construction"


def test_a_format_that_allows_no_token_fails_its_reply_alone_and_never_hangs_the_batch(engine, monkeypatch):
    original = ReplyConstraint.restrict
    calls = {"n": 0}
    lock = threading.Lock()

    def stuck_after_three(self, logits):
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


@pytest.mark.parametrize("output_format, message", [
    ({"type": "json_schema", "schema": {"type": "strng"}}, "not a valid JSON Schema"),
    ({"type": "json_schema", "schema": {"type": "object", "not": {"type": "null"}}}, "Unimplemented"),
    ({"type": "json_schema", "schema": {"enum": list(range(10_000))}}, "at most 1,000"),
    ({"type": "json_schema", "schema": {"type": "object", "description": "x" * 70_000}}, "at most 64 KB"),
    ({"type": "json_schema", "schema": json.loads("{" + '"a": {' * 40 + "}" * 40 + "}")}, "nested deeper"),
    ({"type": "regex", "pattern": ""}, "regular expression"),
    ({"type": "regex", "pattern": "(a"}, "not a valid regular expression: unclosed group"),
    ({"type": "choice", "choices": []}, "choices"),
    ({"type": "yaml"}, "choose one of"),
])
def test_a_format_that_cannot_be_enforced_is_refused_with_the_reason(output_format, message):
    with pytest.raises(FormatError, match=message):
        check_format(clean_format(output_format))


def test_recursive_refs_and_catastrophic_patterns_compile_without_blowing_up():
    linked = {"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
                                                                  "next": {"$ref": "#/$defs/node"}},
                                 "required": ["value"], "additionalProperties": False}}, "$ref": "#/$defs/node"}
    assert check_format(clean_format({"type": "json_schema", "schema": linked})) == []
    assert check_format(clean_format({"type": "regex", "pattern": "(a+)+$"})) == []  # no backtracking engine


def test_a_schema_has_a_sample_answer_that_validates():
    jsonschema.validate(sample_of(SCHEMA), SCHEMA)


def test_properties_are_written_in_the_order_the_schema_requires_them(engine):
    """PostgreSQL stores a schema's keys sorted; `required` keeps the order the person wrote."""
    schema = {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "zone": {"enum": ["north", "south"]}},
              "required": ["zone", "amount"], "additionalProperties": False}
    greedy = GenerationSettings(max_new_tokens=30, temperature=0)
    (answer,) = answers(engine, [("Where?", greedy, {"type": "json_schema", "schema": schema})])
    assert answer.finish_reason == "stop", answer
    assert list(json.loads(answer.text)) == ["zone", "amount"]
