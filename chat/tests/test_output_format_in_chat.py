"""A chat started from a version with an output format: every reply, the first and the ones
typed after it, keeps to the format while the model writes it."""

import json

import pytest
from channels.db import database_sync_to_async

from chat import services as chat_services
from prompts import services as prompt_services

pytestmark = pytest.mark.django_db(transaction=True)

CHOICES = ["refund", "exchange", "question"]


@database_sync_to_async
def chat_from_version(owner, output_format):
    prompt = prompt_services.prompt_create(owner=owner, name="Triage", slug="triage", version={
        "instructions": "Classify the message.", "template": "{{ message }}", "max_new_tokens": 16,
        "output_format": output_format})
    conversation, _ = chat_services.conversation_start_from_prompt(
        owner=owner, prompt_version=prompt.versions.get(), variables={"message": "My parcel never came."})
    return conversation


async def test_every_reply_of_a_chat_from_a_version_keeps_to_its_format(alice, chat_client, start_worker,
                                                                        stored_messages):
    conversation = await chat_from_version(alice, {"type": "choice", "choices": CHOICES})
    client = await chat_client(alice, conversation.pk)
    await start_worker()  # after the tab listens: it sees the first reply from its first token
    first = (await client.receive_until("done", timeout=60))[-1]
    await client.send({"type": "send", "content": "And the broken mug?"})
    second = (await client.receive_until("done", timeout=60))[-1]
    assert first["status"] == second["status"] == "complete"
    assert first["finish_reason"] == second["finish_reason"] == "stop"
    replies = [m["content"] for m in await stored_messages(conversation) if m["role"] == "assistant"]
    assert len(replies) == 2 and all(reply in CHOICES for reply in replies), replies


async def test_a_json_schema_reply_parses(alice, chat_client, start_worker, stored_messages):
    schema = {"type": "object", "properties": {"intent": {"enum": CHOICES}, "urgent": {"type": "boolean"}},
              "required": ["intent", "urgent"], "additionalProperties": False}
    conversation = await chat_from_version(alice, {"type": "json_schema", "schema": schema})
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    assert (await client.receive_until("done", timeout=60))[-1]["finish_reason"] == "stop"
    reply = [m["content"] for m in await stored_messages(conversation) if m["role"] == "assistant"][0]
    answer = json.loads(reply)
    assert answer["intent"] in CHOICES and isinstance(answer["urgent"], bool)
