"""Applications read and render prompt versions over HTTP with a bearer token."""

import json

import pytest
from django.test import Client

from accounts.models import ApiToken
from accounts.services import api_token_create, api_token_revoke
from prompts import services
from prompts.rendering import render_messages

from .conftest import SECOND_VERSION

pytestmark = pytest.mark.django_db


@pytest.fixture
def bobs_token(bob):
    """bob is not an editor of alice's prompt: reading through the API needs only a token."""
    _, raw_token = api_token_create(user=bob, name="Bob's app")
    return raw_token


@pytest.fixture
def production_is_v1(alice, notes):
    services.label_move(prompt=notes, name="production", version=notes.versions.get(number=1), user=alice)
    return notes


def bearer(raw_token):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"}


def render(client, slug, body, raw_token, query=""):
    return client.post(
        f"/api/prompts/{slug}/render/{query}", json.dumps(body), content_type="application/json", **bearer(raw_token)
    )


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer cps_not-a-real-token", "Token cps_x", "Basic YWxpY2U6eA=="]
)
def test_it_refuses_a_request_without_a_valid_token(client, notes, header):
    headers = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get(f"/api/prompts/{notes.slug}/", **headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "Authorization: Bearer" in response.json()["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_revoked_token(client, bob, notes, bobs_token):
    api_token_revoke(user=bob, token_id=ApiToken.objects.get(user=bob).pk)
    response = client.get(f"/api/prompts/{notes.slug}/", **bearer(bobs_token))
    assert response.status_code == 401 and "error" in response.json()


def test_it_refuses_the_token_of_a_deactivated_user(client, bob, notes, bobs_token):
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert client.get(f"/api/prompts/{notes.slug}/", **bearer(bobs_token)).status_code == 401


def test_it_answers_the_newest_version_by_default(client, notes, bobs_token):
    response = client.get(f"/api/prompts/{notes.slug}/", **bearer(bobs_token))
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["instructions"] == SECOND_VERSION["instructions"]
    assert body["template"] == SECOND_VERSION["template"]
    assert body["variables"] == ["audience", "text"]
    assert body["examples"] == SECOND_VERSION["examples"]
    assert body["parameters"] == {"model": "", "temperature": 0.2, "top_p": 0.9, "max_new_tokens": 64, "stop": ["###"]}
    assert body["prompt"]["slug"] == notes.slug and body["author"] == "alice"


def test_it_answers_what_a_version_retrieves_and_null_where_it_retrieves_nothing(
    client, alice, make_prompt, bobs_token
):
    from knowledge.services import knowledge_base_create

    handbook = knowledge_base_create(owner=alice, name="Handbook", shared=True)
    make_prompt(
        alice,
        slug="helpdesk",
        versions=[
            {"template": "{{ question }}"},
            {"template": "{{ question }}", "retrieval": {"knowledge_bases": [handbook.pk], "k": 3, "mode": "bm25"}},
        ],
    )
    retrieval = client.get("/api/prompts/helpdesk/", **bearer(bobs_token)).json()["retrieval"]
    assert retrieval["knowledge_bases"] == [{"id": handbook.pk, "name": "Handbook"}]
    assert retrieval["k"] == 3 and retrieval["mode"] == "bm25"
    assert client.get("/api/prompts/helpdesk/?version=1", **bearer(bobs_token)).json()["retrieval"] is None


def test_it_answers_the_version_a_label_points_at(client, production_is_v1, bobs_token):
    body = client.get(f"/api/prompts/{production_is_v1.slug}/?label=production", **bearer(bobs_token)).json()
    assert body["version"] == 1 and body["labels"] == ["production"]
    assert body["instructions"] == "Answer in English.\nBe brief."


def test_it_answers_a_version_by_number(client, notes, bobs_token):
    assert client.get(f"/api/prompts/{notes.slug}/?version=1", **bearer(bobs_token)).json()["version"] == 1
    assert client.get(f"/api/prompts/{notes.slug}/?label=latest", **bearer(bobs_token)).json()["version"] == 2


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/api/prompts/no-such-prompt/", "no-such-prompt"),
        ("/api/prompts/meeting-notes/?label=canary", "canary"),
        ("/api/prompts/meeting-notes/?version=9", "9"),
        ("/api/prompts/meeting-notes/?version=two", "two"),
    ],
)
def test_it_answers_404_with_a_message_for_what_does_not_exist(client, notes, bobs_token, path, named):
    response = client.get(path, **bearer(bobs_token))
    assert response.status_code == 404
    assert named in response.json()["error"]


def test_it_records_when_a_token_was_last_used(client, bob, notes, bobs_token):
    assert ApiToken.objects.get(user=bob).last_used_at is None
    client.get(f"/api/prompts/{notes.slug}/", **bearer(bobs_token))
    assert ApiToken.objects.get(user=bob).last_used_at is not None


def test_render_returns_the_messages_with_the_variables_filled_in(notes, bobs_token):
    client = Client(enforce_csrf_checks=True)  # an application has no CSRF cookie
    variables = {"audience": "the team", "text": "We ship on Friday."}
    response = render(client, notes.slug, {"variables": variables}, bobs_token)
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["messages"] == render_messages(
        instructions=SECOND_VERSION["instructions"],
        examples=SECOND_VERSION["examples"],
        template=SECOND_VERSION["template"],
        variables=variables,
    )
    assert body["messages"][-1] == {"role": "user", "content": "Summarize for the team:\nWe ship on Friday."}
    assert body["parameters"]["max_new_tokens"] == 64


def test_render_follows_a_label_in_the_body_or_the_query(client, production_is_v1, bobs_token):
    variables = {"audience": "a", "text": "b"}
    by_body = render(client, production_is_v1.slug, {"variables": variables, "label": "production"}, bobs_token)
    by_query = render(client, production_is_v1.slug, {"variables": variables}, bobs_token, query="?version=1")
    assert by_body.json()["version"] == by_query.json()["version"] == 1
    assert by_body.json()["messages"][0] == {"role": "system", "content": "Answer in English.\nBe brief."}


def test_render_keeps_template_syntax_in_values_literal(client, notes, bobs_token):
    variables = {"audience": "{{ audience }}", "text": "{% raw %}"}
    response = render(client, notes.slug, {"variables": variables}, bobs_token)
    assert response.json()["messages"][-1]["content"] == "Summarize for {{ audience }}:\n{% raw %}"


def test_render_refuses_a_missing_variable_naming_it(client, notes, bobs_token):
    response = render(client, notes.slug, {"variables": {"text": "We ship on Friday."}}, bobs_token)
    assert response.status_code == 400
    assert "audience" in response.json()["error"]


@pytest.mark.parametrize("body", [["not", "an", "object"], {"variables": ["audience"]}, {"variables": {"audience": 3}}])
def test_render_refuses_a_body_of_the_wrong_shape(client, notes, bobs_token, body):
    response = render(client, notes.slug, body, bobs_token)
    assert response.status_code == 400 and response.json()["error"]


def test_render_refuses_a_body_that_is_not_json(client, notes, bobs_token):
    response = client.post(
        f"/api/prompts/{notes.slug}/render/", "variables=1", content_type="application/json", **bearer(bobs_token)
    )
    assert response.status_code == 400 and "JSON object" in response.json()["error"]


def test_render_without_a_token_is_refused(client, notes):
    response = client.post(
        f"/api/prompts/{notes.slug}/render/", json.dumps({"variables": {}}), content_type="application/json"
    )
    assert response.status_code == 401 and "error" in response.json()


def test_render_answers_404_for_an_unknown_label(client, notes, bobs_token):
    response = render(client, notes.slug, {"variables": {}, "label": "canary"}, bobs_token)
    assert response.status_code == 404 and "canary" in response.json()["error"]
