"""A model worker writes many replies at once (continuous batching): beyond LLM_MAX_BATCH they
wait and their tab is told its place; a stalled model fails its reply in time."""

import asyncio

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_replies_beyond_the_batch_wait_and_are_told_their_place(
    alice, start_worker, chat_client, settings, tiny_model, monkeypatch, new_conversation
):
    settings.LLM_MAX_BATCH = 1
    settings.LLM_MAX_NEW_TOKENS = 200
    settings.LLM_LEASE_SECONDS = 1  # the tab looks every 0.5 s
    slowly(tiny_model, monkeypatch, seconds_per_step=0.01)  # the first reply takes about 2 s
    await start_worker()
    first, second = await new_conversation(alice), await new_conversation(alice)
    first_client, second_client = await chat_client(alice, first.pk), await chat_client(alice, second.pk)
    await first_client.send({"type": "send", "content": "a long one"})
    await first_client.receive_until("token")
    await second_client.send({"type": "send", "content": "me too"})
    frames = await second_client.receive_until("queued")
    assert frames[-1]["position"] == 1 and frames[-1]["message_id"] == frames[1]["message"]["id"]
    assert (await first_client.receive_until("done"))[-1]["status"] == "complete"
    assert (await second_client.receive_until("done", timeout=60))[-1]["status"] == "complete"


def slowly(tiny_model, monkeypatch, *, seconds_per_step):
    import time

    original = tiny_model.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(seconds_per_step)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model.model, "forward", slow_forward)


async def test_several_conversations_are_answered_together(
    alice, start_worker, chat_client, settings, new_conversation, stored_messages
):
    settings.LLM_MAX_BATCH = 4
    worker = await start_worker()
    conversations = [await new_conversation(alice) for _ in range(3)]
    clients = [await chat_client(alice, c.pk) for c in conversations]
    for client in clients:
        await client.send({"type": "send", "content": "together"})
    in_flight = 0
    for _ in range(2000):  # up to 20 s on a busy machine
        in_flight = max(in_flight, len(worker.active))
        if in_flight == 3:
            break
        await asyncio.sleep(0.01)
    assert in_flight == 3, "the three replies were written at the same time"
    for client, conversation in zip(clients, conversations):
        assert (await client.receive_until("done"))[-1]["status"] == "complete"
        assert (await stored_messages(conversation))[1]["completion_tokens"] == 48


async def test_a_stalled_model_fails_its_reply_within_the_stall_timeout(
    alice, start_worker, chat_client, tiny_model, settings, monkeypatch, new_conversation
):
    settings.LLM_STALL_TIMEOUT_SECONDS = 1
    await start_worker()
    original = tiny_model.model.forward

    def stuck(*args, **kwargs):
        import time

        time.sleep(3)  # a hung kernel: the step returns far too late
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model.model, "forward", stuck)
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "hello?"})
    done = (await client.receive_until("done", timeout=10))[-1]
    assert done["status"] == "failed" and "produced nothing for 1 s" in done["error"]


async def test_a_long_prompt_is_not_failed_as_stalled_while_its_prefill_moves(
    alice, start_worker, chat_client, tiny_model, settings, monkeypatch, new_conversation
):
    """A prompt whose prefill takes longer than the stall timeout, chunk after chunk, is answered:
    each chunk prefilled is progress, not silence."""
    import time

    from chat.serving import worker as worker_module

    class SmallChunks(worker_module.BatchEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, prefill_chunk_tokens=16, **kwargs)

    settings.LLM_STALL_TIMEOUT_SECONDS = 2
    monkeypatch.setattr(worker_module, "BatchEngine", SmallChunks)
    await start_worker()
    original = tiny_model.model.forward

    def slow_per_token(*args, **kwargs):
        time.sleep(0.005 * kwargs["input_ids"].shape[1])  # a big model on a small machine: 1,200 tokens take 6 s
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model.model, "forward", slow_per_token)
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "tide " * 1200})
    done = (await client.receive_until("done", timeout=120))[-1]
    assert done["status"] == "complete", done.get("error")
    assert done["usage"]["prompt_tokens"] > 1200
