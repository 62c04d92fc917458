"""An evaluation decoded in batches by the tiny model, scored, stored with its progress; a
person's verdict overrides the scorers; two runs compare case by case."""

import pytest

from evals import selectors, services
from evals.models import EvaluationResult, FailureCase
from evals.runner import run_evaluation
from prompts import services as prompt_services

from .conftest import ORDER_VERSION

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("model_worker")]


def evaluate(user, version, scorers=({"type": "exact_match"},), **filters):
    evaluation = services.evaluation_create(
        user=user, version=version, model_name="", filters=filters, scorers=list(scorers)
    )
    run_evaluation(evaluation.pk)
    evaluation.refresh_from_db()
    return evaluation


def test_an_evaluation_stores_every_case_output_and_score(alice, order_version, make_cases, settings):
    settings.EVAL_BATCH_SIZE = 2
    cases = make_cases(5)
    make_cases(1, user=alice, split="eval")  # same input as the first: a duplicate, still evaluated
    evaluation = evaluate(alice, order_version, [{"type": "exact_match"}, {"type": "valid_json"}], split="train")
    assert (evaluation.status, evaluation.done, evaluation.total) == ("finished", 5, 5)
    results = list(evaluation.results.order_by("case_id"))
    assert [r.case_id for r in results] == [c.pk for c in cases]
    assert all(set(r.scores) == {"exact_match", "valid_json"} and r.completion_tokens for r in results)
    assert evaluation.passed == sum(r.passed for r in results) and evaluation.finished_at is not None


def test_batched_outputs_equal_one_at_a_time_under_greedy_decoding(alice, order_version, make_cases, settings):
    make_cases(4)
    settings.EVAL_BATCH_SIZE = 4
    batched = {r.case_id: r.output for r in evaluate(alice, order_version).results.all()}
    settings.EVAL_BATCH_SIZE = 1
    alone = {r.case_id: r.output for r in evaluate(alice, order_version).results.all()}
    assert batched == alone


def test_a_case_whose_variables_the_version_cannot_render_fails_alone(alice, order_prompt, make_cases):
    make_cases(2)
    v2 = prompt_services.version_create(
        prompt=order_prompt, author=alice, fields={**ORDER_VERSION, "template": "{{ order }} for {{ customer }}"}
    )
    evaluation = evaluate(alice, v2)
    assert evaluation.status == "finished" and evaluation.done == 2
    assert all("customer" in r.error and not r.passed for r in evaluation.results.all())


def test_a_cancel_requested_before_it_runs_stops_it_with_nothing_lost(alice, order_version, make_cases):
    make_cases(3)
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    services.evaluation_cancel(evaluation=evaluation, user=alice)
    run_evaluation(evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.status == "cancelled" and not evaluation.results.exists()


def test_a_verdict_overrides_the_scorers_and_can_become_the_expected_answer(alice, order_version, make_cases):
    make_cases(2)
    evaluation = evaluate(alice, order_version)
    result = evaluation.results.first()
    assert not result.passed
    services.result_verdict(result=result, user=alice, verdict="pass", write_back=True)
    result.refresh_from_db()
    evaluation.refresh_from_db()
    assert result.passed and result.verdict == "pass" and evaluation.passed == 1
    assert FailureCase.objects.get(pk=result.case_id).expected == result.output
    services.result_verdict(result=result, user=alice, verdict="")
    result.refresh_from_db()
    assert result.passed == result.scorer_passed


def test_the_comparison_counts_fixed_regressed_still_failing_and_still_passing(alice, order_version, make_cases):
    cases = make_cases(4)
    first = evaluate(alice, order_version)
    second = evaluate(alice, order_version)
    verdicts = {"first": ["pass", "pass", "fail", "fail"], "second": ["pass", "fail", "pass", "fail"]}
    for evaluation, key in ((first, "first"), (second, "second")):
        for case, verdict in zip(cases, verdicts[key]):
            services.result_verdict(
                result=EvaluationResult.objects.get(evaluation=evaluation, case=case), user=alice, verdict=verdict
            )
    comparison = selectors.comparison(first, second, user=alice)
    assert comparison["counts"] == {
        "fixed": 1,
        "regressed": 1,
        "still_failing": 1,
        "still_passing": 1,
        "only_one": 0,
        "unanswered": 0,
    }
    assert comparison["rows"][0]["kind"] == "regressed"  # the ones to look at first
    services.cases_mark_fixed(user=alice, cases=[r["case"] for r in comparison["rows"] if r["kind"] == "fixed"])
    assert FailureCase.objects.get(pk=cases[2].pk).status == "fixed"


def test_an_empty_case_set_and_a_full_queue_are_refused(alice, order_version, make_cases, settings):
    with pytest.raises(services.EvaluationError, match="no failure cases match"):
        services.evaluation_create(
            user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
        )
    make_cases(1)
    settings.EVAL_MAX_QUEUED_PER_USER = 2
    for _ in range(2):
        services.evaluation_create(
            user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
        )
    with pytest.raises(services.EvaluationError, match="already have 2"):
        services.evaluation_create(
            user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
        )


def test_an_llm_judge_scores_with_a_prompt_from_the_library(alice, order_version, make_cases):
    make_cases(2)
    prompt_services.prompt_create(
        owner=alice,
        name="Judge",
        slug="judge",
        version={
            "instructions": "Answer PASS or FAIL.",
            "template": "Expected {{ expected }}; got {{ actual }}. Verdict?",
            "max_new_tokens": 4,
        },
    )
    evaluation = evaluate(alice, order_version, [{"type": "llm_judge", "prompt": "judge", "threshold": 0.5}])
    assert evaluation.status == "finished", evaluation.error
    assert all("llm_judge" in r.scores for r in evaluation.results.all())


def test_the_cases_are_answered_by_the_model_workers_and_leave_nothing_behind(
    alice, order_version, make_cases, model_worker
):
    from chat.models import Conversation, Message

    make_cases(2)
    evaluation = evaluate(alice, order_version)
    assert evaluation.status == "finished" and evaluation.done == 2
    assert all(r.completion_tokens for r in evaluation.results.all())
    assert not Conversation.objects.filter(kind="evaluation").exists()  # its unlisted conversations are removed
    assert not Message.objects.exists()


ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "item": {"type": "string", "maxLength": 12},
        "quantity": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["item", "quantity"],
    "additionalProperties": False,
}


def test_a_version_with_an_output_format_is_evaluated_under_it_and_scored_by_its_schema(
    alice, order_prompt, order_version, make_cases
):
    """The tiny model's free answers are not JSON; under the version's schema every answer is,
    and the json_schema scorer (no schema given) checks against that same schema."""
    make_cases(3)
    scorers = [{"type": "valid_json"}, {"type": "json_schema"}]
    v2 = prompt_services.version_create(
        prompt=order_prompt,
        author=alice,
        fields={
            **ORDER_VERSION,
            "max_new_tokens": 64,
            "output_format": {"type": "json_schema", "schema": ORDER_SCHEMA},
        },
    )
    constrained = evaluate(alice, v2, scorers)
    assert constrained.status == "finished" and constrained.done == 3
    for result in constrained.results.all():
        assert not result.error and result.scores["json_schema"] == 1.0, (result.output, result.scores)
        assert set(__import__("json").loads(result.output)) == {"item", "quantity"}
    assert constrained.passed == 3
    with pytest.raises(services.EvaluationError, match="json_schema: give a schema"):
        services.evaluation_create(user=alice, version=order_version, model_name="", filters={}, scorers=scorers)
