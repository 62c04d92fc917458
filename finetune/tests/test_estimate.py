"""The time estimate counts what a run really costs: starting the training process, loading the
model, tokenizing and saving (measured on this machine's last jobs, else a conservative
calibration), not only the training steps (a 9 s estimate for a 136 s run)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.serving import registry as chat_registry
from finetune import services
from finetune.models import FineTuneJob

pytestmark = pytest.mark.django_db

CONFIG = {"epochs": 1.0, "batch_size": 4, "max_length": 512, "lora_rank": 16, "method": "lora", "device": "cpu"}


def finished_job(order_prompt, carol, *, name, seconds, tokens_seen, tokens_per_s):
    end = timezone.now()
    return FineTuneJob.objects.create(
        name=name,
        base_model=chat_registry.base_model_name(),
        prompt=order_prompt,
        created_by=carol,
        hyperparameters={},
        status="finished",
        device="cpu",
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
        tokens_seen=tokens_seen,
        tokens_per_s=tokens_per_s,
    )


def test_a_tiny_run_is_never_estimated_below_the_start_up_cost_measured_here(carol, order_prompt):
    # 136 s, of which 900 tokens at 100 tokens/s: 9 s of steps, 127 s to start and finish.
    finished_job(order_prompt, carol, name="ran", seconds=136, tokens_seen=900, tokens_per_s=100.0)
    estimate = services.job_estimate(token_count=900, config=CONFIG, examples=9)
    assert estimate["measured"] and estimate["fixed_s"] == pytest.approx(127, abs=1)
    assert estimate["seconds"] == pytest.approx(136, abs=1) and estimate["seconds_low"] >= 127
    tiny = services.job_estimate(token_count=10, config=CONFIG, examples=1)
    assert tiny["seconds_low"] >= 127 and "127–127 s to start and finish" in tiny["basis"]


def test_before_any_job_ran_the_estimate_counts_process_start_model_load_and_tokenizing(carol, order_prompt):
    tiny = services.job_estimate(token_count=10, config=CONFIG, examples=1)
    assert not tiny["measured"] and tiny["fixed_s"] >= services.PROCESS_START_S + services.ADAPTER_SAVED_S
    assert tiny["seconds_low"] >= 0.6 * tiny["fixed_s"] and tiny["seconds"] >= tiny["fixed_s"]
    many = services.job_estimate(token_count=10, config=CONFIG, examples=5000)
    assert many["fixed_s"] - tiny["fixed_s"] == pytest.approx(4999 / services.TOKENIZED_EXAMPLES_PER_S)


def test_the_plan_says_what_the_start_costs(client, carol, order_prompt, cases):
    client.force_login(carol)
    html = client.post("/fine-tunes/plan/", {"prompt": "order-json"}).content.decode()
    assert "to start the training process, load the model and save the result" in html


def test_before_any_job_ran_a_busy_cpu_slows_the_steps(carol, order_prompt, monkeypatch):
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    idle = services.job_estimate(token_count=30_000, config=CONFIG, examples=10)
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0 * (os.cpu_count() or 2) / 2, 0, 0))
    busy = services.job_estimate(token_count=30_000, config=CONFIG, examples=10)
    assert busy["training_s"] == pytest.approx(4 * idle["training_s"]) and "of it free" in busy["basis"]
    assert busy["fixed_s"] == idle["fixed_s"]
