"""The database row is the queue: a lost wake-up delays a reply, never drops it; a stop before the
first token is honoured; an unhealthy worker takes nothing in scaled mode; what a tab was sent
is already stored; people at the page are served before API bursts."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.models import Conversation, Message, ModelWorker
from chat.serving import queue

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_reply_whose_wake_up_message_was_lost_is_still_written(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_QUEUE_POLL_SECONDS = 0.2
    await start_worker()
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    # Stored as the consumer stores it, but no wake-up is sent (as if Redis dropped it).
    await database_sync_to_async(services.reply_request)(conversation=conversation, content="anyone?")
    done = (await client.receive_until("done"))[-1]
    assert done["status"] == "complete"
    assert (await stored_messages(conversation))[1]["completion_tokens"] == 48


async def test_a_stop_before_the_first_token_is_honoured(
    alice, start_worker, chat_client, monkeypatch, new_conversation, stored_messages
):
    import threading

    worker = await start_worker()
    original = worker._prepare_adapter
    stopped = threading.Event()

    def held_prepare(model_name):
        stopped.wait(60)  # the worker has claimed the reply but not started decoding it, until the stop is in
        return original(model_name)

    monkeypatch.setattr(worker, "_prepare_adapter", held_prepare)
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "never mind"})
    reply_id = await _claimed(conversation)
    await client.send({"type": "stop"})
    await _until(lambda: reply_id in worker.engine.cancelled)  # the stop has reached the worker
    stopped.set()
    frames = await client.receive_until("done")
    assert frames[-1]["status"] == "stopped"
    assert not [frame for frame in frames if frame["type"] == "token"]
    reply = (await stored_messages(conversation))[1]
    assert reply["status"] == "stopped" and reply["content"] == "" and not reply["completion_tokens"]


async def _claimed(conversation) -> int:
    claimed = Message.objects.filter(conversation=conversation, role="assistant", status="streaming")
    await _until(lambda: None, check=claimed.aexists)
    return (await claimed.afirst()).pk


async def _until(condition, *, check=None, timeout=60.0):
    """Wait for a condition (a generous deadline, never a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await check()) if check else condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


def broken_load():
    from studio.llm import ModelLoadError

    raise ModelLoadError("LLM_MODEL=/nowhere/model.gguf: no such GGUF file.")


async def test_a_worker_whose_model_failed_to_load_takes_nothing_in_scaled_mode(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_EMBEDDED_WORKER = False
    settings.LLM_QUEUE_POLL_SECONDS = 0.2

    broken = await start_worker(load=broken_load)
    looked = []
    original_look = broken._wake_up_or_poll_interval

    async def counted_look():
        looked.append(1)
        await original_look()

    broken._wake_up_or_poll_interval = counted_look
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Anyone healthy?"})
    await _until(lambda: None, check=Message.objects.filter(conversation=conversation, role="assistant").aexists)
    looked.clear()
    await _until(lambda: len(looked) >= 5)  # it has looked at the queue several times since the reply was queued
    assert (await stored_messages(conversation))[1]["status"] == "queued"  # left for a healthy worker
    unhealthy = await ModelWorker.objects.aget()
    assert unhealthy.state == "failed" and "no such GGUF file" in unhealthy.error
    await start_worker()
    assert (await client.receive_until("done"))[-1]["status"] == "complete"


async def test_a_reply_no_healthy_worker_takes_times_out_naming_the_load_error(
    alice, start_worker, settings, new_conversation
):
    settings.LLM_EMBEDDED_WORKER = False

    await start_worker(load=broken_load)
    conversation = await new_conversation(alice)
    _, reply = await database_sync_to_async(services.reply_request)(conversation=conversation, content="hi")
    await Message.objects.filter(pk=reply.pk).aupdate(lease_expires_at=reply.created_at)
    [failed] = await database_sync_to_async(queue.replies_fail_expired)()
    assert "No model worker could take this message" in failed.error and "no such GGUF file" in failed.error


async def test_every_chunk_a_tab_is_sent_is_already_stored(
    alice, worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_MAX_NEW_TOKENS = 120
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "store as you go"})
    seen, checked = "", 0
    while True:
        frame = await client.receive()
        if frame["type"] == "done":
            break
        if frame["type"] == "token":
            seen += frame["text"]
            stored = await Message.objects.filter(conversation=conversation, role="assistant").aget()
            assert stored.content.startswith(seen), "a tab was sent text the database did not hold yet"
            checked += 1
    assert checked >= 2
    assert (await stored_messages(conversation))[1]["content"] == seen


def test_people_at_the_page_are_served_before_an_api_burst_and_owners_take_turns(alice, bob, carol):
    evaluation_case = services.reply_request_unlisted(
        owner=carol,
        kind=Conversation.Kind.EVALUATION,
        messages=[{"role": "user", "content": "a case"}],
        model_name="",
        parameters={"temperature": 0},
    )
    api_conversations = [Conversation.objects.create(owner=bob, kind=Conversation.Kind.API) for _ in range(3)]
    api_replies = [services.reply_request(conversation=c, content="batch job")[1] for c in api_conversations]
    chat = services.conversation_create(owner=alice)
    _, chat_reply = services.reply_request(conversation=chat, content="hello")
    order = list(queue.queued_in_serving_order().values_list("pk", flat=True))
    assert order == [chat_reply.pk, *(r.pk for r in api_replies), evaluation_case.pk]  # evaluations come last
    assert queue.queue_position(message=chat_reply) == 1
    # Bob has a reply being written: carol's API request, though newer, goes before his others.
    Message.objects.filter(pk=api_replies[0].pk).update(status=Message.Status.STREAMING)
    carol_conversation = Conversation.objects.create(owner=carol, kind=Conversation.Kind.API)
    _, carol_reply = services.reply_request(conversation=carol_conversation, content="mine")
    order = list(queue.queued_in_serving_order().values_list("pk", flat=True))
    assert order == [chat_reply.pk, carol_reply.pk, api_replies[1].pk, api_replies[2].pk, evaluation_case.pk]


async def test_an_unreachable_external_engine_makes_the_worker_report_why(
    alice, start_worker, chat_client, settings, new_conversation
):
    from benchmarks.processes import free_port

    settings.LLM_ENGINE = "openai"
    settings.LLM_ENGINE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings.LLM_EMBEDDED_WORKER = True
    worker = await start_worker()
    row = await ModelWorker.objects.aget()
    assert worker.engine is None and row.state == "failed" and "cannot be reached" in row.error
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Anyone?"})
    done = (await client.receive_until("done"))[-1]
    assert done["status"] == "failed" and "external engine is not usable" in done["error"]
