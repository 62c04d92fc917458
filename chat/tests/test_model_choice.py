"""Which model answers: the served base model, or a fine-tuned adapter trained on it (picked on
the page or named in the `send` frame)."""

import json

import pytest

from chat.services import conversation_create
from chat.serving import registry
from studio.llm.adapters import write_meta

pytestmark = pytest.mark.django_db


@pytest.fixture
def adapter(settings, tmp_path):
    settings.STUDIO_ADAPTERS_DIR = tmp_path / "adapters"
    base = registry.base_model_name()
    folder = settings.STUDIO_ADAPTERS_DIR / "order-json-ft1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    write_meta(folder, name="order-json-ft1", base_model=base)
    other = settings.STUDIO_ADAPTERS_DIR / "on-another-base"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    write_meta(other, name="on-another-base", base_model="Llama-3-8B")
    (settings.STUDIO_ADAPTERS_DIR / "half-written").mkdir()  # no metadata yet: not offered
    return "order-json-ft1"


def test_the_models_offered_are_the_base_then_its_adapters(adapter):
    assert registry.available_models() == [registry.base_model_name(), "order-json-ft1"]


def test_the_picker_sets_the_conversations_model_and_refuses_unknown_ones(client, alice, adapter):
    conversation = conversation_create(owner=alice)
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert '<option value="order-json-ft1"' in page
    response = client.post(
        f"/chat/{conversation.pk}/model/", {"model": "order-json-ft1"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.model_name == "order-json-ft1"
    refused = client.post(f"/chat/{conversation.pk}/model/", {"model": "on-another-base"})
    assert refused.status_code == 400 and "There is no model" in refused.content.decode()
    client.post(f"/chat/{conversation.pk}/model/", {"model": registry.base_model_name()})
    conversation.refresh_from_db()
    assert conversation.model_name == ""  # the base model


def test_someone_elses_conversation_cannot_be_switched(client, alice, bob, adapter):
    conversation = conversation_create(owner=alice)
    client.force_login(bob)
    assert client.post(f"/chat/{conversation.pk}/model/", {"model": "order-json-ft1"}).status_code == 404
