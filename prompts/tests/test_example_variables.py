"""Few-shot examples can be the template's variables: rendered through it when the version is
saved, so the examples look to the model exactly as the live input does; the editor says which."""

import pytest

from prompts import services

from .conftest import FIRST_VERSION

pytestmark = pytest.mark.django_db


def test_an_example_given_as_variables_is_rendered_through_the_template_on_save(alice, make_prompt):
    prompt = make_prompt(
        alice,
        versions=[
            {
                **FIRST_VERSION,
                "examples": [
                    {"variables": {"audience": "the board", "text": "Sales rose."}, "output": "Up."},
                    {"input": "written as is", "output": "ok"},
                ],
            }
        ],
    )
    examples = prompt.versions.get().examples
    assert examples[0] == {
        "input": "Summarize for the board:\nSales rose.",
        "output": "Up.",
        "variables": {"audience": "the board", "text": "Sales rose."},
    }
    assert examples[1] == {"input": "written as is", "output": "ok"}


def test_variables_the_template_does_not_get_are_refused_by_example(alice, make_prompt):
    with pytest.raises(services.PromptError) as refused:
        make_prompt(alice, versions=[{**FIRST_VERSION, "examples": [{"variables": {"audience": "x"}, "output": "y"}]}])
    assert refused.value.field == "examples[0].variables" and "text" in refused.value.message


def test_the_editor_sends_example_inputs_through_a_one_variable_template_and_says_so(client, alice, make_prompt):
    make_prompt(alice, slug="orders", versions=[{**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []}])
    client.force_login(alice)
    page = client.get("/prompts/orders/versions/new/").content.decode()
    assert "is the value of <code>order</code> and goes through the template when you save" in page
    client.post(
        "/prompts/orders/versions/new/",
        {
            "template": "Order: {{ order }}",
            "example_variable": "order",
            "example_mode": ["template", "written"],
            "example_input": ["2 pears", "Order: as written"],
            "example_output": ["pears", "x"],
            "commit_message": "examples",
        },
    )
    version = alice.prompts.get(slug="orders").versions.get(number=2)
    assert [e["input"] for e in version.examples] == ["Order: 2 pears", "Order: as written"]
    assert version.examples[0]["variables"] == {"order": "2 pears"}
    page = client.get("/prompts/orders/versions/new/?from=2").content.decode()
    assert '<textarea name="example_input" rows="2">2 pears</textarea>' in page  # edited as the variable's value


def test_the_editor_says_that_a_several_variable_template_takes_examples_as_written(client, alice, make_prompt):
    make_prompt(alice)
    client.force_login(alice)
    page = client.get("/prompts/meeting-notes/versions/new/").content.decode()
    assert "The template has several variables: write each example's input as the whole user turn" in page
