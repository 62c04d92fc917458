"""The failure-case and evaluation API: what a team's CI calls, and what it refuses."""

import json

import pytest

from accounts.services import api_token_create
from evals.models import Evaluation, FailureCase
from evals.runner import run_evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="ci")[1]


def post(client, path, body, token):
    return client.post(
        path,
        json.dumps(body) if not isinstance(body, (str, bytes)) else body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


CASE = {
    "prompt": "order-json",
    "version": None,
    "input": {"order": "3 kiwis"},
    "actual": "kiwi",
    "expected": '{"item": "kiwi", "quantity": 3}',
    "tags": ["api"],
    "split": "eval",
}


def test_one_case_or_a_list_is_created(client, token, order_version):
    one = post(client, "/api/failure-cases/", CASE, token)
    assert one.status_code == 201 and len(one.json()["ids"]) == 1
    case = FailureCase.objects.get(pk=one.json()["ids"][0])
    assert case.prompt_version == order_version and case.source == "api" and case.split == "eval"
    many = post(
        client,
        "/api/failure-cases/",
        [CASE, {**CASE, "input": "plain text", "prompt": None, "context": [{"role": "user", "content": "earlier"}]}],
        token,
    )
    assert many.status_code == 201 and len(many.json()["ids"]) == 2
    plain = FailureCase.objects.get(pk=many.json()["ids"][1])
    assert plain.prompt_version is None and plain.context == [{"role": "user", "content": "earlier"}]


@pytest.mark.parametrize(
    "body, message",
    [
        ([CASE, {**CASE, "expected": ""}], "[1].expected: must not be empty"),
        ([CASE, {**CASE, "split": "test"}], "[1].split: must be one of train, eval"),
        ([{**CASE, "prompt": "nope"}], "[0].prompt: there is no prompt"),
        ([{**CASE, "input": {"wrong": "x"}}], "[0].input: Fill in the variable order"),
        ([{**CASE, "prompt": None}], "[0].input: is an object of variables, which needs a prompt"),
        ([{**CASE, "context": [{"role": "robot"}]}], "[0].context[0]"),
        ([{**CASE, "expected": "a\u0000b"}], "NUL"),
        ({**CASE, "version": 9}, "version: Prompt “order-json” has no version 9"),
    ],
)
def test_a_list_is_all_or_nothing_and_a_refusal_names_the_index_and_field(client, token, order_version, body, message):
    response = post(client, "/api/failure-cases/", body, token)
    assert response.status_code == 400 and message in response.json()["error"], response.json()
    assert not FailureCase.objects.exists()


def test_one_case_sent_alone_is_refused_naming_its_field_without_an_index(client, token, order_version):
    response = post(client, "/api/failure-cases/", {**CASE, "split": "test"}, token)
    assert response.status_code == 400 and response.json()["error"] == "split: must be one of train, eval"


def test_refusals_without_a_token_or_with_a_bad_body(client, token, order_version):
    assert client.post("/api/failure-cases/", "{}", content_type="application/json").status_code == 401
    assert post(client, "/api/failure-cases/", "[" * 1000 + "]" * 1000, token).status_code == 400
    assert post(client, "/api/failure-cases/", "{not json", token).status_code == 400
    assert client.get("/api/evaluations/1/").status_code == 401


def test_the_export_takes_only_the_filters_given(client, token, order_version):
    post(client, "/api/failure-cases/", [CASE, {**CASE, "input": {"order": "x"}, "split": "train"}], token)
    response = client.get(
        "/api/failure-cases/export/?format=dpo&prompt=order-json&split=eval", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert response.status_code == 200 and len(lines) == 1
    assert json.loads(lines[0])["chosen"] == CASE["expected"]
    bad = client.get("/api/failure-cases/export/?format=xml", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert bad.status_code == 400


@pytest.mark.django_db(transaction=True)  # the model worker's thread reads what the test wrote
def test_an_evaluation_is_queued_run_and_read_back(client, token, order_version, model_worker):
    post(client, "/api/failure-cases/", [CASE, {**CASE, "input": {"order": "one plum"}}], token)
    created = post(
        client,
        "/api/evaluations/",
        {
            "prompt": "order-json",
            "version": 1,
            "split": "eval",
            "scorers": [{"type": "json_equal"}, {"type": "valid_json"}],
        },
        token,
    )
    assert created.status_code == 202
    evaluation_id = created.json()["id"]
    queued = client.get(f"/api/evaluations/{evaluation_id}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert queued["status"] == "queued" and queued["total"] == 2 and queued["results"] == []
    run_evaluation(evaluation_id)
    done = client.get(f"/api/evaluations/{evaluation_id}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert done["status"] == "finished" and done["done"] == 2 and 0 <= done["pass_rate"] <= 1
    assert {tuple(sorted(r["scores"])) for r in done["results"]} == {("json_equal", "valid_json")}
    assert all(isinstance(r["passed"], bool) and "output" in r and "case" in r for r in done["results"])
    cancel = post(client, f"/api/evaluations/{evaluation_id}/cancel/", {}, token)
    assert cancel.status_code == 200 and cancel.json()["status"] == "finished"  # nothing left to cancel


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"prompt": "order-json", "split": "eval"}, 400, "no failure cases match"),
        ({"prompt": "nope"}, 404, "no prompt"),
        ({"prompt": "order-json", "label": "production"}, 404, "no label"),
        ({"prompt": "order-json", "version": [1]}, 400, "version"),
        ({"prompt": "order-json", "scorers": [{"type": "bleu"}]}, 400, "scorers[0].type"),
        ({"prompt": "order-json", "model": "gpt-9"}, 400, "unknown model"),
        ([1], 400, "JSON object"),
    ],
)
def test_evaluation_refusals(client, token, order_version, body, status, message):
    if body != {"prompt": "order-json", "split": "eval"}:
        post(client, "/api/failure-cases/", CASE, token)
    response = post(client, "/api/evaluations/", body, token)
    assert response.status_code == status and message in response.json()["error"], response.json()


def test_each_users_queued_evaluations_are_capped(client, token, order_version, settings):
    settings.EVAL_MAX_QUEUED_PER_USER = 1
    post(client, "/api/failure-cases/", CASE, token)
    assert post(client, "/api/evaluations/", {"prompt": "order-json"}, token).status_code == 202
    refused = post(client, "/api/evaluations/", {"prompt": "order-json"}, token)
    assert refused.status_code == 429 and "at most 1" in refused.json()["error"]
    assert int(refused["Retry-After"]) > 0


def test_another_user_cannot_read_or_cancel_an_evaluation_on_private_cases(client, token, bob, order_version):
    post(client, "/api/failure-cases/", CASE, token)
    FailureCase.objects.update(shared=False)
    evaluation_id = post(client, "/api/evaluations/", {"prompt": "order-json"}, token).json()["id"]
    bobs = api_token_create(user=bob, name="bob")[1]
    assert client.get(f"/api/evaluations/{evaluation_id}/", HTTP_AUTHORIZATION=f"Bearer {bobs}").status_code == 404
    assert post(client, f"/api/evaluations/{evaluation_id}/cancel/", {}, bobs).status_code == 404
    assert Evaluation.objects.get(pk=evaluation_id).status == "queued"
    shared_evaluation = Evaluation.objects.get(pk=evaluation_id)
    Evaluation.objects.filter(pk=shared_evaluation.pk).update(shared=True)
    assert post(client, f"/api/evaluations/{evaluation_id}/cancel/", {}, bobs).status_code == 403
