"""A prompt version saved before the sampling rule (studio.llm.replies.sampling_checked) with values
now out of range (a temperature up to 5, up to 16 stop sequences, more tokens than the cap) keeps
answering after an upgrade in place: its replies bring the values into range, and its page says so."""

import pytest
from django.utils import timezone

from chat import selectors as chat_selectors
from chat import services as chat_services
from evals import services
from evals.runner import run_evaluation
from prompts.models import PromptVersion

from .conftest import ORDER_VERSION

STOPS = [f"<<stop {n}>>" for n in range(16)]


@pytest.fixture
def saved_before_the_rule(alice, order_prompt, settings):
    """Version 2 of order-json as an older studio stored it: built in the database directly, since
    today's checks refuse it."""
    settings.LLM_MAX_NEW_TOKENS_CAP = 16
    return PromptVersion.objects.create(
        prompt=order_prompt,
        number=2,
        instructions=ORDER_VERSION["instructions"],
        template=ORDER_VERSION["template"],
        variables=["order"],
        temperature=5.0,
        top_p=0.9,
        max_new_tokens=64,
        stop=STOPS,
        author=alice,
        created_at=timezone.now(),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_its_evaluation_answers_every_case_with_the_values_brought_into_range(alice, saved_before_the_rule, make_cases):
    make_cases(2)
    evaluation = services.evaluation_create(
        user=alice, version=saved_before_the_rule, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    run_evaluation(evaluation.pk)
    evaluation.refresh_from_db()
    results = list(evaluation.results.all())
    assert (evaluation.status, evaluation.done) == ("finished", 2)
    assert [r.error for r in results] == ["", ""]
    assert all(0 < r.completion_tokens <= 16 for r in results)  # the cap, not the 64 it was saved with


@pytest.mark.django_db
def test_a_chat_from_it_asks_for_a_temperature_of_2_the_first_4_stops_and_the_cap(bob, saved_before_the_rule):
    _, reply = chat_services.conversation_start_from_prompt(
        owner=bob, prompt_version=saved_before_the_rule, variables={"order": "2 apples"}
    )
    assert chat_selectors.generation_overrides(message=reply) == {
        "temperature": 2.0,
        "top_p": 0.9,
        "max_new_tokens": 16,
        "stop": tuple(STOPS[:4]),
    }


@pytest.mark.django_db
def test_its_page_says_what_its_replies_use_and_how_to_choose(client, alice, saved_before_the_rule):
    client.force_login(alice)
    page = client.get(saved_before_the_rule.get_absolute_url()).content.decode()
    assert (
        "Saved before the current sampling ranges: replies use temperature 2 (saved 5), 16 max new tokens (saved 64), "
        "4 of its 16 stop sequences. Save a new version to choose."
    ) in page
    assert saved_before_the_rule.parameters["stop"] == STOPS  # what was saved is still what it shows and exports


@pytest.mark.django_db
def test_a_version_within_the_ranges_says_nothing(client, alice, order_version):
    client.force_login(alice)
    assert (
        "Saved before the current sampling ranges" not in client.get(order_version.get_absolute_url()).content.decode()
    )
