"""Examples chosen per input as people see them: chosen on the version form, described on the
version page and in the diff, and named on each evaluation result (linked to the case, or
"private"), in the evaluations API too. The evaluation never shows a case itself as its example."""

import pytest

from accounts.services import api_token_create
from evals import services
from evals.models import CaseSelection, FailureCase
from evals.runner import run_evaluation
from prompts import services as prompt_services

from .test_nearest_examples import TICKETS, TRIAGE, cases


@pytest.fixture
def triage(alice):
    return prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(TRIAGE))


def form(**fields):
    return {
        "template": TRIAGE["template"],
        "commit_message": "nearest",
        "output_type": "text",
        "output_spec": "",
        **fields,
    }


@pytest.mark.django_db
def test_the_form_saves_examples_chosen_per_input_and_the_pages_describe_them(client, alice, triage):
    cases(alice, TICKETS[:2])
    client.force_login(alice)
    page = client.get("/prompts/triage/versions/new/").content.decode()
    assert "chosen per input" in page and "held-out (eval) cases" not in page.split("example_from")[0]
    response = client.post(
        "/prompts/triage/versions/new/",
        form(example_choice="nearest", example_from="split:train", example_k="4", example_balance="2"),
    )
    assert response.status_code == 302
    version = triage.versions.get(number=2)
    assert version.example_source == {"from": {"split": "train"}, "k": 4, "balance": 2} and version.examples == []
    page = client.get("/prompts/triage/versions/2/").content.decode()
    assert "The 4 cases most like the input, from the train split, at most 2 with the same expected answer." in page
    assert "2 cases to choose from for you now: fewer than k" in page
    diff = client.get("/prompts/triage/diff/?from=1&to=2").content.decode()
    assert "Chosen per input: the 4 cases most like the input" in diff
    # Editing it again keeps the choice on the form.
    assert 'value="nearest" checked' in client.get("/prompts/triage/versions/new/").content.decode()


@pytest.mark.django_db
def test_the_form_names_a_bad_k_and_offers_only_your_selections(client, alice, bob, triage):
    CaseSelection.objects.create(owner=alice, name="mine", filters={})
    CaseSelection.objects.create(owner=bob, name="bobs", filters={})
    client.force_login(alice)
    page = client.get("/prompts/triage/versions/new/").content.decode()
    assert "your selection “mine”" in page and "bobs" not in page
    response = client.post("/prompts/triage/versions/new/", form(example_choice="nearest", example_k="50"))
    assert response.status_code == 400 and "examples.k" in response.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_each_result_names_its_examples_never_itself(client, alice, bob, triage):
    made = cases(alice, TICKETS)
    version = prompt_services.version_create(
        prompt=triage, author=alice, fields={**TRIAGE, "examples": {"from": {"split": "train"}, "k": 2}}
    )
    evaluation = services.evaluation_create(
        user=alice, version=version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    run_evaluation(evaluation.pk)
    results = list(evaluation.results.order_by("case_id"))
    assert len(results) == len(made)
    assert all(len(r.example_cases) == 2 and r.case_id not in r.example_cases for r in results)
    fruit = {c.pk for c in made[:3]}
    assert set(results[0].example_cases) <= fruit  # a fruit ticket's examples are the other fruit tickets
    token = api_token_create(user=alice, name="ci")[1]
    answer = client.get(f"/api/evaluations/{evaluation.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert answer["results"][0]["example_cases"] == results[0].example_cases
    # One example made private by its author (bob now): named "private" to alice, unlinked.
    hidden = results[0].example_cases[0]
    FailureCase.objects.filter(pk=hidden).update(shared=False, created_by=bob)
    client.force_login(alice)
    page = client.get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert f'href="/cases/{results[0].example_cases[1]}/">#' in page and "examples: private" in page


@pytest.mark.django_db
def test_a_playground_run_names_the_cases_it_read(client, alice, triage):
    from chat import services as chat_services
    from chat.models import Conversation

    made = cases(alice, TICKETS)
    version = prompt_services.version_create(
        prompt=triage, author=alice, fields={**TRIAGE, "examples": {"from": {"split": "train"}, "k": 1}}
    )
    conversation, reply = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"ticket": "snow and wind"}, kind=Conversation.Kind.PLAYGROUND
    )
    client.force_login(alice)
    page = client.get(f"/prompts/triage/playground/runs/{conversation.pk}/").content.decode()
    assert reply.example_cases == [made[6].pk] and f'href="/cases/{made[6].pk}/">#{made[6].pk}</a>' in page
