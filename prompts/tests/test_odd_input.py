"""Odd input gets a clear 400 or form error, never a 500: NUL bytes and lone surrogates (which
PostgreSQL cannot store), deep JSON, wrong types, ids beyond the database's integers.
tests/test_odd_input_on_postgresql.py runs the same through real servers on PostgreSQL."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.services import api_token_create
from prompts import services
from prompts.models import Prompt

from .conftest import FIRST_VERSION

pytestmark = pytest.mark.django_db

UNSTORABLE = ["nul \x00 byte", "lone \ud800 surrogate"]


@pytest.fixture
def token(bob):
    return api_token_create(user=bob, name="app")[1]


@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("field", ["name", "description", "instructions", "template", "commit_message", "model"])
def test_the_services_refuse_unstorable_text_and_name_the_field(alice, text, field):
    identity = {"name": "Fine", "slug": "fine", "description": ""}
    version = dict(FIRST_VERSION)
    (identity if field in identity else version)[field] = text
    with pytest.raises(services.PromptError) as refused:
        services.prompt_create(owner=alice, version=version, **identity)
    assert refused.value.field == field and "cannot be stored" in refused.value.message
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("text", UNSTORABLE)
def test_examples_and_stop_sequences_refuse_unstorable_text(alice, text):
    with pytest.raises(services.PromptError, match=r"examples\[0\]\.input"):
        services.prompt_create(
            owner=alice, name="A", slug="a", version={**FIRST_VERSION, "examples": [{"input": text, "output": "x"}]}
        )
    with pytest.raises(services.PromptError, match=r"stop\[0\]"):
        services.prompt_create(owner=alice, name="A", slug="a", version={**FIRST_VERSION, "stop": [text]})


def test_a_form_field_with_a_nul_byte_gets_a_400_page_saying_which_field(client, alice):
    client.force_login(alice)
    response = client.post("/prompts/new/", {"name": "bad\x00name", "slug": "bad", "template": "{{ x }}"})
    assert response.status_code == 400
    assert "name" in response.content.decode() and "NUL" in response.content.decode()
    assert "NUL" in response["X-Studio-Error"]  # htmx shows it where the person is looking
    assert not Prompt.objects.exists()


def test_a_query_parameter_with_a_nul_byte_is_refused_as_json_on_the_api(client, notes, token):
    response = client.get(f"/api/prompts/{notes.slug}/?label=prod\x00", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and "NUL" in response.json()["error"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ('{"variables": {"audience": "a\\u0000b", "text": "x"}}', "NUL"),
        ('{"variables": {"audience": "\\ud800", "text": "x"}}', "surrogate"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"variables": ' + '{"a": ' * 40 + "1" + "}" * 41, "nested too deeply"),
        ('{"version": [1], "variables": {}}', '"version" a number'),
        ('{"label": {"x": 1}, "variables": {}}', '"label" must be text'),
        ('{"version": 99999999999999999999999999, "variables": {"audience": "a", "text": "b"}}', "no version"),
    ],
)
def test_the_render_api_answers_odd_bodies_with_a_clear_error(client, notes, token, body, expected):
    response = client.post(
        f"/api/prompts/{notes.slug}/render/",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code in (400, 404)
    assert expected in response.json()["error"]


def test_a_version_number_beyond_the_database_is_not_found(client, alice, notes):
    client.force_login(alice)
    assert client.get(f"/prompts/{notes.slug}/versions/{'9' * 30}/").status_code == 404


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b'{"format": "chat-prompt-studio/prompt", "x": "\\u0000"}', "NUL"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
    ],
)
def test_a_bad_import_file_is_refused_with_the_reason_and_imports_nothing(client, alice, payload, expected):
    client.force_login(alice)
    response = client.post("/prompts/import/", {"file": SimpleUploadedFile("p.json", payload)})
    assert response.status_code == 400 and expected in response.content.decode()
    assert not Prompt.objects.exists()


def test_an_import_with_unstorable_text_names_the_json_path(alice):
    data = {
        "format": "chat-prompt-studio/prompt",
        "format_version": 1,
        "prompt": {"name": "N", "slug": "n"},
        "versions": [{"number": 1, **FIRST_VERSION, "author": "x\x00", "created_at": "2024-01-01T00:00:00Z"}],
    }
    with pytest.raises(services.PromptError, match=r"versions\[0\]\.author"):
        services.prompt_import(data=json.loads(json.dumps(data)), owner=alice)


def test_adding_an_editor_with_a_nul_byte_is_an_error_in_the_card(client, alice, notes):
    client.force_login(alice)
    response = client.post(f"/prompts/{notes.slug}/editors/", {"username": "bo\x00b"})
    assert response.status_code == 400 and "NUL" in response["X-Studio-Error"]
    with pytest.raises(services.PromptError, match="cannot be stored"):
        services.editor_add(prompt=notes, username="bo\x00b", user=alice)


def test_removing_an_editor_with_a_huge_id_changes_nothing(client, alice, bob, notes):
    services.editor_add(prompt=notes, username="bob", user=alice)
    client.force_login(alice)
    assert client.post(f"/prompts/{notes.slug}/editors/", {"remove": "9" * 40}).status_code == 200
    assert list(notes.editors.all()) == [bob]
