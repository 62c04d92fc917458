"""A model worker that dies mid-evaluation (kill -9, out of memory) must not lower the pass rate in
silence: the replies it was writing are asked again (EVAL_CASE_RETRIES), a case still unanswered
after that is an error (left out of the pass rate), and the page and the API say how many.

The model worker here is a stand-in that answers each queued reply as the sweeper and a worker
would: the first tries of chosen cases fail as the sweeper fails a lapsed lease (worker_lost),
later tries complete with the expected answer. Deterministic, no threads."""

import pytest

from accounts.services import api_token_create
from chat import services as chat_services
from chat.models import Message
from evals import runner, services
from evals.models import Evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def lost_then_answered(monkeypatch):
    """lost_then_answered(lost_tries={order text: tries lost}): replies to those orders fail with
    worker_lost that many times; every other reply is the order's expected JSON."""
    tries: dict[str, int] = {}

    def install(lost_tries: dict[str, int]):
        real_request = chat_services.reply_request_unlisted

        def request_and_answer(**kwargs):
            reply = real_request(**kwargs)
            order = kwargs["messages"][-1]["content"].removeprefix("Order: ")
            tries[order] = tries.get(order, 0) + 1
            if tries[order] <= lost_tries.get(order, 0):
                Message.objects.filter(pk=reply.pk).update(
                    status=Message.Status.FAILED,
                    error_code=Message.ErrorCode.WORKER_LOST,
                    content='{"item',
                    error="The model worker writing this reply stopped (its lease lapsed).",
                )
            else:
                quantity = order.split()[0]
                Message.objects.filter(pk=reply.pk).update(
                    status=Message.Status.COMPLETE, content=f'{{"item": "apple", "quantity": {quantity}}}'
                )
            return reply

        monkeypatch.setattr(runner.chat_services, "reply_request_unlisted", request_and_answer)
        return tries

    return install


def evaluate(alice, order_version) -> Evaluation:
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    runner.run_evaluation(evaluation.pk)
    evaluation.refresh_from_db()
    return evaluation


def test_cases_whose_worker_was_lost_are_asked_again_and_pass(
    alice, make_cases, order_version, lost_then_answered, settings
):
    settings.EVAL_CASE_RETRIES = 2
    make_cases(4)
    tries = lost_then_answered({"2 apples": 1, "3 apples": 2})
    evaluation = evaluate(alice, order_version)
    assert evaluation.status == "finished"
    assert tries == {"2 apples": 2, "3 apples": 3, "4 apples": 1, "5 apples": 1}
    assert (evaluation.done, evaluation.passed, evaluation.errored, evaluation.retried) == (4, 4, 0, 3)
    assert evaluation.pass_rate == 1.0
    assert evaluation.model_errors_note == "3 replies were asked again after the model worker writing them stopped."


def test_a_case_lost_past_its_retries_is_an_error_left_out_of_the_pass_rate(
    client, alice, make_cases, order_version, lost_then_answered, settings
):
    settings.EVAL_CASE_RETRIES = 1
    make_cases(3)
    lost_then_answered({"2 apples": 5})
    evaluation = evaluate(alice, order_version)
    assert evaluation.status == "finished"
    assert (evaluation.done, evaluation.passed, evaluation.errored, evaluation.retried) == (3, 2, 1, 1)
    assert evaluation.pass_rate == 1.0  # 2 of the 2 the model answered: the lost one is no fail
    lost = evaluation.results.get(error_code="worker_lost")
    assert not lost.passed and "stopped" in lost.error

    client.force_login(alice)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "1 case was not answered by the model (errors, left out of the pass rate)" in page
    assert "1 reply was asked again after the model worker writing it stopped" in page
    assert "2 of 2 passed" in page and "badge badge--error" in page

    token = api_token_create(user=alice, name="ci")[1]
    answer = client.get(f"/api/evaluations/{evaluation.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert (answer["errored"], answer["retried"], answer["pass_rate"]) == (1, 1, 1.0)
    assert "not answered by the model" in answer["model_errors_note"]
    assert [r["error_code"] for r in answer["results"] if "error_code" in r] == ["worker_lost"]


def test_a_persons_verdict_on_an_unanswered_case_counts_it_again(
    alice, make_cases, order_version, lost_then_answered, settings
):
    settings.EVAL_CASE_RETRIES = 0
    make_cases(2)
    lost_then_answered({"2 apples": 1})
    evaluation = evaluate(alice, order_version)
    assert (evaluation.errored, evaluation.pass_rate) == (1, 1.0)
    services.result_verdict(result=evaluation.results.get(error_code="worker_lost"), user=alice, verdict="fail")
    evaluation.refresh_from_db()
    assert (evaluation.errored, evaluation.pass_rate) == (0, 0.5)


def test_an_unanswered_case_is_neither_fixed_nor_regressed_and_its_history_says_error(
    client, alice, make_cases, order_version, lost_then_answered, settings
):
    settings.EVAL_CASE_RETRIES = 0
    cases = make_cases(2)
    lost_then_answered({"2 apples": 1})
    with_error, answered = evaluate(alice, order_version), evaluate(alice, order_version)
    assert (with_error.errored, answered.errored) == (1, 0)
    client.force_login(alice)
    page = client.get(f"/evaluations/compare/?a={with_error.pk}&b={answered.pk}").content.decode()
    assert "1</strong> not answered by the model in a run" in page
    assert "<strong>0</strong> fixed" in page and "<strong>0</strong> regressed" in page
    history = client.get(cases[0].get_absolute_url()).content.decode()
    assert '<span class="badge badge--error">error</span>' in history
