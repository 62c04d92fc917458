"""`GET /api/evaluations/<id>/` answers one page of results (it returned all 10,000 results, 1.5 MB,
in one answer), with the counts in the summary and links to the next page; the page's label reads
"pass rate" once the evaluation ended (it said "so far" forever)."""

import pytest

from accounts.services import api_token_create
from evals import services
from evals.models import EvaluationResult
from studio.jobs import JobStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_evaluation(alice, make_cases, order_version):
    cases = make_cases(120)
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    EvaluationResult.objects.bulk_create(
        [
            EvaluationResult(evaluation=evaluation, case=case, output="x", passed=n % 2 == 0, scorer_passed=n % 2 == 0)
            for n, case in enumerate(cases)
        ]
    )
    type(evaluation).objects.filter(pk=evaluation.pk).update(status=JobStatus.FINISHED, done=120, total=120, passed=60)
    evaluation.refresh_from_db()
    return evaluation


def get(client, token, path):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_the_api_answers_a_page_of_results_with_the_counts_and_the_next_page(client, alice, finished_evaluation):
    token = api_token_create(user=alice, name="ci")[1]
    path = f"/api/evaluations/{finished_evaluation.pk}/"
    first = get(client, token, path).json()
    assert len(first["results"]) == 50 and first["results_count"] == 120
    assert (first["page"], first["pages"], first["previous"]) == (1, 3, None)
    assert first["next"] == f"http://testserver{path}?page=2"
    assert (first["done"], first["passed"], first["pass_rate"], first["errored"]) == (120, 60, 0.5, 0)
    assert {"case", "output", "passed", "scores"} <= set(first["results"][0])  # what clients read before
    last = get(client, token, path + "?page=3").json()
    assert len(last["results"]) == 20 and last["next"] is None and last["previous"].endswith("?page=2")
    every = first["results"] + get(client, token, path + "?page=2").json()["results"] + last["results"]
    assert [r["case"] for r in every] == list(
        finished_evaluation.results.order_by("id").values_list("case_id", flat=True)
    )
    beyond = get(client, token, path + "?page=4")
    assert beyond.status_code == 404 and "there are 3" in beyond.json()["error"]
    assert get(client, token, path + "?page=two").status_code == 400


def test_the_label_says_so_far_only_while_the_evaluation_runs(client, alice, finished_evaluation):
    client.force_login(alice)
    page = client.get(finished_evaluation.get_absolute_url()).content.decode()
    assert "pass rate · 60 of 120 passed" in page and "so far" not in page
    type(finished_evaluation).objects.filter(pk=finished_evaluation.pk).update(status=JobStatus.RUNNING)
    page = client.get(finished_evaluation.get_absolute_url()).content.decode()
    assert "pass rate so far · 60 of 120 passed" in page
