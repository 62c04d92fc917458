"""The training data: rendered with the base model's chat template, instructions as system, the
cases the launching staff member may see; counts, an estimate and warnings before launch."""

import pytest

from evals import services as case_services
from evals.models import FailureCase
from finetune import services

pytestmark = pytest.mark.django_db


def test_rows_are_prompt_and_completion_messages_with_the_versions_instructions(carol, order_prompt, cases):
    planned = services.job_plan(
        user=carol, prompt=order_prompt, filters={}, objective="sft", hyperparameters={}, method="lora"
    )
    assert planned["example_count"] == 9  # the train split only, by default
    first = planned["rows"][0]
    assert first["prompt"] == [
        {"role": "system", "content": "Reply with JSON only."},
        {"role": "user", "content": "Order: 1 pears"},
    ]
    assert first["completion"] == [{"role": "assistant", "content": '{"item": "pear", "quantity": 1}'}]
    text = planned["preview"][0]["text"]
    assert text.startswith("<|im_start|>system\nReply with JSON only.<|im_end|>")  # the model's own template
    assert '<|im_start|>assistant\n{"item": "pear", "quantity": 1}<|im_end|>' in text
    assert planned["token_count"] > 9 * 20 and planned["estimate"]["memory_bytes"] > 0
    assert planned["estimate"]["seconds"] > 0 and planned["config"]["lora_rank"] == 16
    assert any("fine-tuning usually pays off" in warning for warning in planned["warnings"])


def test_dpo_rows_prefer_the_expected_answer_to_the_actual_one(carol, order_prompt, cases):
    rows = services.job_plan(
        user=carol, prompt=order_prompt, filters={"split": "eval"}, objective="dpo", hyperparameters={}, method="lora"
    )["rows"]
    assert len(rows) == 3 and rows[0]["chosen"][0]["content"].startswith('{"item"')
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "pears"}]


def test_training_uses_only_cases_the_launching_staff_member_may_see(carol, alice, order_prompt, cases):
    case_services.cases_create(
        user=alice,
        rows=[{"prompt": "order-json", "input": {"order": "private"}, "expected": "mine"}],
        source="api",
        shared=False,
    )
    cases_seen, _ = services.cases_for_job(user=carol, prompt=order_prompt, filters={})
    assert FailureCase.objects.filter(shared=False).count() == 1
    assert all(case.shared for case in cases_seen) and cases_seen.count() == 9


def test_bad_hyperparameters_and_methods_are_refused_by_field(carol, order_prompt, cases):
    for raw, field in (
        ({"epochs": "many"}, "epochs"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"lora_rank": 2.5}, "lora_rank"),
        ({"epochs": "nan"}, "epochs"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rate": 5}, "learning_rate"),
        ({"target_modules": "q_proj;drop"}, "target_modules"),
    ):
        with pytest.raises(services.FineTuneError) as refused:
            services.job_create(user=carol, name="", prompt_slug="order-json", filters={}, hyperparameters=raw)
        assert refused.value.field == field
    with pytest.raises(services.FineTuneError) as refused:  # on this CPU machine
        services.job_create(user=carol, name="", prompt_slug="order-json", filters={}, method="qlora")
    assert refused.value.field == "method"
    with pytest.raises(services.FineTuneError) as refused:
        services.job_create(
            user=carol, name="", prompt_slug="order-json", filters={}, hyperparameters={"lora_dropout": 1.5}
        )
    assert refused.value.field == "lora_dropout"  # the field the training settings name, not one read from words


def test_a_job_needs_staff_a_prompt_and_cases(alice, carol, order_prompt):
    with pytest.raises(services.NotStaff):
        services.job_create(user=alice, name="", prompt_slug="order-json", filters={})
    with pytest.raises(services.FineTuneError, match="prompt"):
        services.job_create(user=carol, name="", prompt_slug="", filters={})
    with pytest.raises(services.FineTuneError, match="no training examples"):
        services.job_create(user=carol, name="", prompt_slug="order-json", filters={})


def test_the_launch_form_shows_the_plan_live(client, carol, order_prompt, cases):
    client.force_login(carol)
    html = client.post("/fine-tunes/plan/", {"prompt": "order-json"}, headers={"HX-Request": "true"}).content.decode()
    assert "9</strong> examples" in html and "as the model sees them" in html and "&lt;|im_start|&gt;" in html
    page = client.get("/fine-tunes/new/").content.decode()
    assert "Passes over the training cases" in page and 'placeholder="0.0002"' in page
