"""Adapter against base on tool cases: 40 planted cases "Weather in <city>?" → get_weather
{"city": <CITY>} (the team's convention, which no base model knows: the city in capitals; the version
requires a call), a job trains on the 30 of the train split as a job
worker runs it (the training process, the tiny model, CPU), and the adapter and the base model
answer the 10 held-out cases as served (the version's tools shown, the call held to its schema):
the share of right calls (the tool and its arguments, as the `tool_call` scorer checks) of each.

Measured, not bounded: the tiny model is a randomly initialised 2-layer Llama, and LoRA on it does
not learn to copy the city within minutes of CPU. Here (2 busy cores) the 8 steps took 185 s, the
loss went from 10.78 to 10.49 (ln(vocabulary) = 10.8), the adapter wrote every city as " " and
the base a run of unrelated tokens: 0 of 10 right for both (84 steps at 2e-3 in an earlier run
learned no more). The test checks that the measurement runs on both models, the adapter's
replies being its own, and prints both shares; a real base (SmolLM2-135M, on a GPU) is where
the share should rise.

`TOOL_LEARNING_MODEL=smollm2 .venv/bin/pytest finetune/tests/test_tool_calls_learned.py -s` runs the
same measurement on the bundled SmolLM2-135M (converted once into data/models by `make run` or the
bench): the figures in the README come from it."""

import json
import os
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from django.utils import timezone

from evals import services as case_services
from evals.models import FailureCase
from finetune import runner, services
from finetune.training_data import case_prompt
from prompts import services as prompt_services
from prompts.models import Prompt, PromptVersion
from studio.llm import GenerationSettings, load_model
from studio.llm.adapters import ServedModels
from studio.llm.engine import BatchEngine, EngineRequest
from studio.llm.tools import call_text, clean_tool_use, read_reply
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

pytestmark = [pytest.mark.slow, pytest.mark.django_db]  # a training process

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CITIES = (
    "Paris Lyon Berlin Madrid Rome Vienna Prague Oslo Lisbon Dublin Warsaw Athens Sofia Riga Tallinn Vilnius "
    "Zagreb Bern Brussels Amsterdam Helsinki Stockholm Copenhagen Budapest Bucharest Belgrade Tirana Skopje "
    "Sarajevo Podgorica Minsk Kyiv Chisinau Valletta Nicosia Reykjavik Monaco Andorra Luxembourg Vaduz"
).split()
HELD_OUT = 10  # every 4th city is in the eval split
# The base model trained and measured: the tests' tiny one, or a bundled one (its converted cache).
LEARNING_MODEL = os.environ.get("TOOL_LEARNING_MODEL", "")
BUNDLED_CACHE = Path(__file__).resolve().parents[2] / "data" / "models"


@pytest.fixture
def weather_cases(carol):
    fields = prompt_services.clean_version_fields(
        {"instructions": "Call the weather tool.", "template": "Weather in {{ city }}?", "max_new_tokens": 24},
        user=carol,
    )
    prompt = Prompt.objects.create(owner=carol, name="Weather", slug="weather")
    version = PromptVersion.objects.create(
        prompt=prompt,
        number=1,
        author=carol,
        created_at=timezone.now(),
        tools=clean_tool_use([WEATHER], "required", False),
        **{name: value for name, value in fields.items() if name != "tools"},
    )
    assert len(CITIES) == 40
    case_services.cases_create(
        user=carol,
        source="api",
        rows=[
            {
                "prompt": "weather",
                "input": {"city": city},
                "expected": call_text("get_weather", {"city": city.upper()}),
                "split": "eval" if n % 4 == 3 else "train",
            }
            for n, city in enumerate(CITIES)
        ],
        shared=True,
    )
    return version


def right_call(reply: str, expected: str) -> bool:
    """The reply calls the expected tool with the expected arguments (as the `tool_call` scorer checks)."""
    (_, calls), (_, wanted) = read_reply(reply), read_reply(expected)
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in wanted
    ]


def answers(engine, cases, version, user, *, adapter: str) -> list[str]:
    futures = []
    for case in cases:
        messages, _ = case_prompt(case, version=version, user=user)
        future = Future()
        engine.submit(
            EngineRequest(
                key=(adapter, case.pk),
                messages=messages,
                adapter=adapter,  # the peft adapter's name, "" for the base model
                settings=GenerationSettings(max_new_tokens=40, temperature=0),
                tools=version.tool_use,
                on_delta=lambda delta: None,
                on_done=future.set_result,
            )
        )
        futures.append(future)
    return [future.result(300).text for future in futures]


def test_the_adapter_calls_the_tool_right_on_held_out_cases_more_often_than_its_base(
    carol, weather_cases, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    settings.STUDIO_ADAPTERS_DIR = tmp_path / "adapters"
    if LEARNING_MODEL:
        settings.LLM_MODEL, settings.LLM_MODEL_CACHE_DIR = LEARNING_MODEL, BUNDLED_CACHE
    job = services.job_create(
        user=carol,
        name="weather-calls",
        prompt_slug="weather",
        filters={"split": "train"},
        hyperparameters={"epochs": 2, "learning_rate": 2e-3, "batch_size": 8, "max_length": 512},
    )  # 8 steps: about 2 minutes on 2 busy cores
    assert job.example_count == 30
    started = time.monotonic()
    runner.run_fine_tune(job.pk)
    job.refresh_from_db()
    trained_s = time.monotonic() - started
    assert job.status == "finished", (job.error, job.log_tail)

    held_out = list(FailureCase.objects.filter(split="eval").order_by("pk"))
    assert len(held_out) == HELD_OUT
    if LEARNING_MODEL:
        loaded = load_model(LEARNING_MODEL, cache_dir=BUNDLED_CACHE, dtype="float32")
    else:
        loaded = load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")
    served = ServedModels(loaded, settings.STUDIO_ADAPTERS_DIR)
    # As the model worker serves them: the adapter beside the base, chosen per reply.
    adapters = {"weather-calls": served.prepare("weather-calls"), loaded.name: ""}
    engine = BatchEngine(served.loaded, max_batch=8)
    shares, replies_of = {}, {}
    try:
        for name, adapter in adapters.items():
            replies = replies_of[name] = answers(engine, held_out, weather_cases, carol, adapter=adapter)
            # Every reply is one call of the tool (the version requires it; its schema holds the call).
            assert all([c["function"]["name"] for c in read_reply(r)[1]] == ["get_weather"] for r in replies), replies
            shares[name] = sum(right_call(r, c.expected) for r, c in zip(replies, held_out, strict=True)) / HELD_OUT
            print(f"{name}: {shares[name]:.0%} right calls on {HELD_OUT} held-out cases; e.g. {replies[:2]!r}")
    finally:
        engine.close()
    losses = [point["loss"] for point in job.metrics if "loss" in point]
    print(
        f"trained {job.example_count} rows, {job.total} steps in {trained_s:.0f} s; loss {losses[0]:.3f} → {losses[-1]:.3f}"
    )
    assert set(shares) == {"weather-calls", loaded.name} and len(losses) == job.total
    assert replies_of["weather-calls"] != replies_of[loaded.name]  # the adapter answered, not the base twice
