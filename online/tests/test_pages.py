"""The pages: a prompt's rules with the form (errors shown at their field, htmx), a rule's page with
its scores per day, its chart and the replies it scored, paged in a fixed number of queries."""

import pytest

from online.models import OnlineRule, OnlineSample, OnlineScore
from online.scoring import _store

from .conftest import live_reply

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def form(**fields):
    return {
        "prompt": "support",
        "follows": "label",
        "label": "production",
        "sample_rate": "0.2",
        "scorer": ["length"],
        "length_max": "300",
        **fields,
    }


def test_the_prompts_page_lists_its_rules_and_offers_the_form(client, alice, support):
    OnlineRule.objects.create(
        prompt=support,
        label="production",
        sample_rate=0.25,
        scorers=[{"type": "length", "name": "length", "min": None, "max": 9}],
        created_by=alice,
    )
    client.force_login(alice)
    page = client.get("/online-evaluations/?prompt=support").content.decode()
    assert "Online evaluation of Support" in page and "25 %" in page and 'id="rule-form"' in page


def test_someone_who_may_not_edit_the_prompt_sees_no_page(client, bob, support):
    client.force_login(bob)
    assert client.get("/online-evaluations/?prompt=support").status_code == 404
    assert client.post("/online-evaluations/", form()).status_code == 404
    assert not OnlineRule.objects.exists()


@pytest.mark.parametrize(
    "fields, field_id, words",
    [
        ({"sample_rate": "1.5"}, "rule-sample-rate", "outside 0-1"),
        ({"sample_rate": "lots"}, "rule-sample-rate", "must be a number"),
        ({"scorer": ["regex"], "pattern": "(unclosed"}, "rule-pattern", "missing )"),
        ({"scorer": ["length", "llm_judge"], "judge_rubric": ""}, "rule-judge-rubric", "what a good reply does"),
        ({"scorer": ["json_schema"], "schema": "{nope"}, "rule-schema", "JSON Schema object"),
        ({"follows": "version", "version": "7"}, "rule-version", "has no version 7"),
        ({"scorer": []}, None, "give at least one"),
    ],
)
def test_a_refused_form_shows_the_error_at_its_field(client, alice, support, fields, field_id, words):
    client.force_login(alice)
    answer = client.post("/online-evaluations/", form(**fields), **HTMX)
    assert answer.status_code == 400
    html = answer.content.decode()
    assert html.startswith('<form class="card form" id="rule-form"')  # the form alone, swapped in place
    if field_id:
        after_field = html.split(f'id="{field_id}"', 1)[1]
        assert words in after_field.split("</div>", 1)[0], after_field[:600]
    else:
        assert words in html
    assert not OnlineRule.objects.exists()


def test_a_made_rule_opens_its_page(client, alice, support):
    client.force_login(alice)
    answer = client.post(
        "/online-evaluations/", form(review_below="0.5", scorer=["length", "contains"], contains_text="order"), **HTMX
    )
    rule = OnlineRule.objects.get()
    assert answer.status_code == 200 and answer["HX-Redirect"] == f"/online-evaluations/{rule.pk}/"
    assert [spec["type"] for spec in rule.scorers] == ["length", "contains"] and rule.review_below == 0.5


def test_the_rule_page_shows_its_scores_chart_and_replies_paged(
    client, alice, support, v1, django_assert_max_num_queries
):
    rule = OnlineRule.objects.create(
        prompt=support,
        version=v1,
        sample_rate=1.0,
        scorers=[
            {"type": "length", "name": "length", "min": 5, "max": None},
            {"type": "llm_judge", "name": "judge", "rubric": "x", "model": "gpt-9"},
        ],
        created_by=alice,
    )
    for n in range(25):
        sample = OnlineSample.objects.create(
            rule=rule, message=live_reply(v1, owner=alice, answer=f"reply number {n}"), status="finished"
        )
        _store(sample, {"length": (1.0, ""), "judge": (None, "the judge model “gpt-9” is not served")})
    client.force_login(alice)
    with django_assert_max_num_queries(8):
        page = client.get(f"/online-evaluations/{rule.pk}/").content.decode()
    assert "reply number 24" in page and "reply number 4" not in page  # newest first, 20 a page
    assert "<svg" in page and "<title>length," in page  # hovering a point shows its figures
    assert "is not served" in page and "25" in page
    older = client.get(f"/online-evaluations/{rule.pk}/replies/?page=2", **HTMX).content.decode()
    assert older.startswith('<section class="card" id="scored-replies">')
    assert "reply number 4" in older and "reply number 5" not in older and "Older" not in older


def test_disable_and_delete_from_the_page(client, alice, bob, support):
    rule = OnlineRule.objects.create(prompt=support, label="production", sample_rate=1.0, scorers=[], created_by=alice)
    client.force_login(bob)
    assert client.post(f"/online-evaluations/{rule.pk}/disable/").status_code == 404
    client.force_login(alice)
    client.post(f"/online-evaluations/{rule.pk}/disable/")
    rule.refresh_from_db()
    assert not rule.active
    answer = client.post(f"/online-evaluations/{rule.pk}/delete/", **HTMX)
    assert answer["HX-Redirect"] == "/online-evaluations/?prompt=support"
    assert not OnlineRule.objects.exists() and not OnlineScore.objects.exists()
