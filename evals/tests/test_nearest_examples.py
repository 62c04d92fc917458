"""Examples chosen per input: a version's few-shot examples are the k cases most like the input,
never the case answered, never a held-out case unless a chosen selection holds it, recorded on
every reply and result. Personas: alice owns "triage" and its cases; bob is another user."""

import pytest

from chat import selectors as chat_selectors
from chat import services as chat_services
from evals import services
from evals.models import CaseEmbedding, CaseSelection, FailureCase
from evals.nearest_examples import embed_cases
from prompts import services as prompt_services
from prompts.api import version_json
from prompts.examples import examples_for, source_text

pytestmark = pytest.mark.django_db

TRIAGE = {"instructions": "Name the team for the ticket.", "template": "Ticket: {{ ticket }}", "max_new_tokens": 8}
# Three topics whose nearest neighbours are known: fruit, vehicles, weather.
TICKETS = [
    ("I want to buy apples and pears", "grocer"),
    ("Bananas and oranges for the fruit bowl", "grocer"),
    ("Fresh strawberries and cherries please", "grocer"),
    ("My car engine will not start", "garage"),
    ("The truck needs new tyres and brakes", "garage"),
    ("Heavy rain and thunderstorms tomorrow", "weather"),
    ("Snow and freezing wind this weekend", "weather"),
]


@pytest.fixture
def triage(alice):
    return prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(TRIAGE))


def cases(user, rows, split="train", shared=True, prompt="triage"):
    return services.cases_create(
        user=user,
        source=FailureCase.Source.API,
        shared=shared,
        rows=[
            {"prompt": prompt, "version": 1, "input": {"ticket": text}, "expected": team, "split": split}
            for text, team in rows
        ],
    )


def nearest_version(triage, alice, **source):
    return prompt_services.version_create(
        prompt=triage, author=alice, fields={**TRIAGE, "examples": {"from": {"split": "train"}, "k": 3, **source}}
    )


def test_the_examples_are_the_cases_most_like_the_input(alice, triage):
    made = cases(alice, TICKETS)
    version = nearest_version(triage, alice)
    examples, ids = examples_for(version, user=alice, variables={"ticket": "Can I order some grapes and melons?"})
    assert set(ids) == {c.pk for c in made[:3]}  # the three fruit tickets
    assert [e["output"] for e in examples] == ["grocer"] * 3
    assert examples[0]["input"].startswith("Ticket: ")  # through the version's template
    _, ids = examples_for(version, user=alice, text="Rain is forecast with storms")
    assert ids[-1] in {made[5].pk, made[6].pk}  # the nearest is last, beside the question


def test_the_case_answered_is_never_its_own_example(alice, triage):
    made = cases(alice, TICKETS)
    version = nearest_version(triage, alice, k=6)
    answered = made[0]
    _, ids = examples_for(version, user=alice, variables=answered.input_variables, exclude_case_ids=[answered.pk])
    assert answered.pk not in ids and len(ids) == 6
    # Nor any case with the same input (a chat asking exactly a case's question).
    _, ids = examples_for(version, user=alice, variables={"ticket": TICKETS[3][0]})
    assert made[3].pk not in ids


def test_a_held_out_case_is_never_an_example_unless_a_chosen_selection_holds_it(alice, triage):
    cases(alice, TICKETS[3:])
    held_out = cases(alice, [("Apples, pears and plums", "grocer")], split="eval")[0]
    version = nearest_version(triage, alice, k=4)
    _, ids = examples_for(version, user=alice, variables={"ticket": "apples and pears"})
    assert held_out.pk not in ids
    selection = CaseSelection.objects.create(owner=alice, name="everything", filters={"prompt": "triage"})
    chosen = prompt_services.version_create(
        prompt=triage, author=alice, fields={**TRIAGE, "examples": {"from": {"selection": selection.pk}, "k": 4}}
    )
    _, ids = examples_for(chosen, user=alice, variables={"ticket": "apples and pears"})
    assert ids[-1] == held_out.pk


def test_balance_keeps_at_most_that_many_examples_with_one_expected_answer(alice, triage):
    cases(alice, TICKETS)
    version = nearest_version(triage, alice, k=3, balance=1)
    examples, _ = examples_for(version, user=alice, variables={"ticket": "apples, bananas and cherries"})
    assert sorted(e["output"] for e in examples) == ["garage", "grocer", "weather"]


def test_private_cases_are_examples_only_for_their_author(alice, bob, triage):
    mine = cases(alice, [("apples and pears", "grocer")], shared=False)[0]
    cases(alice, TICKETS[3:])
    version = nearest_version(triage, alice, k=2)
    assert mine.pk in examples_for(version, user=alice, variables={"ticket": "pears"})[1]
    assert mine.pk not in examples_for(version, user=bob, variables={"ticket": "pears"})[1]
    FailureCase.objects.filter(pk=mine.pk).update(shared=False, created_by=bob)  # no longer alice's
    assert mine.pk not in examples_for(version, user=alice, variables={"ticket": "pears"})[1]


def test_a_template_of_several_variables_embeds_their_values(alice):
    fields = {"template": "From {{ customer }}: {{ ticket }}", "examples": []}
    prompt = prompt_services.prompt_create(owner=alice, name="Two", slug="two", version=fields)
    made = services.cases_create(
        user=alice,
        source=FailureCase.Source.API,
        shared=True,
        rows=[
            {"prompt": "two", "version": 1, "input": {"customer": "Ann", "ticket": text}, "expected": team}
            for text, team in TICKETS
        ],
    )
    version = prompt_services.version_create(
        prompt=prompt, author=alice, fields={**fields, "examples": {"from": {"split": "train"}, "k": 1}}
    )
    examples, ids = examples_for(version, user=alice, variables={"customer": "Bo", "ticket": "my truck's brakes"})
    assert ids == [made[4].pk] and examples[0]["input"] == f"From Ann: {TICKETS[4][0]}"


def test_case_vectors_are_computed_once_and_again_when_the_input_changes(alice, triage):
    made = cases(alice, TICKETS[:2])
    assert embed_cases([c.pk for c in made]) == 2
    assert embed_cases([c.pk for c in made]) == 0 and CaseEmbedding.objects.count() == 2
    made[0].input_variables = {"ticket": "a different question"}
    made[0].save()
    assert embed_cases([c.pk for c in made]) == 1


def test_every_reply_records_the_cases_it_read(alice, triage):
    made = cases(alice, TICKETS)
    version = nearest_version(triage, alice, k=2)
    conversation, reply = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"ticket": "the car engine and the truck tyres"}
    )
    assert set(reply.example_cases) == {made[3].pk, made[4].pk}
    history = chat_selectors.chat_history_before(message=reply)
    assert [m["content"] for m in history if m["role"] == "assistant"] == ["garage", "garage"]
    assert history[-1]["content"] == "Ticket: the car engine and the truck tyres"


def test_fixed_examples_behave_as_before(alice, triage):
    version = prompt_services.version_create(
        prompt=triage, author=alice, fields={**TRIAGE, "examples": [{"input": "Ticket: x", "output": "grocer"}]}
    )
    assert examples_for(version, user=alice, variables={"ticket": "y"}) == (
        [{"input": "Ticket: x", "output": "grocer"}],
        [],
    )


def test_the_source_round_trips_through_the_api_export_and_import(alice, triage):
    cases(alice, TICKETS)
    version = nearest_version(triage, alice, balance=2)
    source = {"from": {"split": "train"}, "k": 3, "balance": 2}
    assert version_json(version)["examples"] == source
    assert source_text(source) == (
        "the 3 cases most like the input, from the train split, at most 2 with the same expected answer"
    )
    exported = prompt_services.prompt_export(triage)
    exported["prompt"]["slug"] = "triage-copy"
    copy = prompt_services.prompt_import(data=exported, owner=alice)
    assert copy.versions.get(number=2).example_source == source and copy.versions.get(number=2).examples == []


@pytest.mark.parametrize(
    "source, field",
    [
        ({"from": {"split": "train"}, "k": 0}, "examples.k"),
        ({"from": {"split": "train"}, "k": 50}, "examples.k"),
        ({"from": {"split": "train"}, "k": 2, "balance": 3}, "examples.balance"),
        ({"from": {"split": "eval"}}, "examples.from.split"),
        ({"from": {"selection": 999999}}, "examples.from.selection"),
        ({"from": {}}, "examples.from"),
    ],
)
def test_a_bad_source_is_refused_naming_the_field(alice, triage, source, field):
    with pytest.raises(prompt_services.PromptError) as refused:
        prompt_services.version_create(prompt=triage, author=alice, fields={**TRIAGE, "examples": source})
    assert refused.value.field == field


def test_a_selection_is_refused_when_it_is_not_yours_or_holds_no_case_of_the_prompt(alice, bob, triage):
    theirs = CaseSelection.objects.create(owner=bob, name="bob's", filters={})
    empty = CaseSelection.objects.create(owner=alice, name="nothing", filters={"q": "no such words"})
    cases(alice, TICKETS)
    for selection in (theirs, empty):
        with pytest.raises(prompt_services.PromptError) as refused:
            prompt_services.version_create(
                prompt=triage, author=alice, fields={**TRIAGE, "examples": {"from": {"selection": selection.pk}}}
            )
        assert refused.value.field == "examples.from.selection"


def test_fewer_cases_than_k_uses_what_there_is(alice, triage):
    made = cases(alice, TICKETS[:2])
    version = nearest_version(triage, alice, k=6)
    assert sorted(examples_for(version, user=alice, text="fruit")[1]) == [c.pk for c in made]
