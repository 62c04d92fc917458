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
def chat_from_version(owner, output_format, max_new_tokens=16):
    prompt = prompt_services.prompt_create(
        owner=owner,
        name="Triage",
        slug="triage",
        version={
            "instructions": "Classify the message.",
            "template": "{{ message }}",
            "max_new_tokens": max_new_tokens,
            "output_format": output_format,
        },
    )
    conversation, _ = chat_services.conversation_start_from_prompt(
        owner=owner, prompt_version=prompt.versions.get(), variables={"message": "My parcel never came."}
    )
    return conversation


async def test_every_reply_of_a_chat_from_a_version_keeps_to_its_format(
    alice, chat_client, start_worker, stored_messages
):
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
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": CHOICES}, "urgent": {"type": "boolean"}},
        "required": ["intent", "urgent"],
        "additionalProperties": False,
    }
    conversation = await chat_from_version(alice, {"type": "json_schema", "schema": schema})
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    assert (await client.receive_until("done", timeout=60))[-1]["finish_reason"] == "stop"
    reply = [m["content"] for m in await stored_messages(conversation) if m["role"] == "assistant"][0]
    answer = json.loads(reply)
    assert answer["intent"] in CHOICES and isinstance(answer["urgent"], bool)


@database_sync_to_async
def assistant_rows(conversation):
    from chat.models import Message

    return list(
        Message.objects.filter(conversation=conversation, role="assistant").values(
            "content", "status", "error", "error_code", "finish_reason"
        )
    )


async def test_a_reply_whose_format_cannot_be_followed_fails_with_a_code_in_the_frame_and_the_row(
    alice, chat_client, start_worker, monkeypatch
):
    """Its matcher reaches llguidance's limit after `{"`: the reply used to be stored complete, "stop"."""
    hostile = {
        "type": "json_schema",
        "schema": {
            "type": "object",
            "properties": {"s": {"type": "string", "pattern": "^(a{1000}){1000}$"}},
            "required": ["s"],
        },
    }
    # Saved as it was before formats' costs were checked (versions are immutable: no other way in).
    monkeypatch.setattr(prompt_services, "clean_output_format", lambda raw, field="output_format": raw)
    conversation = await chat_from_version(alice, hostile)
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    done = (await client.receive_until("done", timeout=60))[-1]
    assert done["status"] == "failed" and done["error_code"] == "output_format_failed", done
    assert "could not be followed to its end" in done["error"] and "finish_reason" not in done
    (row,) = await assistant_rows(conversation)
    assert (row["status"], row["error_code"], row["error"]) == ("failed", "output_format_failed", done["error"])


async def test_a_reply_cut_by_the_maximum_tokens_under_a_schema_is_length_in_the_frame_and_the_row(
    alice, chat_client, start_worker
):
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": CHOICES}, "note": {"type": "string"}},
        "required": ["intent", "note"],
        "additionalProperties": False,
    }
    conversation = await chat_from_version(alice, {"type": "json_schema", "schema": schema}, max_new_tokens=3)
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    done = (await client.receive_until("done", timeout=60))[-1]
    assert done["status"] == "complete" and done["finish_reason"] == "length", done
    (row,) = await assistant_rows(conversation)
    assert row["finish_reason"] == "length" and row["status"] == "complete"
    with pytest.raises(ValueError):
        json.loads(row["content"])  # incomplete: said so, never passed for a whole answer
