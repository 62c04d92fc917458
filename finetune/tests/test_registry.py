"""The registry: a finished model is offered everywhere, evaluated against its base in one click,
downloaded, deleted (what used it keeps its name)."""

import io
import json
import zipfile

import pytest

from chat.models import Conversation
from chat.services import message_append
from chat.serving import registry as chat_registry
from evals.models import Evaluation
from finetune.models import FineTunedModel, FineTuneJob
from studio.llm.adapters import write_meta

pytestmark = pytest.mark.django_db


@pytest.fixture
def registered(settings, tmp_path, carol, order_prompt, cases):
    settings.STUDIO_ADAPTERS_DIR = tmp_path / "adapters"
    base = chat_registry.base_model_name()
    folder = settings.STUDIO_ADAPTERS_DIR / "order-json-ft1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"0" * 1000)
    write_meta(folder, name="order-json-ft1", base_model=base)
    job = FineTuneJob.objects.create(
        name="order-json-ft1",
        base_model=base,
        prompt=order_prompt,
        created_by=carol,
        hyperparameters={},
        status="finished",
    )
    return FineTunedModel.objects.create(
        name="order-json-ft1", base_model=base, job=job, data_hash="abc", size_bytes=1000, metrics={"train_loss": 0.5}
    )


def test_a_registered_model_is_offered_to_chat_playground_and_evaluations(client, carol, registered):
    from evals.selectors import available_models

    assert "order-json-ft1" in chat_registry.available_models() and "order-json-ft1" in available_models()
    client.force_login(carol)
    assert '<option value="order-json-ft1"' in client.get("/prompts/order-json/playground/").content.decode()
    assert "order-json-ft1" in client.get("/evaluations/new/").content.decode()
    page = client.get("/fine-tunes/").content.decode()
    assert "order-json-ft1" in page and "1000 bytes" in page.replace("\xa0", " ")


def test_one_click_evaluates_base_and_fine_tuned_on_the_eval_split_and_opens_the_comparison(client, carol, registered):
    client.force_login(carol)
    response = client.post(f"/fine-tunes/models/{registered.pk}/evaluate/", {"scorer": "json_equal"})
    base, tuned = Evaluation.objects.order_by("id")
    assert response.status_code == 302 and response["Location"] == f"/evaluations/compare/?a={base.pk}&b={tuned.pk}"
    assert base.model_name == chat_registry.base_model_name() and tuned.model_name == "order-json-ft1"
    assert base.case_filters["split"] == tuned.case_filters["split"] == "eval" and base.total == 3
    assert base.scorers[0]["type"] == "json_equal"
    page = client.get(response["Location"]).content.decode()
    assert "The comparison fills in" in page and 'hx-trigger="every 2s"' in page


def test_the_adapter_downloads_as_a_zip(client, carol, registered):
    client.force_login(carol)
    response = client.get(f"/fine-tunes/models/{registered.pk}/adapter.zip")
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert "order-json-ft1/adapter_config.json" in names and "order-json-ft1/adapter_model.safetensors" in names


def test_deleting_removes_the_files_and_what_used_it_keeps_its_name(client, carol, alice, registered, settings):
    conversation = Conversation.objects.create(owner=alice, model_name="order-json-ft1")
    reply = message_append(conversation=conversation, role="assistant", content="{}", model_name="order-json-ft1")
    client.force_login(carol)
    client.post(f"/fine-tunes/models/{registered.pk}/delete/")
    assert not FineTunedModel.objects.exists()
    assert not (settings.STUDIO_ADAPTERS_DIR / "order-json-ft1").exists()
    assert "order-json-ft1" not in chat_registry.available_models()
    reply.refresh_from_db()
    assert reply.model_name == "order-json-ft1"
    page_as_alice = client.get(f"/chat/{conversation.pk}/")  # carol cannot see alice's chat; alice can
    client.force_login(alice)
    assert "order-json-ft1 (no longer served)" in client.get(f"/chat/{conversation.pk}/").content.decode()
    assert page_as_alice.status_code == 404
