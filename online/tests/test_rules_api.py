"""POST/GET/DELETE /api/online-evaluations/: the shapes, every refusal naming its field, who may
make and see rules (403 for a prompt one may not edit, 404 for a rule one may not see), and the
bound of 50 rules a prompt, counted before anything is stored."""

import pytest

from online.models import MAX_RULES_PER_PROMPT, OnlineRule

from .conftest import LENGTH

pytestmark = pytest.mark.django_db

URL = "/api/online-evaluations/"


def rule_body(**fields):
    return {"prompt": "support", "label": "production", "sample_rate": 0.5, "scorers": [LENGTH], **fields}


def test_it_creates_a_rule_and_answers_its_id(api, support, alice):
    answer = api("alice").post(
        URL,
        rule_body(
            scorers=[
                {"type": "llm_judge", "rubric": "Polite and answers the question."},
                {"type": "json_schema", "schema": {"type": "object"}},
                {"type": "regex", "pattern": r"\d+"},
                {"type": "length", "min": 1, "max": 500},
                {"type": "contains", "text": "order"},
                {"type": "not_contains", "text": "sorry", "ignore_case": True},
            ],
            review_below=0.5,
        ),
    )
    assert answer.status_code == 201, answer.json()
    rule = OnlineRule.objects.get(pk=answer.json()["id"])
    assert (rule.prompt, rule.label, rule.version, rule.sample_rate, rule.review_below) == (
        support,
        "production",
        None,
        0.5,
        0.5,
    )
    assert [spec["name"] for spec in rule.scorers] == [
        "llm_judge",
        "json_schema",
        "regex",
        "length",
        "contains",
        "not_contains",
    ]
    assert rule.scorers[0] == {
        "type": "llm_judge",
        "name": "llm_judge",
        "rubric": "Polite and answers the question.",
        "model": "",
    }
    assert rule.created_by == alice and rule.active


def test_a_rule_follows_a_version_by_number(api, support, v2):
    answer = api("alice").post(URL, rule_body(label=None, version=2))
    assert answer.status_code == 201
    assert OnlineRule.objects.get(pk=answer.json()["id"]).version == v2


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"sample_rate": "0.5"}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"sample_rate": None}, "sample_rate"),
        ({"label": "production", "version": 1}, "label"),
        ({"label": None}, "label"),
        ({"label": "staging"}, "label"),
        ({"label": "Not A Label"}, "label"),
        ({"label": None, "version": 9}, "version"),
        ({"label": None, "version": "one"}, "version"),
        ({"scorers": []}, "scorers"),
        ({"scorers": [{"type": "exact_match"}]}, "scorers[0].type"),
        ({"scorers": [LENGTH, {"type": "regex", "pattern": "(a{1000}){1000}"}]}, "scorers[1].pattern"),
        ({"scorers": [{"type": "regex", "pattern": "(unclosed"}]}, "scorers[0].pattern"),
        ({"scorers": [{"type": "json_schema"}]}, "scorers[0].schema"),
        ({"scorers": [{"type": "llm_judge"}]}, "scorers[0].rubric"),
        ({"scorers": [{"type": "length"}]}, "scorers[0]"),
        ({"scorers": [{"type": "length", "min": 9, "max": 3}]}, "scorers[0].min"),
        ({"scorers": [{"type": "contains"}]}, "scorers[0].text"),
        ({"scorers": [LENGTH, LENGTH]}, "scorers[1].name"),
        ({"review_below": 2}, "review_below"),
        ({"review_below": "0.5"}, "review_below"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_it_refuses_bad_input_naming_the_field_and_stores_nothing(api, support, fields, field):
    answer = api("alice").post(URL, rule_body(**fields))
    assert answer.status_code == 400, answer.json()
    assert answer.json()["error"].startswith(f"{field}: "), answer.json()
    assert not OnlineRule.objects.exists()


def test_a_pattern_too_costly_says_so_with_its_code(api, support):
    answer = api("alice").post(URL, rule_body(scorers=[{"type": "regex", "pattern": "(a{1000}){1000}"}]))
    assert answer.status_code == 400 and answer.json()["code"] == "pattern_too_complex"


def test_an_unknown_prompt_is_404(api, support):
    assert api("alice").post(URL, rule_body(prompt="nope")).status_code == 404
    assert api("alice").get(f"{URL}?prompt=nope").status_code == 404


def test_only_the_prompts_owner_editors_and_staff_make_rules(api, support):
    answer = api("bob").post(URL, rule_body())
    assert answer.status_code == 403 and "owner" in answer.json()["error"]
    assert not OnlineRule.objects.exists()
    assert api("dave").post(URL, rule_body()).status_code == 201  # an editor
    assert api("carol").post(URL, rule_body()).status_code == 201  # staff


def test_nobody_else_sees_a_rule_or_its_scores(api, support):
    rule_id = api("alice").post(URL, rule_body()).json()["id"]
    assert api("bob").get(f"{URL}?prompt=support").status_code == 403
    for path in (f"{URL}{rule_id}/",):
        assert api("bob").get(path).status_code == 404
        assert api("bob").delete(path).status_code == 404
    assert api("bob").post(f"{URL}{rule_id}/disable/").status_code == 404
    assert OnlineRule.objects.get(pk=rule_id).active
    assert api("dave").get(f"{URL}{rule_id}/").status_code == 200
    assert api("carol").get(f"{URL}{rule_id}/").status_code == 200


def test_the_list_detail_disable_and_delete_shapes(api, support):
    rule_id = api("alice").post(URL, rule_body(review_below=0.25)).json()["id"]
    listed = api("alice").get(f"{URL}?prompt=support").json()["rules"]
    assert [rule["id"] for rule in listed] == [rule_id]
    assert listed[0] == {
        "id": rule_id,
        "prompt": "support",
        "label": "production",
        "version": None,
        "sample_rate": 0.5,
        "scorers": [{"type": "length", "name": "length", "min": None, "max": 200}],
        "review_below": 0.25,
        "active": True,
        "created_by": "alice",
        "created_at": listed[0]["created_at"],
    }
    detail = api("alice").get(f"{URL}{rule_id}/").json()
    assert detail["scores"] == {"length": {"mean": None, "n": 0, "errors": 0}}
    assert detail["series"] == [] and detail["waiting"] == 0
    assert detail["replies"] == {"number": 1, "has_next": False, "has_previous": False, "replies": []}
    assert api("alice").post(f"{URL}{rule_id}/disable/").json() == {"id": rule_id, "active": False}
    assert api("alice").get(f"{URL}{rule_id}/").json()["active"] is False
    assert api("alice").delete(f"{URL}{rule_id}/").json() == {"id": rule_id, "deleted": True}
    assert not OnlineRule.objects.exists()


def test_rules_are_bounded_per_prompt_before_anything_is_stored(api, support):
    """Asked for 60 (as a script asking for 10,000 would), it makes 50 and refuses the rest, naming the bound."""
    answers = [api("alice").post(URL, rule_body()) for _ in range(MAX_RULES_PER_PROMPT + 10)]
    assert [a.status_code for a in answers] == [201] * MAX_RULES_PER_PROMPT + [400] * 10
    refusal = answers[-1].json()
    assert refusal["error"].startswith("prompt: ") and "at most 50" in refusal["error"]
    assert refusal["code"] == "too_many_rules"
    assert OnlineRule.objects.filter(prompt=support).count() == MAX_RULES_PER_PROMPT
