"""A version becomes chat messages: system, few-shot pairs, then the user turn, in a sandbox."""

import pytest

from prompts import services
from prompts.rendering import MissingVariablesError, TemplateError, inspect_template, render_messages, render_user_turn

from .conftest import FIRST_VERSION

EXAMPLES = [
    {"input": "first question", "output": "first answer"},
    {"input": "second question", "output": "second answer"},
]


def test_it_orders_system_then_examples_as_pairs_then_the_user_turn():
    messages = render_messages(
        instructions="Be brief.",
        examples=EXAMPLES,
        template="Q: {{ question }}",
        variables={"question": "Why is the sky blue?"},
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
        {"role": "user", "content": "Q: Why is the sky blue?"},
    ]


def test_it_leaves_out_the_system_message_when_there_are_no_instructions():
    messages = render_messages(instructions="  \n", examples=[], template="Hi {{ name }}", variables={"name": "Ann"})
    assert messages == [{"role": "user", "content": "Hi Ann"}]


def test_it_substitutes_every_variable():
    turn = render_user_turn(
        "Summarize for {{ audience }}:\n{{ text }}\n({{ audience }})", {"audience": "managers", "text": "Sales rose."}
    )
    assert turn == "Summarize for managers:\nSales rose.\n(managers)"


@pytest.mark.parametrize(
    "typed", ["{{ secret }}", "{% for x in y %}{{ x }}{% endfor %}", "{# hidden #}", "{{ ''.__class__ }}"]
)
def test_a_users_value_reaches_the_message_literally(typed):
    messages = render_messages(
        instructions="",
        examples=[],
        template="Text: {{ text }}",
        variables={"text": typed, "secret": "the secret value"},
    )
    assert messages[-1]["content"] == f"Text: {typed}"


def test_it_refuses_a_missing_variable_and_names_it():
    with pytest.raises(MissingVariablesError) as refused:
        render_user_turn("Summarize for {{ audience }}:\n{{ text }}", {"text": "Sales rose."})
    assert refused.value.missing == ["audience"]
    assert "audience" in str(refused.value)


@pytest.mark.parametrize("blank", ["", "   \n", None])
def test_it_refuses_a_blank_variable_as_missing(blank):
    with pytest.raises(MissingVariablesError) as refused:
        render_messages(
            instructions="x",
            examples=[],
            template="{{ audience }}: {{ text }}",
            variables={"audience": blank, "text": "Sales rose."},
        )
    assert refused.value.missing == ["audience"]


def test_it_names_every_missing_variable_in_order_of_use():
    with pytest.raises(MissingVariablesError) as refused:
        render_user_turn("{{ b }} {{ a }} {{ c }}", {"c": "given"})
    assert refused.value.missing == ["b", "a"]
    assert "b, a" in str(refused.value)


def test_template_variables_are_listed_in_order_of_first_use():
    assert inspect_template("{{ text }} for {{ audience }}, again {{ text }}, in {{ language | upper }}") == [
        "text",
        "audience",
        "language",
    ]


def test_template_variables_leave_out_loop_and_set_variables():
    template = (
        "{% set greeting = 'Hello' %}{{ greeting }} {{ name }}:\n"
        "{% for item in items %}- {{ item }} ({{ loop.index }})\n{% endfor %}"
    )
    assert inspect_template(template) == ["name", "items"]


def test_a_version_lists_its_templates_variables(notes):
    assert notes.versions.get(number=1).variables == ["audience", "text"]


def test_loops_over_values_render_from_a_variable():
    assert render_user_turn("{% for c in word %}[{{ c }}]{% endfor %}", {"word": "abc"}) == "[a][b][c]"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__class__.__mro__ }}",
        "{{ x.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ x.format.__self__.__class__ }}",
    ],
)
def test_the_sandbox_refuses_to_reach_python_internals(template):
    with pytest.raises(TemplateError, match="unsafe") as refused:  # refused, with a message a person can read
        render_user_turn(template, {"x": "hello"})
    assert "The template failed to render" in str(refused.value)


def test_a_template_that_does_not_parse_raises_template_error_with_the_line():
    with pytest.raises(TemplateError) as refused:
        render_user_turn("line one\n{{ unclosed", {})
    assert "line 2" in str(refused.value)


@pytest.mark.django_db
@pytest.mark.parametrize("template", ["{{ unclosed", "{% for x in items %}{{ x }}", "{% endif %}", "{{ a b }}"])
def test_version_create_refuses_a_malformed_template_naming_the_template_field(notes, alice, template):
    with pytest.raises(services.PromptError) as refused:
        services.version_create(prompt=notes, author=alice, fields={**FIRST_VERSION, "template": template})
    assert refused.value.field == "template"
    assert "does not parse" in refused.value.message
    assert notes.versions.count() == 2


@pytest.mark.django_db
def test_prompt_create_refuses_a_malformed_template_too(alice):
    with pytest.raises(services.PromptError) as refused:
        services.prompt_create(
            owner=alice, name="Broken", slug="broken", version={**FIRST_VERSION, "template": "{% if x %}"}
        )
    assert refused.value.field == "template"


def test_a_variable_with_a_default_may_be_left_empty():
    template = "Reply in a {{ tone | default('friendly') }} tone to: {{ question }}"
    assert render_user_turn(template, {"tone": "", "question": "Hi"}) == "Reply in a friendly tone to: Hi"
    with pytest.raises(MissingVariablesError) as refused:
        render_user_turn(template, {"tone": "", "question": " "})
    assert refused.value.missing == ["question"]
