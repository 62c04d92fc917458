"""A template cannot freeze or exhaust the studio: what would be huge is refused before it is
computed, work and output are bounded, and rendering runs in a separate process with a time limit."""

import pytest

from prompts import services
from prompts.models import Prompt, PromptVersion
from prompts.rendering import MissingVariablesError, TemplateError, TemplateLimitError, inspect_template, render_user_turn
from prompts.template_engine import MAX_OUTPUT_CHARS

from .conftest import FIRST_VERSION

# The findings, each reproduced from outside before the fix.
ADVERSARIAL = {
    "{{ 9**(9**8) }}": "digits",  # froze every page for two minutes (folded while compiling)
    "{{ 9**(9**6) }}": "digits",  # made the prompt's pages answer 500 for good
    "{{ 'x' * 10**9 }}": "characters",  # 18 s and 3.3 GB before it was refused
    "{{ range(100000)|join('x'*10000) }}": "characters",  # a 1 GB body through the render API
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "steps",  # a spinning thread
    "{{ 'x'|center(1000000000) }}": "characters",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}":
        "characters",
    "{{ '%999999999d' % 1 }}": "too large",
    "{{ 'ab'|replace('', 'x' * 99999) }}": "characters",
    "{{ 'a\nb'|indent(10**9) }}": "characters",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}": "steps",
    "{{ ([range(100000)|list] * 100000)|join }}": "characters",
}


@pytest.mark.parametrize("template", ADVERSARIAL)
def test_an_adversarial_template_is_refused_before_it_computes_the_huge_thing(template):
    with pytest.raises(TemplateLimitError) as refused:
        render_user_turn(template, {})
    assert ADVERSARIAL[template] in str(refused.value)  # a bound, not the render time limit, stopped it


@pytest.mark.django_db
@pytest.mark.parametrize("template", list(ADVERSARIAL)[:5])
def test_an_adversarial_template_is_refused_when_saved_with_the_reason(alice, template):
    with pytest.raises(services.PromptError) as refused:
        services.prompt_create(owner=alice, name="Bomb", slug="bomb", version={**FIRST_VERSION, "template": template})
    assert refused.value.field == "template"
    assert ADVERSARIAL[template] in refused.value.message
    assert not Prompt.objects.filter(slug="bomb").exists()


def test_a_limit_that_depends_on_the_values_is_refused_at_render_time():
    template = "{% for i in range(n|int) %}{% for j in range(n|int) %}.{% endfor %}{% endfor %}"
    assert inspect_template(template) == ["n"]  # with a sample value it is harmless: saved
    assert render_user_turn(template, {"n": "3"}) == "." * 9
    with pytest.raises(TemplateLimitError, match="longer than"):
        render_user_turn(template, {"n": "100000"})


def test_the_output_is_capped():
    with pytest.raises(TemplateLimitError, match=f"{MAX_OUTPUT_CHARS:,}"):
        render_user_turn("{% for i in range(20) %}{{ text }}{% endfor %}", {"text": "y" * 10_000})


def test_text_methods_that_build_huge_text_are_unavailable():
    with pytest.raises(TemplateError, match="ljust"):
        render_user_turn("{{ 'x'.ljust(10**9) }}", {})
    assert render_user_turn("{{ text.upper() }} {{ text.split() | length }}", {"text": "a b"}) == "A B 2"


def test_ordinary_templates_still_render():
    template = ("{% for line in text.splitlines() %}- {{ line|trim|capitalize }}\n{% endfor %}"
                "{{ audience|default('everyone') ~ '!' }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%05.1f' % 3.14159 }}")
    assert render_user_turn(template, {"text": "one\ntwo"}) == "- One\n- Two\neveryone! 1024 ababab 003.1"


def test_a_runaway_render_is_stopped_at_the_time_limit_and_the_next_render_works(settings):
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.05  # ~900,000 steps take longer than this
    with pytest.raises(TemplateLimitError, match="took longer than 0.05 s"):
        render_user_turn("{% for i in range(900) %}{% for j in range(999) %}{% endfor %}{% endfor %}", {})
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 2
    assert render_user_turn("Hello {{ name }}", {"name": "Ann"}) == "Hello Ann"


def test_a_missing_variable_is_named_from_the_render_process():
    with pytest.raises(MissingVariablesError) as refused:
        render_user_turn("{{ a }} {{ b }}", {"a": "given"})
    assert refused.value.missing == ["b"]


@pytest.mark.django_db
def test_variables_are_computed_once_when_a_version_is_saved(alice, make_prompt, django_assert_num_queries):
    prompt = make_prompt(alice, versions=({**FIRST_VERSION, "template": "{{ b }} then {{ a }}"},))
    version = PromptVersion.objects.get(prompt=prompt)
    assert version.variables == ["b", "a"]
    with django_assert_num_queries(0):
        assert version.variables == ["b", "a"]  # a stored field: reading it parses nothing
