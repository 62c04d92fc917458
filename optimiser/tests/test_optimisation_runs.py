"""An optimisation on the tiny model: its candidates answered by a real model worker and scored,
only ever on the cases it was given; cancel keeps what was measured; the budget bounds it; the
best saved is a normal version that says how it was found."""

import threading
import time

import pytest

from evals.models import Evaluation, FailureCase
from optimiser import candidates as planning
from optimiser import runner, services
from optimiser.models import Candidate, Optimisation
from optimiser.runner import run_optimisation

from .conftest import TICKETS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("model_worker")]
JSON_EQUAL = [{"type": "json_equal"}]


@pytest.fixture(autouse=True)
def short_rewrites(monkeypatch):
    monkeypatch.setattr(planning, "REWRITE_MAX_NEW_TOKENS", 24)  # the tiny model writes noise: keep it short


def optimise(user, version, **options):
    options = {"split": "train", "scorers": JSON_EQUAL, "budget": {"cases": 2000}, **options}
    optimisation = services.optimisation_create(user=user, version=version, **options)
    run_optimisation(optimisation.pk)
    optimisation.refresh_from_db()
    return optimisation


def test_no_candidate_is_ever_scored_on_or_shown_a_held_out_case_nor_itself(
    alice, triage_version, make_cases, monkeypatch
):
    train = make_cases(TICKETS[:7])
    held_out = make_cases([(f"held out {text}", team, urgent) for text, team, urgent in TICKETS[7:]], split="eval")
    read, shown = [], []
    real = runner.case_messages

    def recording(case, version, *, examples=None, **kwargs):
        messages = real(case, version, examples=examples, **kwargs)
        read.append(messages)
        shown.append((case.input_variables["ticket"], [example["input"] for example in examples or []]))
        return messages

    monkeypatch.setattr(runner, "case_messages", recording)
    optimisation = optimise(alice, triage_version)
    assert optimisation.status == "finished", optimisation.error
    assert set(optimisation.case_ids) == {case.pk for case in train}
    scored = {
        int(pk)
        for candidate in optimisation.candidates.all()
        for part in ("search", "check")
        for pk in candidate.outcomes.get(part, {})
    }
    assert scored == {case.pk for case in train}
    kinds = set(optimisation.candidates.filter(status="scored").values_list("kind", flat=True))
    assert {"base", "nearest", "fixed"} <= kinds
    everything_read = "\n".join(m["content"] for messages in read for m in messages)
    assert read and not any(case.input_variables["ticket"] in everything_read for case in held_out)
    # Leave-one-out: a case of the search part never sees itself as an example.
    assert any(examples for _, examples in shown)
    assert not any(f"Ticket: {ticket}" in examples for ticket, examples in shown)
    # Rewrites by the (tiny) model are tried and shown: scored, or refused with the reason.
    rewrites = list(optimisation.candidates.filter(kind="rewrite"))
    assert len(rewrites) == planning.REWRITES
    assert all(c.status == "scored" or (c.status == "refused" and c.reason) for c in rewrites)


def test_progress_counts_every_candidate_case_and_the_best_is_checked(alice, triage_version, make_cases):
    make_cases()
    optimisation = optimise(alice, triage_version)
    candidates = list(optimisation.candidates.all())
    assert optimisation.status == "finished" and optimisation.done == optimisation.total > 0
    measured = sum(c.search_scored + c.check_scored for c in candidates)
    assert measured == optimisation.done  # the tiny model answers every case (no errors)
    checked = [c for c in candidates if c.checked]
    assert 1 <= len(checked) <= planning.CHECKED and optimisation.best in checked
    assert all(c.check_scored == len(optimisation.check_case_ids) for c in checked)
    assert [c.position for c in candidates] == list(range(1, len(candidates) + 1))
    assert candidates[0].kind == "base" and candidates[1].description == "nearest 4 examples"


def test_cancel_keeps_what_was_measured(alice, triage_version, make_cases):
    make_cases()
    optimisation = services.optimisation_create(
        user=alice, version=triage_version, split="train", scorers=JSON_EQUAL, budget={"cases": 2000}
    )
    worker = threading.Thread(target=run_optimisation, args=(optimisation.pk,))
    worker.start()
    deadline = time.monotonic() + 120
    while not Candidate.objects.filter(optimisation=optimisation, kind="base", search_scored__gt=0).exists():
        assert time.monotonic() < deadline, "the base was never measured"
        time.sleep(0.05)
    services.optimisation_cancel(optimisation=optimisation, user=alice)
    worker.join(timeout=120)
    assert not worker.is_alive()
    optimisation.refresh_from_db()
    assert optimisation.status == "cancelled"
    base = optimisation.candidates.get(kind="base")
    assert base.search_scored >= 1 and optimisation.done >= base.search_scored
    assert optimisation.best is not None  # what was measured still proposes a best
    assert optimisation.candidates.filter(status="pending").exists()  # it stopped: the rest never ran


def test_a_budget_in_cases_stops_starting_candidates_that_would_pass_it(alice, triage_version, make_cases):
    make_cases()  # 9 cases: 6 to search on, 3 to check
    # The version itself (6) and one check (3) fit; a second candidate (6 more) would pass it.
    optimisation = optimise(alice, triage_version, budget={"cases": 14})
    assert optimisation.status == "finished"
    assert optimisation.done <= 14
    scored = optimisation.candidates.filter(search_scored__gt=0)
    assert list(scored.values_list("kind", flat=True)) == ["base"]
    skipped = optimisation.candidates.filter(status="skipped")
    assert skipped.exists() and all("budget" in c.reason for c in skipped)


def test_saving_the_best_makes_a_normal_version_that_says_how_it_was_found(alice, triage_version, make_cases):
    make_cases()
    optimisation = optimise(alice, triage_version)
    nearest = optimisation.candidates.get(description="nearest 4 examples")
    Optimisation.objects.filter(pk=optimisation.pk).update(best=nearest)  # whichever the tiny model preferred
    version = services.optimisation_save(optimisation=optimisation, user=alice)
    assert version.number == 2 and version.prompt == triage_version.prompt
    assert version.example_source == {"from": {"split": "train"}, "k": 4, "balance": None}
    assert version.instructions == triage_version.instructions and version.template == triage_version.template
    assert version.commit_message.startswith(
        f"Optimised (optimisation #{optimisation.pk}): nearest 4 examples; search "
    )
    optimisation.refresh_from_db()
    assert optimisation.saved_version == version
    assert services.optimisation_save(optimisation=optimisation, user=alice) == version  # once only

    fixed = optimisation.candidates.filter(kind="fixed").first()
    Optimisation.objects.filter(pk=optimisation.pk).update(best=fixed, saved_version=None)
    saved = services.optimisation_save(optimisation=optimisation, user=alice)
    assert len(saved.examples) == len(fixed.changes["examples"]) and not saved.example_source
    assert all(set(example) <= {"input", "output", "variables"} for example in saved.examples)


def test_the_held_out_evaluation_runs_the_saved_version_on_the_eval_split(alice, triage_version, make_cases):
    make_cases(TICKETS[:6])
    held_out = make_cases(TICKETS[6:], split="eval")
    optimisation = optimise(alice, triage_version)
    with pytest.raises(services.OptimisationError, match="save the best candidate"):
        services.evaluate_held_out(optimisation=optimisation, user=alice)
    Optimisation.objects.filter(pk=optimisation.pk).update(best=optimisation.candidates.get(position=2))
    services.optimisation_save(optimisation=optimisation, user=alice)
    optimisation.refresh_from_db()
    evaluation = services.evaluate_held_out(optimisation=optimisation, user=alice)
    assert isinstance(evaluation, Evaluation) and evaluation.prompt_version == optimisation.saved_version
    assert sorted(evaluation.case_ids) == sorted(case.pk for case in held_out)
    assert Optimisation.objects.get(pk=optimisation.pk).held_out_evaluation == evaluation


def test_a_case_made_private_stops_being_used(alice, bob, triage_version, make_cases):
    make_cases(TICKETS[:2])
    bobs = make_cases(TICKETS[2:5], user=bob, shared=True)
    optimisation = services.optimisation_create(
        user=alice, version=triage_version, split="train", scorers=JSON_EQUAL, budget={"cases": 2000}
    )
    FailureCase.objects.filter(pk=bobs[0].pk).update(shared=False)  # while it waits in the queue
    run_optimisation(optimisation.pk)
    optimisation.refresh_from_db()
    scored = {
        int(pk)
        for candidate in optimisation.candidates.all()
        for part in ("search", "check")
        for pk in candidate.outcomes.get(part, {})
    }
    assert bobs[0].pk in optimisation.case_ids and bobs[0].pk not in scored
    assert bobs[1].pk in scored


def test_a_rewrite_that_is_empty_or_enormous_is_refused_with_the_reason():
    assert planning.rewritten_instructions("```\nBe exact.\n```") == ("Be exact.", "")
    assert planning.rewritten_instructions("  \n") == ("", "the model wrote empty instructions")
    assert planning.rewritten_instructions("x" * 4001) == ("", "the rewrite is 4,001 characters long (at most 4,000)")


def test_a_search_part_smaller_than_k_plans_no_nearest_candidate_that_large(triage_version, make_cases):
    cases = make_cases(TICKETS[:5])
    described = [step["description"] for step in planning.planned(triage_version, cases, rewrite_model="m")]
    assert "nearest 4 examples" in described and "nearest 6 examples" not in described
    assert "8 fixed examples chosen for coverage" not in described


def test_a_version_with_a_schema_tries_free_output_after_the_first_two_nearest_examples(
    alice, triage_version, make_cases
):
    from prompts import services as prompt_services

    from .conftest import TRIAGE_VERSION

    schema = {
        "type": "object",
        "properties": {"team": {"enum": ["billing", "tech", "sales"]}, "urgent": {"type": "boolean"}},
        "required": ["team", "urgent"],
    }
    with_schema = prompt_services.version_create(
        prompt=triage_version.prompt,
        author=alice,
        fields={**TRIAGE_VERSION, "output_format": {"type": "json_schema", "schema": schema}},
    )
    kinds = [step["kind"] for step in planning.planned(with_schema, make_cases(), rewrite_model="m")]
    assert kinds[:6] == ["base", "nearest", "nearest", "format", "nearest", "nearest"]
    assert "format" not in [step["kind"] for step in planning.planned(triage_version, make_cases(), rewrite_model="m")]


def test_free_output_is_measured_with_the_best_nearest_examples(alice, triage_version, make_cases):
    from prompts import services as prompt_services

    from .conftest import TRIAGE_VERSION

    schema = {
        "type": "object",
        "properties": {"team": {"enum": ["billing", "tech", "sales"]}, "urgent": {"type": "boolean"}},
        "required": ["team", "urgent"],
    }
    with_schema = prompt_services.version_create(
        prompt=triage_version.prompt,
        author=alice,
        fields={**TRIAGE_VERSION, "output_format": {"type": "json_schema", "schema": schema}},
    )
    make_cases(TICKETS[:6])  # 4 to search on: nearest 2 only
    optimisation = optimise(alice, with_schema, scorers=[{"type": "json_schema"}], budget={"cases": 30})
    assert optimisation.status == "finished", optimisation.error
    free = optimisation.candidates.get(kind="format")
    assert free.status == "scored" and free.search_scored == 4
    assert free.changes == {"examples": {"k": 2, "balance": None}, "output_format": {"type": "text"}}
    assert free.description == "free output (no format) with nearest 2 examples"


def test_candidates_are_scored_on_a_sample_of_each_part_and_choose_examples_from_the_whole_search_part(
    alice, triage_version, make_cases, monkeypatch
):
    monkeypatch.setattr(planning, "SCORED_SEARCH_CASES", 3)
    monkeypatch.setattr(planning, "SCORED_CHECK_CASES", 2)
    make_cases()
    shown = []
    real = runner.case_messages

    def recording(case, version, *, examples=None, **kwargs):
        shown.extend(example["input"] for example in examples or [])
        return real(case, version, examples=examples, **kwargs)

    monkeypatch.setattr(runner, "case_messages", recording)
    optimisation = optimise(alice, triage_version)
    assert optimisation.status == "finished", optimisation.error
    assert len(optimisation.search_case_ids) > 3 and len(optimisation.check_case_ids) > 2
    for candidate in optimisation.candidates.filter(status="scored"):
        assert candidate.search_scored == 3
        assert candidate.check_scored in (0, 2)
    sampled = set(optimisation.search_case_ids[:3])
    tickets = {case.pk: case.input_variables["ticket"] for case in FailureCase.objects.all()}
    unsampled = [tickets[pk] for pk in optimisation.search_case_ids if pk not in sampled]
    assert any(ticket in example for ticket in unsampled for example in shown)  # the pool is the whole part
