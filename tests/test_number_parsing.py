"""One reader of numbers for every entry point (studio.input_checks): a refusal says the range, and
an id in a query string that is no id means none was given, never a 500."""

import pytest

from knowledge.retrieval import RetrievalError, clean_settings
from studio.input_checks import InputError, number_in_range, whole_number_or_none


@pytest.mark.parametrize("given", ["0", "51", "5.5", 5.5, True, "five", float("nan")])
def test_a_number_out_of_its_range_or_no_number_is_refused_saying_the_range(given):
    with pytest.raises(InputError, match="^must be a whole number from 1 to 50$"):
        number_in_range(given, low=1, high=50, whole=True)


def test_a_number_in_range_is_taken_from_text_or_json():
    assert number_in_range(" 7 ", low=1, high=50, whole=True) == 7
    assert number_in_range(7.0, low=1, high=50, whole=True) == 7
    assert number_in_range("-0.5", low=-1, high=1000) == -0.5


@pytest.mark.parametrize("given", [None, "", "abc", "0", "-3", "1.5", "9" * 25, "99999999999999999999"])
def test_an_id_that_is_no_id_means_none(given):
    assert whole_number_or_none(given) is None


def test_an_id_is_read_up_to_a_bigint():
    assert whole_number_or_none("42") == 42 and whole_number_or_none(str(2**63 - 1)) == 2**63 - 1
    assert whole_number_or_none("3", high=2) is None


@pytest.mark.parametrize(
    "raw, field, message",
    [
        ({"k": 5.9}, "retrieval.k", "must be a whole number from 1 to 50"),  # was rounded down to 5
        ({"k": True}, "retrieval.k", "must be a whole number from 1 to 50"),  # was taken as 1
        ({"k": 0}, "retrieval.k", "must be a whole number from 1 to 50"),
        ({"min_score": "high"}, "retrieval.min_score", "must be a number from -1 to 1000, or empty for none"),
        ({"min_score": 1001}, "retrieval.min_score", "must be a number from -1 to 1000, or empty for none"),
    ],
)
def test_a_versions_retrieval_settings_are_refused_with_their_range(raw, field, message):
    with pytest.raises(RetrievalError) as refused:
        clean_settings(raw)
    assert (refused.value.field, refused.value.message) == (field, message)
