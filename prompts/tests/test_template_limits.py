"""A template cannot freeze or exhaust the studio: what would be huge is refused before it is
computed, work and output are bounded, and rendering runs in a separate process with a time limit."""

import pytest

from prompts import services
from prompts.models import Prompt, PromptVersion
from prompts.rendering import (
    MissingVariablesError,
    TemplateError,
    TemplateLimitError,
    inspect_template,
    render_user_turn,
)
from studio.template_engine import MAX_OUTPUT_CHARS

from .conftest import FIRST_VERSION

# The findings, each reproduced from outside before the fix.
ADVERSARIAL = {
    "{{ 9**(9**8) }}": "digits",  # froze every page for two minutes (folded while compiling)
    "{{ 9**(9**6) }}": "digits",  # made the prompt's pages answer 500 for good
    "{{ 'x' * 10**9 }}": "characters",  # 18 s and 3.3 GB before it was refused
    "{{ range(100000)|join('x'*10000) }}": "characters",  # a 1 GB body through the render API
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}": "steps",  # a spinning thread
    "{{ 'x'|center(1000000000) }}": "characters",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}": "characters",
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
    template = (
        "{% for line in text.splitlines() %}- {{ line|trim|capitalize }}\n{% endfor %}"
        "{{ audience|default('everyone') ~ '!' }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%05.1f' % 3.14159 }}"
    )
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


def test_a_captured_block_is_bounded_like_every_other_text():
    # {% set %} … {% endset %} used to build 199,998,000 characters before anything refused it.
    with pytest.raises(TemplateLimitError, match="captured block"):
        render_user_turn(
            "{% set a %}{% for i in range(9999) %}{% for j in range(9999) %}xx{% endfor %}{% endfor %}"
            "{% endset %}{{ a|length }}",
            {},
        )
    with pytest.raises(TemplateLimitError, match="captures more than"):
        render_user_turn(
            "{% for i in range(999) %}{% set a %}{% for j in range(900) %}"
            + "x" * 100
            + "{% endfor %}{% endset %}{% endfor %}done",
            {},
        )
    with pytest.raises(TemplateLimitError, match="captured block"):
        render_user_turn(
            "{% macro m() %}{% for j in range(999) %}{{ x }}{% endfor %}{% endmacro %}{{ m() }}", {"x": "y" * 1000}
        )
    assert render_user_turn("{% set a %}Hello {{ name }}{% endset %}{{ a }}!", {"name": "Ann"}) == "Hello Ann!"


def test_a_person_flooding_the_render_processes_with_slow_templates_slows_only_themselves():
    """One render at a time per person, people served in turn: bob's quick render goes before
    alice's queued slow ones (it used to wait behind all of them)."""
    import threading
    import time

    from studio.sandbox import SandboxPool

    pool = SandboxPool(2)
    quick = {"op": "render", "template": "Hi {{ name }}", "variables": {"name": "Bob"}}
    slow = {
        "op": "render",
        "template": "{% for i in range(20) %}{{ (range(99999)|list|sort(reverse=True))|length }}{% endfor %}",
        "variables": {},
    }
    warm = [threading.Thread(target=pool.ask, args=(quick, 60), kwargs={"owner": f"warm{n}"}) for n in range(2)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    finished, lock = [], threading.Lock()

    def render(owner, request):
        pool.ask(request, 120, owner=owner)
        with lock:
            finished.append(owner)

    flood = [threading.Thread(target=render, args=("alice", slow)) for _ in range(6)]
    for thread in flood:
        thread.start()
    deadline = time.monotonic() + 60
    while not (pool.running.get("alice") == 1 and len(pool.waiting) == 5) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.running.get("alice") == 1 and len(pool.waiting) == 5  # alice holds one process, never two
    bob = threading.Thread(target=render, args=("bob", quick))
    bob.start()
    bob.join(120)
    for thread in flood:
        thread.join(300)
    assert finished.index("bob") <= 1 and finished.count("alice") == 6
