"""A fine-tune that finds nothing to train on says which filter left the cases out, with counts,
on the form and in the API: never a bare "no matching cases"."""

import pytest

from accounts.services import api_token_create
from evals import services as case_services
from evals.models import FailureCase

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_held_out(alice, order_prompt):
    return case_services.cases_create(
        user=alice,
        source="api",
        rows=[
            {"prompt": "order-json", "input": {"order": f"{n} pears"}, "expected": f"{n}", "split": "eval"}
            for n in range(3)
        ],
    )


def test_the_form_says_the_split_left_out_the_three_held_out_cases(client, carol, three_held_out):
    client.force_login(carol)
    refused = client.post("/fine-tunes/new/", {"prompt": "order-json"})
    page = refused.content.decode()
    assert refused.status_code == 400
    assert "of the 3 cases of “Order JSON”, 3 are in the eval split, not train" in page
    plan = client.post("/fine-tunes/plan/", {"prompt": "order-json"}).content.decode()
    assert "3 are in the eval split, not train" in plan
    assert (
        client.post("/fine-tunes/plan/", {"prompt": "order-json", "split": "eval"})
        .content.decode()
        .count("<strong>3</strong> examples")
        == 1
    )


def test_the_api_says_it_too(client, carol, three_held_out):
    _, token = api_token_create(user=carol, name="pipeline")
    refused = client.post(
        "/api/fine-tunes/",
        {"prompt": "order-json"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 400
    assert refused.json()["error"].startswith(
        "cases: no training examples: of the 3 cases of “Order JSON”, 3 are in the eval split"
    )


def test_each_filter_counts_what_it_left_out(carol, alice, bob, order_prompt, settings):
    from finetune import services

    rows = [{"prompt": "order-json", "input": {"order": f"{n}"}, "expected": "x", "split": "train"} for n in range(9)]
    made = case_services.cases_create(user=alice, source="api", rows=rows)
    case_services.cases_create(user=bob, source="api", shared=False, rows=[{**rows[0], "input": {"order": "bob"}}])
    FailureCase.objects.filter(pk__in=[made[0].pk, made[1].pk]).update(review=FailureCase.Review.PENDING)
    FailureCase.objects.filter(pk=made[2].pk).update(status=FailureCase.Status.WONT_FIX)
    funnel = services.cases_funnel(user=carol, prompt=order_prompt, filters={})
    removed = {entry["filter"]: entry["removed"] for entry in funnel}
    assert funnel[0]["left"] == 10 and removed["visibility"] == 1 and removed["split"] == 0
    assert removed["review"] == 2 and removed["status"] == 1 and funnel[-1]["left"] == 6
    cases, _ = services.cases_for_job(user=carol, prompt=order_prompt, filters={})
    assert cases.count() == funnel[-1]["left"]  # the same filters as the job's
    tagged = services.cases_funnel(user=carol, prompt=order_prompt, filters={"tag": "urgent"})
    assert tagged[-1]["filter"] == "tag" and tagged[-1]["text"] == "6 do not have the tag “urgent”"
    message = services.describe_funnel(tagged, {})
    assert message == (
        "of the 10 cases of “Order JSON”, 1 is private to another person; 2 are not "
        "approved by a reviewer (waiting or rejected); 1 is marked “won't fix” (choose that status to "
        "train on them); 6 do not have the tag “urgent”"
    )
