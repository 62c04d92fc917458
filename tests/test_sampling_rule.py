"""One rule for a reply's sampling (studio.llm.replies.sampling_checked), shared by forms, the
APIs, imports, prompt versions and the engines: importable without Django, and refusing with the
range."""

import pytest

from studio.llm.replies import GenerationSettings, SamplingError, sampling_checked, sampling_in_range


@pytest.mark.parametrize(
    "values, field, requirement",
    [
        ({"temperature": 2.01}, "temperature", "must be between 0 and 2"),
        ({"temperature": -0.1}, "temperature", "must be between 0 and 2"),
        ({"temperature": float("nan")}, "temperature", "must be a number"),
        ({"top_p": 0.0}, "top_p", "must be above 0 and at most 1"),
        ({"top_p": 1.5}, "top_p", "must be above 0 and at most 1"),
        ({"seed": -(2**63) - 1}, "seed", "must be between -9,223,372,036,854,775,808 and 9,223,372,036,854,775,807"),
        ({"seed": True}, "seed", "must be a whole number"),
        ({"max_new_tokens": 4097}, "max_new_tokens", "must be between 1 and 4,096"),
        ({"max_new_tokens": 0}, "max_new_tokens", "must be between 1 and 4,096"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "must be at most 4, each at most 200 characters"),
        ({"stop": ["x" * 201]}, "stop", "must be at most 4, each at most 200 characters"),
        ({"stop": ["a", ""]}, "stop", "must be a list of non-empty texts"),
    ],
)
def test_it_refuses_a_setting_out_of_range_naming_it_and_its_range(values, field, requirement):
    with pytest.raises(SamplingError) as refused:
        sampling_checked(values, max_new_tokens_cap=4096)
    assert (refused.value.field, refused.value.requirement, refused.value.code) == (
        field,
        requirement,
        "invalid_sampling",
    )


def test_it_keeps_what_is_given_and_leaves_out_the_rest():
    assert sampling_checked(
        {
            "temperature": 0,
            "top_p": 1,
            "seed": -5,
            "stop": "END",
            "max_new_tokens": None,
            "output_format": {"type": "json"},
        }
    ) == {"temperature": 0, "top_p": 1, "seed": -5, "stop": ["END"]}
    assert sampling_checked({"stop": ["a", "b", "c", "d"]}) == {"stop": ["a", "b", "c", "d"]}


def test_the_engines_settings_obey_the_same_rule():
    """Nothing out of range reaches an engine, so no engine needs to cut what it is given (an
    external engine kept only the first 4 stop sequences of 16 before)."""
    with pytest.raises(SamplingError):
        GenerationSettings(stop=("a", "b", "c", "d", "e"))
    with pytest.raises(SamplingError):
        GenerationSettings(temperature=2.5)
    assert (
        GenerationSettings(max_new_tokens=100_000, seed=-1).seed == -1
    )  # the studio's cap applies at its entry points


def test_stored_values_from_before_the_rule_are_brought_into_range_and_named():
    """Prompt versions saved before the rule (temperature up to 5, up to 16 stops, 32,768 tokens)."""
    stored = {"temperature": 5.0, "top_p": 0.9, "max_new_tokens": 32_768, "stop": [f"s{n}" for n in range(16)]}
    assert sampling_in_range(stored, max_new_tokens_cap=4096) == (
        {"temperature": 2.0, "top_p": 0.9, "max_new_tokens": 4096, "stop": ["s0", "s1", "s2", "s3"]},
        ["temperature", "max_new_tokens", "stop"],
    )
    assert sampling_in_range({"temperature": 0.3, "stop": []}, max_new_tokens_cap=4096) == ({"temperature": 0.3}, [])
    with pytest.raises(SamplingError):  # what no rule ever stored is still refused
        sampling_in_range({"top_p": 0.0})
