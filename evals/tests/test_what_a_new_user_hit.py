"""What a new user hit in the loop: statuses that mean something, pages that show what changed,
exports that say what they left out, numbers that match what happens."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import api_token_create
from chat.models import Conversation, Message
from chat.services import message_append
from evals import selectors, services
from evals.models import Evaluation, EvaluationResult
from studio.jobs import JobStatus

pytestmark = pytest.mark.django_db


def test_wont_fix_cases_are_left_out_of_exports_evaluations_and_training_unless_asked(
    client, alice, carol, make_cases, order_version
):
    cases = make_cases(3)
    services.case_update(case=cases[0], user=alice, changes={"status": "wontfix"})
    services.case_update(case=cases[1], user=alice, changes={"status": "fixed"})
    used = {case.pk for case in selectors.cases_for(user=alice, filters={})}
    assert used == {cases[1].pk, cases[2].pk}
    assert {c.pk for c in selectors.cases_for(user=alice, filters={"status": "wontfix"})} == {cases[0].pk}
    assert {c.pk for c in selectors.cases_for(user=alice, filters={"status": "any"})} == {c.pk for c in cases}
    client.force_login(alice)
    exported = b"".join(client.get("/cases/export/?format=sft").streaming_content).decode()
    assert exported.count("\n") == 2 and cases[0].input_variables["order"] not in exported
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    assert set(evaluation.case_ids) == {cases[1].pk, cases[2].pk}
    from finetune import services as finetune_services

    trained, _ = finetune_services.cases_for_job(user=carol, prompt=order_version.prompt, filters={})
    assert cases[0].pk not in set(trained.values_list("pk", flat=True))
    page = client.get("/evaluations/new/").content.decode()
    assert "open and fixed cases (“won&#x27;t fix” ones only when you choose that status)" in page


def test_saving_a_status_updates_the_header_badge_at_once(client, alice, make_cases):
    case = make_cases(1)[0]
    client.force_login(alice)
    answer = client.post(
        case.get_absolute_url(),
        {"expected": case.expected, "status": "wontfix", "split": "train"},
        headers={"HX-Request": "true"},
    )
    body = answer.content.decode()
    assert 'id="case-status-badge"' in body and 'hx-swap-oob="true"' in body and "won&#x27;t fix" in body


def test_the_evaluation_form_ticks_nothing_and_asks_for_a_scorer(client, alice, make_cases):
    make_cases(1)
    client.force_login(alice)
    page = client.get("/evaluations/new/?prompt=order-json").content.decode()
    assert not re.search(r'name="scorer" value="[a-z_]+" checked', page)
    refused = client.post("/evaluations/new/", {"prompt": "order-json"})
    assert refused.status_code == 400 and "tick at least one scorer" in refused.content.decode()
    client.post("/evaluations/new/", {"prompt": "order-json", "scorer": ["json_equal", "contains"]})
    assert [s["type"] for s in Evaluation.objects.get().scorers] == ["json_equal", "contains"]


def finished_evaluation(user, version, cases, outputs=None):
    evaluation = Evaluation.objects.create(
        prompt_version=version,
        model_name="m",
        created_by=user,
        scorers=[{"type": "exact_match", "threshold": 1}],
        status=JobStatus.FINISHED,
        total=len(cases),
        done=len(cases),
    )
    for n, case in enumerate(cases):
        EvaluationResult.objects.create(evaluation=evaluation, case=case, output=(outputs or {}).get(n, "x"))
    return evaluation


def test_a_verdict_refreshes_the_pass_rate_above_the_table(client, alice, make_cases, order_version):
    cases = make_cases(2)
    evaluation = finished_evaluation(alice, order_version, cases)
    client.force_login(alice)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert 'hx-trigger="evaluation-changed from:body"' in page and "0 of 2 passed" in page
    result = evaluation.results.first()
    answer = client.post(
        f"/evaluations/{evaluation.pk}/results/{result.pk}/verdict/",
        {"verdict": "pass"},
        headers={"HX-Request": "true"},
    )
    assert answer["HX-Trigger"] == "evaluation-changed"
    summary = client.get(f"/evaluations/{evaluation.pk}/progress/").content.decode()
    assert "1 of 2 passed" in summary


def test_verdict_controls_are_shown_only_to_who_may_use_them(client, alice, bob, make_cases, order_version):
    evaluation = finished_evaluation(alice, order_version, make_cases(2))
    client.force_login(bob)
    assert "mark pass" not in client.get(evaluation.get_absolute_url()).content.decode()
    client.force_login(alice)
    assert "mark pass" in client.get(evaluation.get_absolute_url()).content.decode()


def test_comparison_badges_read_as_words(client, alice, make_cases, order_version):
    cases = make_cases(2)
    first, second = finished_evaluation(alice, order_version, cases), finished_evaluation(alice, order_version, cases)
    client.force_login(alice)
    page = client.get(f"/evaluations/compare/?a={first.pk}&b={second.pk}").content.decode()
    assert "still failing</span>" in page and "stillfailing" not in page


def test_dpo_exports_say_what_they_leave_out_and_never_prefer_an_answer_to_itself(
    client, alice, order_version, make_cases
):
    make_cases(1)  # actual "apples", expected JSON: a real preference pair
    services.cases_create(
        user=alice,
        rows=[
            {"prompt": "order-json", "input": {"order": "no actual"}, "expected": "e"},
            {"prompt": "order-json", "input": {"order": "same"}, "actual": " same answer ", "expected": "same answer"},
        ],
        source="api",
    )
    token = api_token_create(user=alice, name="ci")[1]
    answer = client.get("/api/failure-cases/export/?format=dpo", HTTP_AUTHORIZATION=f"Bearer {token}")
    lines = [json.loads(line) for line in b"".join(answer.streaming_content).decode().splitlines()]
    assert len(lines) == 1 and all(line["chosen"].strip() != line["rejected"].strip() for line in lines)
    assert answer["X-Studio-Left-Out-No-Actual"] == "1" and answer["X-Studio-Left-Out-Same-Answer"] == "1"
    client.force_login(alice)
    page = client.get("/cases/").content.decode()
    assert (
        "DPO leaves out 1 without the model&#x27;s actual answer and 1 whose actual answer equals the expected one"
        in page
    )


@pytest.mark.django_db(transaction=True)
def test_evaluation_progress_counts_each_case_as_it_finishes(
    alice, make_cases, order_version, model_worker, settings, monkeypatch
):
    from evals import runner

    settings.EVAL_BATCH_SIZE = 8
    make_cases(3)
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    counted = []
    real_progress = runner.job_progress

    def spy(job, *, done=None, **fields):
        if done is not None:
            counted.append(done)
        return real_progress(job, done=done, **fields)

    monkeypatch.setattr(runner, "job_progress", spy)
    runner.run_evaluation(evaluation.pk)
    assert [n for n in counted if n > 0] == [1, 2, 3]  # not 3 at once when a batch of 8 came back


def test_the_fine_tune_estimate_counts_the_pauses_for_chat_and_says_how_sure_it_is(
    carol, alice, order_version, settings, monkeypatch
):
    import os

    from finetune import services as finetune_services

    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # the machine's load is not what is measured

    config = {"epochs": 1.0, "batch_size": 4, "max_length": 512, "lora_rank": 16, "method": "lora", "device": "cpu"}
    quiet = finetune_services.job_estimate(token_count=30_000, config=config, examples=10)
    assert "rule of thumb" in quiet["basis"] and quiet["seconds_low"] < quiet["seconds"] < quiet["seconds_high"]
    conversation = Conversation.objects.create(owner=alice, title="busy")
    now = timezone.now()
    reply = message_append(
        conversation=conversation,
        role="assistant",
        content="x",
        status="complete",
        finished_at=now - timedelta(minutes=5),
    )
    Message.objects.filter(pk=reply.pk).update(created_at=now - timedelta(minutes=35))
    busy = finetune_services.job_estimate(token_count=30_000, config=config, examples=10)
    assert 0.45 < busy["chat_share"] < 0.55 and busy["training_s"] > 1.8 * quiet["training_s"]  # the steps pause


def test_the_registry_says_which_train_loss_it_shows(client, carol, order_version):
    from finetune.models import FineTunedModel

    FineTunedModel.objects.create(
        name="m1",
        base_model="b",
        data_hash="x",
        size_bytes=1,
        metrics={"train_loss": 0.216, "last_train_loss": 0.084, "last_epoch_train_loss": 0.1},
    )
    client.force_login(carol)
    page = client.get("/fine-tunes/").content.decode()
    assert "train loss, last step 0.084" in page and "mean of the last epoch 0.100" in page
