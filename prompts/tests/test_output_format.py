"""A version's output format: part of the immutable version (form, diff, export/import, API),
checked and compiled when saved, refused with the reason when it cannot be enforced."""

import json

import pytest

from prompts import services
from prompts.models import PromptVersion

from .conftest import FIRST_VERSION

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {"item": {"enum": ["pear", "fig"]}, "quantity": {"type": "integer"}},
    "required": ["item", "quantity"],
    "additionalProperties": False,
}


def form(**fields):
    return {
        "template": "Order: {{ order }}",
        "commit_message": "format",
        "output_type": "text",
        "output_spec": "",
        **fields,
    }


def test_a_version_saved_with_a_schema_shows_it_with_a_sample_and_the_api_returns_it(client, alice, make_prompt):
    make_prompt(alice, slug="orders", versions=[{**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []}])
    client.force_login(alice)
    response = client.post(
        "/prompts/orders/versions/new/", form(output_type="json_schema", output_spec=json.dumps(SCHEMA))
    )
    assert response.status_code == 302
    version = PromptVersion.objects.get(prompt__slug="orders", number=2)
    assert version.output_format == {"type": "json_schema", "schema": SCHEMA}
    page = client.get(response["Location"]).content.decode()
    assert "JSON Schema:" in page and "&quot;item&quot;: &quot;pear&quot;" in page  # the sample answer
    from accounts.services import api_token_create

    token = api_token_create(user=alice, name="app")[1]
    answer = client.get("/api/prompts/orders/?version=2", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert answer["output_format"] == {"type": "json_schema", "schema": SCHEMA}
    assert client.get("/api/prompts/orders/?version=1", HTTP_AUTHORIZATION=f"Bearer {token}").json()[
        "output_format"
    ] == {"type": "text"}  # versions made before formats existed are free text


@pytest.mark.parametrize(
    "kind, spec, message",
    [
        ("json_schema", "{not json", "not JSON"),
        ("json_schema", '{"type": "strng"}', "not a valid JSON Schema"),
        ("json_schema", json.dumps({"enum": list(range(5000))}), "at most 1,000"),
        ("json_schema", json.dumps({"type": "object", "not": {}}), "Unimplemented"),
        ("regex", "(a", ""),
        ("choice", "", "choices"),
    ],
)
def test_a_format_that_cannot_be_enforced_is_refused_in_the_form_and_nothing_is_saved(
    client, alice, make_prompt, kind, spec, message
):
    make_prompt(alice, slug="orders", versions=[{**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []}])
    client.force_login(alice)
    response = client.post("/prompts/orders/versions/new/", form(output_type=kind, output_spec=spec))
    assert response.status_code == 400
    page = response.content.decode()
    assert "<strong>output_format</strong>" in page and message in page
    assert not PromptVersion.objects.filter(prompt__slug="orders", number=2).exists()


def test_the_diff_and_the_export_carry_the_format(client, alice, make_prompt, carol):
    prompt = make_prompt(
        alice,
        slug="orders",
        versions=[
            {**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []},
            {
                **FIRST_VERSION,
                "template": "Order: {{ order }}",
                "examples": [],
                "output_format": {"type": "choice", "choices": ["pear", "fig"]},
            },
        ],
    )
    client.force_login(alice)
    diff = client.get("/prompts/orders/diff/?from=1&to=2").content.decode()
    assert "Output format" in diff and "pear" in diff and "fig" in diff
    exported = json.loads(client.get("/prompts/orders/export/").content)
    assert exported["versions"][1]["output_format"] == {"type": "choice", "choices": ["pear", "fig"]}
    exported["prompt"]["slug"] = "orders-copy"
    copy = services.prompt_import(data=exported, owner=carol)
    assert copy.versions.get(number=2).output_format == {"type": "choice", "choices": ["pear", "fig"]}
    assert prompt.versions.get(number=1).answer_format == {"type": "text"}


@pytest.mark.parametrize(
    "kind, spec, message",
    [
        (
            "json_schema",
            json.dumps(
                {
                    "type": "object",
                    "properties": {"s": {"type": "string", "pattern": "^(a{1000}){1000}$"}},
                    "required": ["s"],
                }
            ),
            "properties → s → pattern: its repetitions written out come to",
        ),
        ("regex", "(?:x{1000}){1000}", "its repetitions written out come to 1,000,000 characters, more than 10,000"),
        (
            "json_schema",
            json.dumps(
                {
                    "$defs": {
                        "node": {
                            "type": "object",
                            "properties": {"next": {"$ref": "#/$defs/node"}},
                            "required": ["next"],
                        }
                    },
                    "$ref": "#/$defs/node",
                }
            ),
            "$defs → node ($ref #/$defs/node) has no finite answer",
        ),
        (
            "json_schema",
            json.dumps({"type": "object", "properties": {"priority": {"type": "integr"}}}),
            "properties → priority → type: &#x27;integr&#x27; is not one of the JSON Schema types (array, boolean, integer, "
            "null, number, object, string); did you mean &#x27;integer&#x27;?",
        ),
    ],
)
def test_a_costly_or_wrong_format_is_explained_beside_its_field_and_nothing_is_saved(
    client, alice, make_prompt, kind, spec, message
):
    make_prompt(alice, slug="orders", versions=[{**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []}])
    client.force_login(alice)
    response = client.post("/prompts/orders/versions/new/", form(output_type=kind, output_spec=spec))
    assert response.status_code == 400
    page = response.content.decode()
    beside = page[page.index('id="id_output_spec"') : page.index("</fieldset>", page.index('id="id_output_spec"'))]
    assert '<p class="field-error" id="output-format-error">' in beside and message in beside, beside
    assert 'aria-describedby="output-format-error"' in beside
    assert '<a href="#output-format-error">' in page  # the alert at the top points at it
    assert not PromptVersion.objects.filter(prompt__slug="orders", number=2).exists()


def test_an_import_with_a_costly_pattern_names_the_version_and_the_rule(alice):
    data = {
        "format": services.EXPORT_FORMAT,
        "format_version": 1,
        "prompt": {"name": "Codes", "slug": "codes"},
        "versions": [
            {**FIRST_VERSION, "number": 1, "output_format": {"type": "regex", "pattern": "(?:x{1000}){1000}"}}
        ],
    }
    with pytest.raises(services.PromptError) as refused:
        services.prompt_import(data=data, owner=alice)
    assert refused.value.field == "versions[0].output_format" and refused.value.code == "output_format_too_complex"
