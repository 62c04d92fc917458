"""The chat WebSocket protocol, through the real consumer, channel layer and model worker."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from chat.models import Conversation, Message
from tests.settings import TINY_MODEL_DIR

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_it_streams_a_reply_and_stores_it(alice, worker, chat_client, new_conversation, stored_messages):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Hello there"})
    frames = await client.receive_until("done")

    user_frame, queued_frame = frames[0], frames[1]
    user_id = user_frame["message"]["id"]
    assert user_frame == {
        "type": "message",
        "message": {
            "id": user_id,
            "role": "user",
            "content": "Hello there",
            "status": "complete",
            "parent": None,
            "siblings": [user_id],
        },
    }
    assert queued_frame["message"]["role"] == "assistant" and queued_frame["message"]["status"] == "queued"
    tokens = [f for f in frames if f["type"] == "token"]
    assert len(tokens) >= 2, "the reply arrives in several chunks, not at the end"
    done = frames[-1]
    assert done["status"] == "complete"
    assert done["usage"]["completion_tokens"] == 48
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["ttft_ms"] > 0 and done["usage"]["tokens_per_s"] > 0

    user_row, assistant_row = await stored_messages(conversation)
    assert assistant_row["content"] == "".join(f["text"] for f in tokens)
    assert assistant_row["status"] == "complete"
    assert assistant_row["completion_tokens"] == 48
    assert assistant_row["model_name"] == TINY_MODEL_DIR.name
    await client.close()


async def test_it_closes_with_4401_when_not_logged_in(alice, channel_layer, new_conversation):
    conversation = await new_conversation(alice)
    from chat.tests.conftest import ChatClient

    client = ChatClient(AnonymousUser(), conversation.pk)
    await client.connect()
    assert await client.receive() == {"type": "closed", "code": 4401}


async def test_it_closes_with_4403_on_someone_elses_conversation(alice, bob, channel_layer, new_conversation):
    conversation = await new_conversation(alice, system_prompt="alice's secret")
    from chat.tests.conftest import ChatClient

    client = ChatClient(bob, conversation.pk)
    await client.connect()
    assert await client.receive() == {"type": "closed", "code": 4403}  # nothing else revealed


async def test_a_socket_opened_before_its_person_was_deactivated_acts_no_more(
    alice, carol, channel_layer, new_conversation, stored_messages
):
    from accounts.services import person_set_active

    conversation = await new_conversation(alice)
    client = await chat_client_for(alice, conversation.pk)
    await database_sync_to_async(person_set_active)(by=carol, person=alice, active=False)
    await client.send({"type": "send", "content": "Still here?"})
    assert await client.receive() == {"type": "closed", "code": 4401}
    assert await stored_messages(conversation) == []


async def chat_client_for(user, conversation_id):
    from chat.tests.conftest import ChatClient

    return await ChatClient(user, conversation_id).connect()


async def test_an_id_beyond_the_database_closes_like_an_unknown_conversation(alice, channel_layer):
    from chat.tests.conftest import ChatClient

    client = ChatClient(alice, "9" * 30)
    await client.connect()
    assert await client.receive() == {"type": "closed", "code": 4403}


@pytest.mark.parametrize(
    "frame, code",
    [
        ("{not json", "malformed_frame"),
        ('["send"]', "malformed_frame"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "send", "content": "   "}, "empty_message"),
        ({"type": "send", "content": 42}, "malformed_frame"),
        ({"type": "send", "content": "x" * 32001}, "message_too_long"),
        ({"type": "stop"}, "nothing_to_stop"),
        ({"type": "regenerate"}, "no_such_message"),
        # Text PostgreSQL cannot store, and deep JSON: an error frame, never a 1011 close.
        ({"type": "send", "content": "nul \x00 byte"}, "malformed_frame"),
        ({"type": "send", "content": "lone \ud800 surrogate"}, "malformed_frame"),
        ('{"type": "send", "content": ' + "[" * 50_000 + "]" * 50_000 + "}", "malformed_frame"),
        ('{"type": "send", "content": "x", "extra": ' + '{"a": ' * 10 + "1" + "}" * 10 + "}", "malformed_frame"),
    ],
)
async def test_it_answers_bad_frames_with_an_error_and_stays_usable(
    alice, worker, chat_client, frame, code, new_conversation, stored_messages
):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send(frame)
    error = await client.receive()
    assert (error["type"], error["code"]) == ("error", code) and error["error"]  # a sentence for the person too
    assert await stored_messages(conversation) == []  # nothing stored

    await client.send({"type": "send", "content": "still here?"})
    frames = await client.receive_until("done")
    assert frames[-1]["status"] == "complete"


async def test_it_refuses_a_second_message_while_the_model_answers(
    alice, worker, chat_client, new_conversation, stored_messages
):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "first"})
    await client.send({"type": "send", "content": "second"})
    frames = await client.receive_until("done")
    errors = [f for f in frames if f["type"] == "error"]
    assert errors and errors[0]["code"] == "reply_in_progress"
    assert [m["content"] for m in await stored_messages(conversation) if m["role"] == "user"] == ["first"]


async def test_stop_keeps_the_partial_text_marked_stopped(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_MAX_NEW_TOKENS = 2000  # long enough to stop in the middle
    await start_worker()
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Tell me everything"})
    await client.receive_until("token")
    await client.send({"type": "stop"})
    frames = await client.receive_until("done")
    assert frames[-1]["status"] == "stopped"
    stored = (await stored_messages(conversation))[1]
    assert stored["status"] == "stopped"
    assert 0 < stored["completion_tokens"] < 2000
    assert stored["content"]  # the partial text is kept


async def test_a_reply_the_sweeper_failed_is_no_longer_written_or_streamed(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    """A worker too slow to renew its lease (a stalled host) loses the reply to the sweeper: the
    tab is told it failed, and the worker stops writing it instead of streaming text after that."""
    from datetime import timedelta

    from django.utils import timezone

    from chat.models import Message
    from chat.serving import queue

    settings.LLM_MAX_NEW_TOKENS = 2000  # far longer than the test waits
    worker = await start_worker()
    cancelled = []
    cancel = worker.engine.cancel
    worker.engine.cancel = lambda message_id: (cancelled.append(message_id), cancel(message_id))[1]
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Tell me everything"})
    reply_id = [f for f in await client.receive_until("token") if f["type"] == "token"][0]["message_id"]

    def lease_lapses_and_the_sweeper_runs():
        Message.objects.filter(pk=reply_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        queue.replies_sweep()
        return Message.objects.get(pk=reply_id).content

    content_when_failed = await database_sync_to_async(lease_lapses_and_the_sweeper_runs)()
    frames = await client.receive_until("done", message_id=reply_id)
    assert frames[-1]["status"] == "failed" and "model worker stopped" in frames[-1]["error"]
    for _ in range(600):
        if reply_id not in worker.active:
            break
        await asyncio.sleep(0.1)
    assert reply_id not in worker.active and reply_id in cancelled, "the worker stopped writing the failed reply"
    stored = (await stored_messages(conversation))[1]
    assert stored["status"] == "failed" and stored["content"] == content_when_failed


async def test_a_closed_tab_loses_nothing(alice, worker, chat_client, new_conversation, stored_messages):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Write while I'm away"})
    await client.receive()  # the stored user message: the request is in
    await client.close()
    for _ in range(600):  # up to a minute on a busy machine
        rows = await stored_messages(conversation)
        if rows[-1]["status"] == "complete":
            break
        await asyncio.sleep(0.1)
    assert rows[-1]["status"] == "complete" and rows[-1]["completion_tokens"] == 48


async def test_a_tab_that_reconnects_mid_reply_catches_up(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_MAX_NEW_TOKENS = 400
    await start_worker()
    conversation = await new_conversation(alice)
    first_tab = await chat_client(alice, conversation.pk)
    await first_tab.send({"type": "send", "content": "A long answer please"})
    await first_tab.receive_until("token")
    await first_tab.close()

    second_tab = await chat_client(alice, conversation.pk)
    frames = await second_tab.receive_until("done")
    assistant_id = frames[1]["message"]["id"]
    # The history, then the worker's catch-up (text so far), then the rest as tokens.
    catch_up = [f for f in frames if f["type"] == "message" and f["message"]["id"] == assistant_id][-1]
    assert catch_up["message"]["status"] == "streaming"
    after = frames[frames.index(catch_up) + 1 :]
    seen = catch_up["message"]["content"] + "".join(f["text"] for f in after if f["type"] == "token")
    stored = (await stored_messages(conversation))[1]
    assert stored["status"] == "complete"
    assert seen == stored["content"], "the reconnected tab shows exactly the stored reply"


async def test_regenerate_keeps_the_last_reply_as_a_sibling(
    alice, worker, chat_client, new_conversation, stored_messages
):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Hi"})
    first = await client.receive_until("done")
    user_id, old_reply = first[0]["message"]["id"], first[-1]["message_id"]
    await client.send({"type": "regenerate"})
    frames = await client.receive_until("done")
    new_reply = frames[0]["message"]
    assert new_reply["parent"] == user_id and new_reply["siblings"] == [old_reply, new_reply["id"]]
    assert frames[1] == {"type": "branch", "active": [user_id, new_reply["id"]]}
    assert frames[-1]["status"] == "complete"
    rows = await stored_messages(conversation)
    assert [r["role"] for r in rows] == ["user", "assistant", "assistant"]


async def test_a_model_that_fails_to_load_fails_the_reply_with_its_reason(
    alice, start_worker, chat_client, settings, new_conversation, monkeypatch
):
    from studio.llm import ModelLoadError

    settings.LLM_EMBEDDED_WORKER = True  # the only worker: it tells the person why at once
    # ...and the only one indeed: the ASGI app would start a healthy embedded worker of its own
    # on the first socket, which then raced this one for the reply.
    monkeypatch.setattr("studio.asgi.start_background_work", lambda: None)

    def broken_load():
        raise ModelLoadError("LLM_MODEL=/nowhere/model.gguf: no such GGUF file.")

    await start_worker(load=broken_load)
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Anyone there?"})
    done = (await client.receive_until("done"))[-1]
    assert done["status"] == "failed"
    assert "could not be loaded" in done["error"] and "no such GGUF file" in done["error"]


async def test_the_system_prompt_reaches_the_model(alice, worker, chat_client, monkeypatch, new_conversation):
    seen = {}
    original = worker.engine.submit

    def spy(request):
        seen["messages"] = request.messages
        return original(request)

    monkeypatch.setattr(worker.engine, "submit", spy)
    conversation = await new_conversation(alice, system_prompt="Answer like a pirate.")
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Hi"})
    await client.receive_until("done")
    assert seen["messages"] == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hi"},
    ]


async def test_groups_are_empty_after_disconnect(alice, worker, chat_client, channel_layer, new_conversation):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.close()
    group = (await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)).group_name
    assert not channel_layer.groups.get(group)


async def test_a_reply_that_runs_out_of_memory_fails_with_advice(
    alice, worker, chat_client, tiny_model, monkeypatch, new_conversation, stored_messages
):
    import torch

    def out_of_memory(*args, **kwargs):
        # A CUDA out-of-memory error cannot happen on this CPU machine: raised by hand.
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tiny_model.model, "forward", out_of_memory)
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "A very long document..."})
    done = (await client.receive_until("done"))[-1]
    assert (done["status"], done["error_code"]) == ("failed", "out_of_memory") and done["error"]
    assert (await stored_messages(conversation))[1]["status"] == "failed"
    stored = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
    assert stored.error_code == "out_of_memory"
    await client.send({"type": "regenerate"})  # the conversation is not stuck
    assert (await client.receive())["message"]["status"] == "queued"
