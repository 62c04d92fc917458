"""A version's tools: part of the immutable version (form, diff, export/import, the prompt API),
checked when saved as an API request's are, refused naming the field."""

import json

import pytest

from accounts.services import api_token_create
from prompts import services
from prompts.diff import diff_versions
from prompts.models import PromptVersion

from .conftest import FIRST_VERSION

pytestmark = pytest.mark.django_db

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
WITH_TOOLS = {**FIRST_VERSION, "tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False}


def form(**fields):
    return {"template": "Ask: {{ question }}", "commit_message": "tools", "output_type": "text", **fields}


def test_a_version_keeps_its_tools_as_a_tool_use_and_gives_them_back_in_openais_form(alice, make_prompt):
    version = make_prompt(alice, versions=[WITH_TOOLS]).versions.get()
    assert version.tool_use == {
        "tools": [
            {
                "name": "get_weather",
                "parameters": WEATHER["function"]["parameters"],
                "description": "The weather in a city now",
            },
            {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        ],
        "choice": "required",
        "function": "",
        "parallel": False,
    }
    fields = version.editable_fields()
    assert fields["tools"] == [WEATHER, TIME]
    assert (fields["tool_choice"], fields["parallel_tool_calls"]) == ("required", False)


def test_a_version_without_tools_says_so(alice, make_prompt):
    version = make_prompt(alice).versions.get()
    assert version.tools == {} and version.tool_use is None
    assert version.editable_fields()["tools"] == []


def test_export_then_import_keeps_the_tools_and_an_old_export_without_them_still_imports(alice, bob, make_prompt):
    prompt = make_prompt(
        alice,
        versions=[
            FIRST_VERSION,
            {**WITH_TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        ],
    )
    exported = services.prompt_export(prompt)
    exported["prompt"]["slug"] = "copy"
    copied = services.prompt_import(data=json.loads(json.dumps(exported)), owner=bob)
    assert [v.tools for v in copied.versions.order_by("number")] == [
        v.tools for v in prompt.versions.order_by("number")
    ]
    assert copied.versions.get(number=2).tool_use["choice"] == "function"
    old = json.loads(json.dumps(exported))
    old["prompt"]["slug"] = "old"
    for version in old["versions"]:  # written before versions had tools
        for name in ("tools", "tool_choice", "parallel_tool_calls"):
            version.pop(name)
    assert all(v.tools == {} for v in services.prompt_import(data=old, owner=bob).versions.all())


@pytest.mark.parametrize(
    "fields, field, words",
    [
        (
            {"tools": [WEATHER, {"type": "function", "function": {"name": "bad name"}}]},
            "tools[1].function.name",
            "1 to 64",
        ),
        (
            {
                "tools": [
                    WEATHER,
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"type": "strng"}}},
                        },
                    },
                ]
            },
            "tools[1].function.parameters",
            "",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "tool_choice",
            "get_time",
        ),
        ({"tools": [], "tool_choice": "required"}, "tool_choice", "no `tools`"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
        ({"tools": "[{"}, "tools", "not valid JSON"),
        (
            {"tools": [WEATHER], "tool_choice": "auto", "output_format": {"type": "choice", "choices": ["a", "b"]}},
            "tool_choice",
            "JSON output format",
        ),
    ],
)
def test_tools_that_cannot_be_used_are_refused_naming_the_field(alice, make_prompt, fields, field, words):
    prompt = make_prompt(alice)
    with pytest.raises(services.PromptError) as refused:
        services.version_create(prompt=prompt, author=alice, fields={**FIRST_VERSION, **fields})
    assert refused.value.field == field
    assert words in refused.value.message
    assert prompt.versions.count() == 1


def test_a_required_choice_combines_with_a_choice_format(alice, make_prompt):
    prompt = make_prompt(alice)
    fields = {**WITH_TOOLS, "output_format": {"type": "choice", "choices": ["a", "b"]}}
    assert services.version_create(prompt=prompt, author=alice, fields=fields).tool_use["choice"] == "required"


def test_the_diff_shows_the_tools_section(alice, make_prompt):
    prompt = make_prompt(alice, versions=[FIRST_VERSION, WITH_TOOLS])
    sections = {s.title: s for s in diff_versions(prompt.versions.get(number=1), prompt.versions.get(number=2))}
    tools = sections["Tools"]
    assert tools.changed
    added = "\n".join("".join(text for text, _ in row.right.segments) for row in tools.rows)
    assert "Tool get_weather" in added and "Description: The weather in a city now" in added
    assert '"city": {' in added  # the parameters as pretty JSON
    assert "Tool choice: required (every reply is a call); one call at a time" in added
    assert not sections["Template"].changed


def test_the_prompt_api_returns_the_tools(client, alice, make_prompt):
    make_prompt(alice, versions=[FIRST_VERSION, WITH_TOOLS])
    token = api_token_create(user=alice, name="app")[1]
    answer = client.get("/api/prompts/meeting-notes/?version=2", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert answer["tools"] == [WEATHER, TIME]
    assert (answer["tool_choice"], answer["parallel_tool_calls"]) == ("required", False)
    older = client.get("/api/prompts/meeting-notes/?version=1", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert (older["tools"], older["tool_choice"]) == ([], None)


def test_the_version_form_saves_tools_and_the_page_shows_them(client, alice, make_prompt):
    make_prompt(alice, versions=[{**FIRST_VERSION, "template": "Ask: {{ question }}", "examples": []}])
    client.force_login(alice)
    new_form = client.get("/prompts/meeting-notes/versions/new/").content.decode()
    assert 'name="tools"' in new_form and "get_weather" in new_form  # the placeholder's example
    response = client.post(
        "/prompts/meeting-notes/versions/new/",
        form(tools=json.dumps([WEATHER]), tool_choice="get_weather", parallel_tool_calls="on"),
    )
    assert response.status_code == 302
    version = PromptVersion.objects.get(prompt__slug="meeting-notes", number=2)
    assert (version.tool_use["choice"], version.tool_use["function"], version.tool_use["parallel"]) == (
        "function",
        "get_weather",
        True,
    )
    page = client.get(response["Location"]).content.decode()
    assert 'data-tool="get_weather"' in page and "The weather in a city now" in page
    assert "always get_weather" in page
    edit = client.get("/prompts/meeting-notes/versions/new/?from=2").content.decode()
    assert "&quot;get_weather&quot;" in edit and 'value="get_weather"' in edit  # refilled from the version


def test_the_version_form_shows_a_bad_schema_at_the_field(client, alice, make_prompt):
    make_prompt(alice, versions=[{**FIRST_VERSION, "template": "Ask: {{ question }}", "examples": []}])
    client.force_login(alice)
    bad = {
        **WEATHER,
        "function": {
            **WEATHER["function"],
            "parameters": {"type": "object", "properties": {"city": {"type": "strng"}}},
        },
    }
    response = client.post("/prompts/meeting-notes/versions/new/", form(tools=json.dumps([bad])))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="tools-error"' in page and "tools[0].function.parameters" in page
    assert "strng" in page  # what was typed stays in the box
    assert PromptVersion.objects.filter(prompt__slug="meeting-notes").count() == 1


def test_another_user_cannot_save_a_version_with_tools(client, alice, bob, make_prompt):
    make_prompt(alice, versions=[{**FIRST_VERSION, "template": "Ask: {{ question }}", "examples": []}])
    client.force_login(bob)
    response = client.post("/prompts/meeting-notes/versions/new/", form(tools=json.dumps([WEATHER])))
    assert response.status_code == 403
    assert PromptVersion.objects.filter(prompt__slug="meeting-notes").count() == 1
