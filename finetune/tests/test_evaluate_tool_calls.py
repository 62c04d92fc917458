"""“Evaluate against the base” of a model trained for a version with tools scores both models'
replies with the `tool_call` scorer (whether they make the expected calls) unless scorers are
ticked; a version without tools keeps exact match; a plain user is refused."""

import json
from types import SimpleNamespace

import pytest
from django.utils import timezone

from chat.serving import registry as chat_registry
from finetune import views
from finetune.models import FineTunedModel, FineTuneJob
from prompts import services as prompt_services
from prompts.models import Prompt, PromptVersion
from studio.llm.adapters import write_meta
from studio.llm.tools import clean_tool_use

pytestmark = pytest.mark.django_db

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def registered_model(settings, tmp_path, carol, *, tools):
    settings.STUDIO_ADAPTERS_DIR = tmp_path / "adapters"
    base = chat_registry.base_model_name()
    folder = settings.STUDIO_ADAPTERS_DIR / "weather-ft1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    write_meta(folder, name="weather-ft1", base_model=base)
    fields = prompt_services.clean_version_fields({"instructions": "Call.", "template": "{{ city }}"}, user=carol)
    prompt = Prompt.objects.create(owner=carol, name="Weather", slug="weather")
    version = PromptVersion.objects.create(
        prompt=prompt,
        number=1,
        author=carol,
        created_at=timezone.now(),
        tools=tools,
        **{name: value for name, value in fields.items() if name != "tools"},
    )
    job = FineTuneJob.objects.create(
        name="weather-ft1",
        base_model=base,
        prompt=prompt,
        prompt_version=version,
        created_by=carol,
        hyperparameters={},
        status="finished",
    )
    return FineTunedModel.objects.create(name="weather-ft1", base_model=base, job=job, data_hash="abc")


@pytest.fixture
def asked(monkeypatch):
    """The evaluations the click asks for: (model, scorers) each."""
    calls = []

    def evaluation_create(*, user, version, model_name, filters, scorers):
        calls.append((model_name, scorers, filters))
        return SimpleNamespace(pk=len(calls))

    monkeypatch.setattr(views.eval_services, "evaluation_create", evaluation_create)
    return calls


def test_a_model_trained_for_a_version_with_tools_is_compared_with_its_base_on_calls(
    client, carol, settings, tmp_path, asked
):
    model = registered_model(settings, tmp_path, carol, tools=clean_tool_use([WEATHER], "required"))
    client.force_login(carol)
    response = client.post(f"/fine-tunes/models/{model.pk}/evaluate/")
    assert response.status_code == 302 and response["Location"] == "/evaluations/compare/?a=1&b=2"
    assert asked == [
        (chat_registry.base_model_name(), [{"type": "tool_call"}], {"split": "eval"}),
        ("weather-ft1", [{"type": "tool_call"}], {"split": "eval"}),
    ]
    asked.clear()
    client.post(f"/fine-tunes/models/{model.pk}/evaluate/", {"scorer": ["tool_call", "contains"]})
    assert [scorers for _, scorers, _ in asked] == [[{"type": "tool_call"}, {"type": "contains"}]] * 2


def test_a_version_without_tools_keeps_exact_match(client, carol, settings, tmp_path, asked):
    model = registered_model(settings, tmp_path, carol, tools={})
    client.force_login(carol)
    client.post(f"/fine-tunes/models/{model.pk}/evaluate/")
    assert [scorers for _, scorers, _ in asked] == [[{"type": "exact_match"}]] * 2


def test_a_plain_user_cannot_evaluate_it(client, alice, carol, settings, tmp_path, asked):
    model = registered_model(settings, tmp_path, carol, tools=clean_tool_use([WEATHER], "required"))
    client.force_login(alice)
    assert client.post(f"/fine-tunes/models/{model.pk}/evaluate/").status_code == 403
    assert asked == []
