"""Fine-tuning is for staff: every page and API route checks it on the server; others get 403
and no hint of the jobs (and anonymous visitors the login page or 401)."""

import json

import pytest

from accounts.services import api_token_create
from finetune.models import FineTunedModel, FineTuneJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(carol, order_prompt):
    job = FineTuneJob.objects.create(
        name="secret-run", base_model="tiny", prompt=order_prompt, created_by=carol, hyperparameters={}
    )
    FineTunedModel.objects.create(name="secret-run", base_model="tiny", job=job, data_hash="x")
    return job


def routes(job):
    model = job.result
    return [
        ("get", "/fine-tunes/"),
        ("get", "/fine-tunes/new/"),
        ("post", "/fine-tunes/new/"),
        ("post", "/fine-tunes/plan/"),
        ("get", f"/fine-tunes/{job.pk}/"),
        ("get", f"/fine-tunes/{job.pk}/progress/"),
        ("post", f"/fine-tunes/{job.pk}/cancel/"),
        ("post", f"/fine-tunes/models/{model.pk}/evaluate/"),
        ("get", f"/fine-tunes/models/{model.pk}/adapter.zip"),
        ("post", f"/fine-tunes/models/{model.pk}/merged/"),
        ("post", f"/fine-tunes/models/{model.pk}/delete/"),
    ]


def test_a_non_staff_user_gets_403_on_every_route_and_no_hint(client, alice, job):
    client.force_login(alice)
    for method, url in routes(job):
        response = getattr(client, method)(url, {"prompt": "order-json"})
        assert response.status_code == 403, url
        assert "secret-run" not in response.content.decode(), url
    assert FineTuneJob.objects.get(pk=job.pk).status == "queued"
    assert FineTunedModel.objects.filter(name="secret-run").exists()
    assert "Fine-tune</a>" not in client.get("/chat/").content.decode()  # no link either


def test_anonymous_visitors_are_sent_to_log_in(client, job):
    for method, url in routes(job):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_staff_reach_every_page(client, carol, job):
    client.force_login(carol)
    assert client.get("/fine-tunes/").status_code == 200
    assert client.get(f"/fine-tunes/{job.pk}/").status_code == 200
    assert "Fine-tune</a>" in client.get("/chat/").content.decode()


def api(client, method, path, token=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "post":
        return client.post(path, json.dumps(body or {}), content_type="application/json", **headers)
    return client.get(path, **headers)


def test_the_api_checks_token_then_staff_then_fields(client, alice, carol, job, cases):
    staff_token = api_token_create(user=carol, name="pipeline")[1]
    plain_token = api_token_create(user=alice, name="mine")[1]
    assert api(client, "post", "/api/fine-tunes/").status_code == 401
    assert api(client, "get", f"/api/fine-tunes/{job.pk}/").status_code == 401
    assert api(client, "post", "/api/fine-tunes/", plain_token, {"prompt": "order-json"}).status_code == 403
    denied = api(client, "get", f"/api/fine-tunes/{job.pk}/", plain_token)
    assert denied.status_code == 403 and "secret-run" not in denied.content.decode()
    incomplete = api(client, "post", "/api/fine-tunes/", staff_token, {"hyperparameters": {"epochs": 1}})
    assert incomplete.status_code == 400 and "prompt" in incomplete.json()["error"]
    assert api(client, "post", "/api/fine-tunes/", staff_token, {"prompt": "nope"}).status_code == 404
    bad = api(
        client,
        "post",
        "/api/fine-tunes/",
        staff_token,
        {"prompt": "order-json", "hyperparameters": {"lora_rank": "big"}},
    )
    assert bad.status_code == 400 and "lora_rank" in bad.json()["error"]
    created = api(
        client, "post", "/api/fine-tunes/", staff_token, {"prompt": "order-json", "hyperparameters": {"epochs": 1}}
    )
    assert created.status_code == 202
    state = api(client, "get", f"/api/fine-tunes/{created.json()['id']}/", staff_token).json()
    assert state["status"] == "queued" and state["step"] == 0 and state["losses"] == [] and state["model"] is None
    assert state["examples"] == 9 and state["name"] == "order-json-ft1"
    assert api(client, "get", f"/api/fine-tunes/{job.pk}/", staff_token).json()["model"] == "secret-run"


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"hyperparameters": {"seed": -1}}, "seed"),
        ({"hyperparameters": {"seed": 10**30}}, "seed"),
        ({"hyperparameters": {"batch_size": 2.9}}, "batch_size"),
        ({"hyperparameters": {"lora_rank": True}}, "lora_rank"),
        ({"hyperparameters": {"epochs": "many"}}, "epochs"),
        ({"hyperparameters": {"epoch": 3}}, "hyperparameters.epoch"),
        ({"hyperparameters": [1]}, "hyperparameters"),
        ({"selection": 999999}, "selection"),
    ],
)
def test_the_api_refuses_what_it_would_fail_on_later_naming_the_field(client, carol, cases, extra, field):
    from finetune.models import FineTuneJob

    token = api_token_create(user=carol, name="ci")[1]
    refused = api(client, "post", "/api/fine-tunes/", token, {"prompt": "order-json", **extra})
    assert refused.status_code == 400 and refused.json()["error"].startswith(field)
    assert not FineTuneJob.objects.exists()


def test_someone_elses_selection_is_refused_and_held_out_cases_are_never_trained_on_unless_asked(
    client, alice, carol, cases
):
    from evals.models import CaseSelection, FailureCase
    from finetune import services
    from finetune.models import FineTuneJob

    theirs = CaseSelection.objects.create(owner=alice, name="mine", filters={"tag": "x"})
    token = api_token_create(user=carol, name="ci")[1]
    refused = api(client, "post", "/api/fine-tunes/", token, {"prompt": "order-json", "selection": theirs.pk})
    assert refused.status_code == 400 and refused.json()["error"].startswith("selection")
    mine = CaseSelection.objects.create(owner=carol, name="pears", filters={"prompt": "order-json"})
    job = FineTuneJob.objects.get(
        pk=api(client, "post", "/api/fine-tunes/", token, {"prompt": "order-json", "selection": mine.pk}).json()["id"]
    )
    assert set(FailureCase.objects.filter(pk__in=job.case_ids).values_list("split", flat=True)) == {"train"}
    asked, _ = services.cases_for_job(user=carol, prompt=cases[0].prompt, filters={"split": "eval"})
    assert set(asked.values_list("split", flat=True)) == {"eval"}
