"""Each scorer on known inputs."""

import pytest

from evals.scorers import ScorerError, clean_scorers, judge_verdict, passes, score


def one(kind, **params):
    return clean_scorers([{"type": kind, **params}])[0]


@pytest.mark.parametrize(
    "output, expected, ignore_case, value",
    [
        ("Paris", "Paris", False, 1.0),
        ("  Paris\n", "Paris", False, 1.0),
        ("paris", "Paris", False, 0.0),
        ("paris", "Paris", True, 1.0),
        ("Paris, France", "Paris", False, 0.0),
    ],
)
def test_exact_match(output, expected, ignore_case, value):
    assert score(one("exact_match", ignore_case=ignore_case), output, expected) == value


@pytest.mark.parametrize(
    "output, extract, value",
    [
        ('{"quantity": 2, "item": "apple"}', False, 1.0),  # key order
        ('{\n  "item":"apple",\n  "quantity":2}', False, 1.0),  # whitespace
        ('{"item": "apple", "quantity": "2"}', False, 0.0),  # a string is not a number
        ('```json\n{"item": "apple", "quantity": 2}\n```', False, 0.0),  # strict by default
        ('```json\n{"item": "apple", "quantity": 2}\n```', True, 1.0),
        ('Sure! {"item": "apple", "quantity": 2} Enjoy.', True, 1.0),
        ("not json", True, 0.0),
    ],
)
def test_json_equal(output, extract, value):
    assert score(one("json_equal", extract=extract), output, '{"item": "apple", "quantity": 2}') == value


def test_contains_and_valid_json_and_regex():
    assert score(one("contains"), "The answer is 42.", "42") == 1.0
    assert score(one("contains", text="forty"), "The answer is 42.", "42") == 0.0
    assert score(one("valid_json"), "[1, 2]", "") == 1.0 and score(one("valid_json"), "[1, 2", "") == 0.0
    assert score(one("regex", pattern=r"^\d{3}-\d{4}$"), "555-1234", "") == 1.0
    assert score(one("regex", pattern=r"^\d{3}-\d{4}$"), "call 555-1234", "") == 0.0


def test_a_catastrophic_regex_times_out_as_a_fail_instead_of_hanging():
    assert score(one("regex", pattern=r"^(a+)+$"), "a" * 40 + "b", "") == 0.0


def test_semantic_similarity_uses_the_bundled_embedding_model():
    from studio.llm.embeddings import load_embedder

    embedder = load_embedder()
    close = score(
        one("semantic_similarity"),
        "The cat sits on the mat.",
        "A cat is sitting on a mat.",
        similarity=embedder.similarity,
    )
    far = score(
        one("semantic_similarity"),
        "Stock prices fell sharply.",
        "A cat is sitting on a mat.",
        similarity=embedder.similarity,
    )
    assert close > 0.8 > far
    assert passes(one("semantic_similarity"), close) and not passes(one("semantic_similarity"), far)


@pytest.mark.parametrize(
    "reply, value",
    [
        ("0.8", 0.8),
        ("Score: 7/10", 0.7),
        ("PASS", 1.0),
        ("fail: wrong", 0.0),
        ("I'd say 90%", 0.9),
        ("Yes, correct.", 1.0),
        ("hmm", None),
    ],
)
def test_the_judges_reply_is_read_as_a_score(reply, value):
    assert judge_verdict(reply) == value


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "at least one"),
        ([{"type": "bleu"}], "choose one of"),
        ([{"type": "regex"}], "pattern"),
        ([{"type": "regex", "pattern": "("}], "pattern"),
        ([{"type": "exact_match", "threshold": 2}], "threshold"),
        ([{"type": "llm_judge"}], "judging prompt"),
    ],
)
def test_bad_scorer_settings_say_what_to_fix(raw, message):
    from prompts.rendering import pattern_error

    with pytest.raises(ScorerError, match=message):
        clean_scorers(raw, check_pattern=pattern_error)


@pytest.mark.parametrize("pattern", ["(?:a{1000}){1000}", "(?:(?:x{100}){100}){100}", "(?:a{1000}[)]){1000}"])
def test_a_pattern_whose_repetitions_multiply_past_the_bound_is_refused_before_it_compiles(pattern):
    def must_not_compile(pattern):  # a render process compiled these: each kept 124-139 MB in the job worker
        raise AssertionError("compiled")

    with pytest.raises(ScorerError, match="repetitions written out come to") as refused:
        clean_scorers([{"type": "regex", "pattern": pattern}], check_pattern=must_not_compile)
    assert refused.value.code == "pattern_too_complex"


def test_digits_in_a_scorers_pattern_are_ascii_as_in_output_formats():
    spec = one("regex", pattern=r"^\d{3}$")
    assert score(spec, "123", "") == 1.0
    assert score(spec, "🯸🯸🯸", "") == 0.0 and score(spec, "١٢٣", "") == 0.0
    assert score(one("regex", pattern=r"^[\d-]+$"), "12-3", "") == 1.0
    assert score(one("regex", pattern=r"^\p{N}+$"), "١٢٣", "") == 1.0  # any digit, said so


def test_a_json_schema_scorer_names_the_place_of_a_mistake():
    with pytest.raises(ScorerError, match="at properties → n → type: 'integr' is not one of the JSON Schema types"):
        one("json_schema", schema={"type": "object", "properties": {"n": {"type": "integr"}}})
