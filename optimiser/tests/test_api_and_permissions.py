"""The optimiser's API as the issue writes it, what it refuses (the issue's bad input), and who
may see, cancel and save an optimisation."""

import json

import pytest

from evals.models import CaseSelection
from optimiser.models import Candidate, Optimisation

pytestmark = pytest.mark.django_db


def post(client, path, body, token):
    return client.post(path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def get(client, path, token):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


OPTIMISE = {"version": 1, "split": "train", "scorers": [{"type": "json_equal"}], "budget": {"cases": 2000}}


def test_an_optimisation_is_started_and_read_back_in_the_issues_shapes(client, token, make_cases):
    make_cases()
    started = post(client, "/api/prompts/triage/optimise/", OPTIMISE, token)
    assert started.status_code == 202 and set(started.json()) == {"id"}
    optimisation = Optimisation.objects.get(pk=started.json()["id"])
    assert optimisation.status == "queued" and len(optimisation.case_ids) == 9
    assert len(optimisation.search_case_ids) == 6 and len(optimisation.check_case_ids) == 3
    assert not set(optimisation.search_case_ids) & set(optimisation.check_case_ids)
    read = get(client, f"/api/optimisations/{optimisation.pk}/", token).json()
    assert {"status", "done", "total", "candidates", "best"} <= set(read)
    assert read["status"] == "queued" and read["best"] == {"candidate": None, "version": None}
    cancelled = post(client, f"/api/optimisations/{optimisation.pk}/cancel/", {}, token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_the_split_is_the_same_for_the_same_version_and_cases(alice, triage_version, make_cases):
    from optimiser import services

    make_cases()
    first = services.optimisation_create(
        user=alice, version=triage_version, split="train", scorers=[{"type": "json_equal"}], budget={"minutes": 5}
    )
    Optimisation.objects.filter(pk=first.pk).update(status="finished")
    second = services.optimisation_create(
        user=alice, version=triage_version, split="train", scorers=[{"type": "json_equal"}], budget={"minutes": 5}
    )
    assert first.search_case_ids == second.search_case_ids and first.check_case_ids == second.check_case_ids


@pytest.mark.parametrize(
    "change, status, words",
    [
        ({"budget": {"cases": 0}}, 400, "from 1 to 20,000"),
        ({"budget": {"cases": 10_000_000}}, 400, "from 1 to 20,000"),
        ({"budget": {"minutes": 241}}, 400, "from 1 to 240"),
        ({"budget": {"cases": 5}}, 400, "one pass over the search and check parts takes 9"),
        ({"budget": {"cases": 10, "minutes": 5}}, 400, '{"cases": 1-20000} or {"minutes": 1-240}'),
        ({"split": "eval"}, 400, "held-out split is never searched on"),
        ({"model": "gpt-9"}, 400, "not a model served to you"),
        ({"scorers": [{"type": "telepathy"}]}, 400, "scorers"),
        ({"scorers": [{"type": "llm_judge", "prompt": "triage"}]}, 400, "llm_judge cannot score"),
        ({"version": 7}, 404, "version"),
    ],
)
def test_bad_input_is_refused_with_the_reason(client, token, make_cases, change, status, words):
    make_cases()
    answer = post(client, "/api/prompts/triage/optimise/", {**OPTIMISE, **change}, token)
    assert answer.status_code == status and words in answer.json()["error"], answer.json()
    assert not Optimisation.objects.exists()


def test_a_selection_with_no_cases_with_expected_answers_is_refused(client, alice, token, make_cases):
    make_cases()
    empty = CaseSelection.objects.create(owner=alice, name="nothing", filters={"q": "no ticket says this"})
    answer = post(
        client,
        "/api/prompts/triage/optimise/",
        {**{k: v for k, v in OPTIMISE.items() if k != "split"}, "selection": empty.pk},
        token,
    )
    assert answer.status_code == 400 and "the selection holds 0 approved cases" in answer.json()["error"]


def test_someone_elses_selection_is_no_selection(client, bob, token, make_cases):
    make_cases()
    bobs = CaseSelection.objects.create(owner=bob, name="bob's", filters={})
    body = {**{k: v for k, v in OPTIMISE.items() if k != "split"}, "selection": bobs.pk}
    answer = post(client, "/api/prompts/triage/optimise/", body, token)
    assert answer.status_code == 400 and "no such saved selection of yours" in answer.json()["error"]


def test_an_optimisation_started_twice_at_once_is_refused(client, token, make_cases, settings):
    make_cases()
    settings.OPTIMISER_MAX_QUEUED_PER_USER = 1
    assert post(client, "/api/prompts/triage/optimise/", OPTIMISE, token).status_code == 202
    again = post(client, "/api/prompts/triage/optimise/", OPTIMISE, token)
    assert again.status_code == 429 and "already have 1 optimisation queued or running" in again.json()["error"]
    assert again["Retry-After"]


def test_others_see_no_optimisation_of_yours_and_may_not_save_or_cancel_it(client, token, bob_token, make_cases):
    make_cases()
    started = post(client, "/api/prompts/triage/optimise/", OPTIMISE, token).json()["id"]
    for answer in (
        get(client, f"/api/optimisations/{started}/", bob_token),
        post(client, f"/api/optimisations/{started}/cancel/", {}, bob_token),
        post(client, f"/api/optimisations/{started}/save/", {}, bob_token),
    ):
        assert answer.status_code == 404
    assert Optimisation.objects.get(pk=started).status == "queued"
    page = client.get(f"/optimisations/{started}/")
    assert page.status_code == 302  # not logged in: to the login page


def test_bob_may_optimise_alices_prompt_but_only_an_editor_saves_a_version(client, bob, bob_token, make_cases):
    make_cases()
    started = post(client, "/api/prompts/triage/optimise/", OPTIMISE, bob_token)
    assert started.status_code == 202
    optimisation = Optimisation.objects.get(pk=started.json()["id"])
    best = Candidate.objects.create(
        optimisation=optimisation,
        position=1,
        kind="nearest",
        description="nearest 4 examples",
        status="scored",
        search_scored=6,
        search_passed=3,
        changes={"examples": {"k": 4, "balance": None}},
    )
    Optimisation.objects.filter(pk=optimisation.pk).update(status="finished", best=best)
    refused = post(client, f"/api/optimisations/{optimisation.pk}/save/", {}, bob_token)
    assert refused.status_code == 403 and "alice" in refused.json()["error"]


def test_saving_through_the_api_answers_the_new_version(client, alice, token, triage_version, make_cases):
    make_cases()
    optimisation = Optimisation.objects.get(
        pk=post(client, "/api/prompts/triage/optimise/", OPTIMISE, token).json()["id"]
    )
    early = post(client, f"/api/optimisations/{optimisation.pk}/save/", {}, token)
    assert early.status_code == 400 and "wait until the optimisation ends" in early.json()["error"]
    base = Candidate.objects.create(
        optimisation=optimisation,
        position=1,
        kind="base",
        description="the version as it is",
        status="scored",
        search_scored=6,
        search_passed=1,
    )
    Optimisation.objects.filter(pk=optimisation.pk).update(status="finished", best=base)
    nothing = post(client, f"/api/optimisations/{optimisation.pk}/save/", {}, token)
    assert nothing.status_code == 400 and "nothing new to save" in nothing.json()["error"]
    best = Candidate.objects.create(
        optimisation=optimisation,
        position=2,
        kind="rewrite",
        status="scored",
        description="instructions rewritten",
        search_scored=6,
        search_passed=4,
        checked=True,
        check_scored=3,
        check_passed=2,
        changes={"instructions": "Answer in JSON with team and urgent."},
    )
    Optimisation.objects.filter(pk=optimisation.pk).update(best=best)
    saved = post(client, f"/api/optimisations/{optimisation.pk}/save/", {}, token)
    assert saved.status_code == 201 and saved.json() == {"version": 2}
    version = triage_version.prompt.versions.get(number=2)
    assert version.instructions == "Answer in JSON with team and urgent."
    assert version.commit_message == (
        f"Optimised (optimisation #{optimisation.pk}): instructions rewritten; search 67%, check 67%"
    )
    read = get(client, f"/api/optimisations/{optimisation.pk}/", token).json()
    assert read["best"] == {"candidate": best.pk, "version": 2}
    assert {
        "id": best.pk,
        "description": "instructions rewritten",
        "search_score": 0.6667,
        "check_score": 0.6667,
    }.items() <= next(c for c in read["candidates"] if c["id"] == best.pk).items()


def test_the_page_shows_the_leaderboard_and_the_best(client, alice, token, make_cases):
    make_cases()
    optimisation = Optimisation.objects.get(
        pk=post(client, "/api/prompts/triage/optimise/", OPTIMISE, token).json()["id"]
    )
    Candidate.objects.create(
        optimisation=optimisation,
        position=1,
        kind="base",
        description="the version as it is",
        status="scored",
        search_scored=6,
        search_passed=1,
    )
    best = Candidate.objects.create(
        optimisation=optimisation,
        position=2,
        kind="nearest",
        status="scored",
        description="nearest 6 examples",
        search_scored=6,
        search_passed=5,
        checked=True,
        check_scored=3,
        check_passed=3,
        changes={"examples": {"k": 6, "balance": None}},
    )
    Candidate.objects.create(
        optimisation=optimisation,
        position=3,
        kind="rewrite",
        status="refused",
        description="instructions rewritten (1)",
        reason="the model wrote empty instructions",
    )
    Optimisation.objects.filter(pk=optimisation.pk).update(status="finished", best=best)
    client.force_login(alice)
    page = client.get(f"/optimisations/{optimisation.pk}/").content.decode()
    assert "nearest 6 examples" in page and "83 %" in page and "100 %" in page
    assert "the model wrote empty instructions" in page and "Save as new version" in page
    assert 'hx-trigger="every 1s"' not in page  # finished: no more polling
    form = client.get("/optimisations/new/?prompt=triage&version=1")
    assert form.status_code == 200 and b"Start optimising" in form.content
    version_page = client.get("/prompts/triage/versions/1/").content.decode()
    assert "/optimisations/new/?prompt=triage&version=1" in version_page


def test_a_budget_in_minutes_starts_no_candidate_the_last_ones_pace_says_would_pass_it(
    alice, triage_version, make_cases
):
    from optimiser import services
    from optimiser.runner import Search

    make_cases()
    optimisation = services.optimisation_create(
        user=alice, version=triage_version, split="train", scorers=[{"type": "json_equal"}], budget={"minutes": 1}
    )
    search = Search(optimisation)
    search.reserve = 9  # the check part (3 cases) for the best 3
    search.pace = 2.0  # seconds a case in the last candidate: 6 + 9 cases take 30 s
    assert search.fits(6)
    search.pace = 5.0  # 75 s
    assert not search.fits(6)


def test_the_form_starts_one_and_says_what_it_refuses(client, alice, make_cases):
    make_cases()
    client.force_login(alice)
    form = {
        "prompt": "triage",
        "version": "1",
        "cases_from": "train",
        "scorer": "json_equal",
        "budget": "0",
        "budget_unit": "cases",
    }
    refused = client.post("/optimisations/new/", form)
    assert refused.status_code == 400 and "from 1 to 20,000" in refused.content.decode()
    started = client.post("/optimisations/new/", {**form, "budget": "20", "budget_unit": "minutes"})
    optimisation = Optimisation.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/optimisations/{optimisation.pk}/"
    assert optimisation.budget == {"minutes": 20} and optimisation.scorers[0]["type"] == "json_equal"
    running = client.get(f"/optimisations/{optimisation.pk}/").content.decode()
    assert 'hx-trigger="every 1s"' in running and "Cancel" in running


def test_the_page_saves_the_best_and_starts_the_held_out_evaluation(client, alice, make_cases):
    from .conftest import TICKETS

    make_cases(TICKETS[:6])
    make_cases(TICKETS[6:], split="eval")
    client.force_login(alice)
    client.post(
        "/optimisations/new/",
        {
            "prompt": "triage",
            "version": "1",
            "cases_from": "train",
            "scorer": "json_equal",
            "budget": "20",
            "budget_unit": "minutes",
        },
    )
    optimisation = Optimisation.objects.get()
    best = Candidate.objects.create(
        optimisation=optimisation,
        position=1,
        kind="nearest",
        status="scored",
        description="nearest 2 examples",
        search_scored=4,
        search_passed=2,
        changes={"examples": {"k": 2, "balance": None}},
    )
    Optimisation.objects.filter(pk=optimisation.pk).update(status="finished", best=best)
    saved = client.post(f"/optimisations/{optimisation.pk}/save/").content.decode()
    assert "Saved as" in saved and "/prompts/triage/versions/2/" in saved and "Evaluate on held-out" in saved
    evaluated = client.post(f"/optimisations/{optimisation.pk}/evaluate/").content.decode()
    evaluation = Optimisation.objects.get().held_out_evaluation
    assert evaluation is not None and evaluation.case_filters["split"] == "eval"
    assert f"/evaluations/{evaluation.pk}/" in evaluated
