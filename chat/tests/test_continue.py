"""Continue: a reply cut at its maximum tokens is marked so, and Continue extends that same reply
(the model writes on from its last character), through the real consumer, channel layer and model
worker on the tiny model (the tests' replies are cut at LLM_MAX_NEW_TOKENS = 48)."""

import json

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.models import Message
from chat.serving import queue
from chat.serving import worker as worker_module
from prompts import services as prompt_services

pytestmark = [pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def reply_row(conversation):
    return Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)


@database_sync_to_async
def page_of(client, user, conversation):
    client.force_login(user)
    return client.get(conversation.get_absolute_url()).content.decode()


@pytest.fixture
def prompts_seen(monkeypatch):
    """The engine requests the worker prepares (their messages and prompt ids), in order."""
    seen = []
    prepare = worker_module.prepare_prompt

    def spy(loaded, request):
        prepared = prepare(loaded, request)
        seen.append(prepared)
        return prepared

    monkeypatch.setattr(worker_module, "prepare_prompt", spy)
    return seen


async def test_a_cut_reply_is_marked_and_continue_extends_the_same_reply(
    alice, worker, chat_client, new_conversation, client, prompts_seen, tiny_model
):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    await tab.send({"type": "send", "content": "Tell me a long story"})
    first = await tab.receive_until("done")
    done = first[-1]
    assert done["status"] == "complete" and done["finish_reason"] == "length"
    cut = await reply_row(conversation)
    assert cut.finish_reason == "length" and cut.completion_tokens == 48
    page = await page_of(client, alice, conversation)
    assert "cut at 48 tokens" in page and 'data-action="continue"' in page

    await tab.send({"type": "continue", "message_id": cut.pk})
    frames = await tab.receive_until("done", message_id=cut.pk)
    assert not [f for f in frames if f["type"] == "error"], frames
    assert all(f["message"]["id"] == cut.pk for f in frames if f["type"] == "message")
    new_text = "".join(f["text"] for f in frames if f["type"] == "token" and f["message_id"] == cut.pk)
    assert new_text, "the continuation streams as tokens of the same reply"
    assert frames[-1]["finish_reason"] == "length"  # 48 more, cut again
    assert frames[-1]["usage"]["completion_tokens"] == 96

    # The model read the history with the cut text left open: it writes on from its last character.
    continued = prompts_seen[-1]
    assert continued.continue_final and continued.messages[-1] == {"role": "assistant", "content": cut.content}
    prompt_text = tiny_model.tokenizer.decode(continued.prompt_ids)
    assert prompt_text.endswith(cut.content) and "Tell me a long story" in prompt_text

    replies = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT))
    )()
    assert len(replies) == 1, "one message row: the reply grew"
    reply = replies[0]
    assert reply.pk == cut.pk and reply.content == cut.content + new_text
    assert reply.status == "complete" and reply.finish_reason == "length"
    assert reply.completion_tokens == 96 and reply.prompt_tokens == cut.prompt_tokens + continued.prompt_ids.__len__()
    assert reply.ttft_ms == cut.ttft_ms and reply.parameters == cut.parameters
    assert "cut at 96 tokens" in await page_of(client, alice, conversation)

    # Cut again, continued again: still one reply.
    await tab.send({"type": "continue", "message_id": cut.pk})
    again = await tab.receive_until("done", message_id=cut.pk)
    assert again[-1]["usage"]["completion_tokens"] == 144
    final = await reply_row(conversation)
    assert final.content.startswith(reply.content) and len(final.content) > len(reply.content)


async def test_a_reconnecting_tab_reads_the_whole_continued_reply(alice, worker, chat_client, new_conversation):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    await tab.send({"type": "send", "content": "Go on"})
    await tab.receive_until("done")
    cut = await reply_row(conversation)
    await tab.send({"type": "continue", "message_id": cut.pk})
    await tab.receive_until("done", message_id=cut.pk)
    later = await chat_client(alice, conversation.pk)
    history = [await later.receive(), await later.receive()]  # the question, then the reply
    assert history[-1]["message"]["content"] == (await reply_row(conversation)).content
    assert history[-1]["message"]["finish_reason"] == "length" and history[-1]["message"]["completion_tokens"] == 96


async def test_only_the_owner_continues_a_reply(alice, bob, worker, chat_client, new_conversation):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    await tab.send({"type": "send", "content": "Hello"})
    await tab.receive_until("done")
    cut = await reply_row(conversation)

    from chat.tests.conftest import ChatClient

    intruder = ChatClient(bob, conversation.pk)
    await intruder.connect()
    assert await intruder.receive() == {"type": "closed", "code": 4403}
    # From bob's own conversation, alice's reply is one that does not exist.
    own = await new_conversation(bob)
    bobs_tab = await chat_client(bob, own.pk)
    await bobs_tab.send({"type": "continue", "message_id": cut.pk})
    error = await bobs_tab.receive()
    assert (error["type"], error["code"]) == ("error", "no_such_message")  # as for a reply that does not exist
    unchanged = await reply_row(conversation)
    assert (unchanged.status, unchanged.content, unchanged.completion_tokens) == ("complete", cut.content, 48)


class _AnySentence:
    """Equal to any non-empty text: the refusal's words are for people, its code for the test."""

    def __eq__(self, other):
        return isinstance(other, str) and bool(other.strip())


ANY_SENTENCE = _AnySentence()


async def test_continue_is_refused_for_a_whole_reply_an_answered_one_and_while_a_reply_is_written(
    alice, channel_layer, chat_client, new_conversation
):
    conversation = await new_conversation(alice)

    @database_sync_to_async
    def store(role, content, **fields):
        return services.message_append(conversation=conversation, role=role, content=content, **fields)

    await store("user", "Question")
    whole = await store("assistant", "A whole reply.", finish_reason="stop", completion_tokens=4)
    question = await store("user", "And then?")
    cut = await store("assistant", "It was a dark and", finish_reason="length", completion_tokens=48)
    tab = await chat_client(alice, conversation.pk)
    for _ in range(4):  # the history: its four messages
        await tab.receive()

    async def refusal(message_id):
        await tab.send({"type": "continue", "message_id": message_id})
        error = (await tab.receive_until("error"))[-1]
        return error["code"], error["error"]

    assert await refusal(whole.pk) == ("cannot_continue", ANY_SENTENCE)
    await database_sync_to_async(Message.objects.filter(pk=whole.pk).update)(finish_reason="length")
    assert await refusal(whole.pk) == ("cannot_continue", ANY_SENTENCE)  # "And then?" was asked after it
    # An edit of the question: a new branch whose reply waits for a worker (none runs here).
    await tab.send({"type": "edit", "message_id": question.pk, "content": "And after that?"})
    frames = await tab.receive_until("branch")
    queued = [f["message"] for f in frames if f["type"] == "message" and f["message"]["status"] == "queued"][0]
    assert await refusal(cut.pk) == ("reply_in_progress", ANY_SENTENCE)  # the cut reply, on the other branch
    assert await refusal(queued["id"]) == ("cannot_continue", ANY_SENTENCE)
    assert (await database_sync_to_async(Message.objects.get)(pk=cut.pk)).status == "complete"


async def test_stopping_a_queued_continuation_leaves_the_reply_as_it_was(
    alice, worker, chat_client, new_conversation, monkeypatch
):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    await tab.send({"type": "send", "content": "Hello"})
    await tab.receive_until("done")
    # The worker takes nothing more, so the continuation is still queued when it is stopped (its
    # poll claimed it first once, on a busy machine).
    monkeypatch.setattr(worker, "takes_requests", lambda: False)
    cut = await reply_row(conversation)
    queued = await database_sync_to_async(
        lambda: services.reply_continue(conversation=conversation, message_id=cut.pk)
    )()
    assert queued.status == "queued"
    assert await database_sync_to_async(queue.reply_stop_if_queued)(message=queued)
    kept = await reply_row(conversation)
    assert (kept.status, kept.finish_reason, kept.content) == ("complete", "length", cut.content)


@database_sync_to_async
def chat_with_format(owner, output_format, max_new_tokens):
    prompt = prompt_services.prompt_create(
        owner=owner,
        name="Triage",
        slug="triage",
        version={
            "instructions": "Classify the message as JSON.",
            "template": "{{ message }}",
            "max_new_tokens": max_new_tokens,
            "output_format": output_format,
        },
    )
    conversation, _ = services.conversation_start_from_prompt(
        owner=owner, prompt_version=prompt.versions.get(), variables={"message": "My parcel never came."}
    )
    return conversation


async def test_a_cut_reply_in_an_output_format_is_continued_in_that_format(alice, chat_client, start_worker):
    """The format's matcher starts past the text already written: the parts join into one valid
    answer (a matcher started afresh would open a second object after the first's beginning)."""
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["refund", "exchange", "question"]}, "urgent": {"type": "boolean"}},
        "required": ["intent", "urgent"],
        "additionalProperties": False,
    }
    conversation = await chat_with_format(alice, {"type": "json_schema", "schema": schema}, max_new_tokens=4)
    tab = await chat_client(alice, conversation.pk)
    await start_worker()
    done = (await tab.receive_until("done", timeout=60))[-1]
    assert done["finish_reason"] == "length"
    reply = await reply_row(conversation)
    parts = [reply.content]
    for _ in range(12):  # 4 tokens at a time until the answer is whole
        await tab.send({"type": "continue", "message_id": reply.pk})
        done = (await tab.receive_until("done", timeout=60, message_id=reply.pk))[-1]
        parts.append((await reply_row(conversation)).content)
        if done["finish_reason"] != "length":
            break
    assert done["finish_reason"] == "stop" and done["status"] == "complete", done
    answer = json.loads(parts[-1])
    assert answer["intent"] in schema["properties"]["intent"]["enum"] and isinstance(answer["urgent"], bool)
    assert all(later.startswith(earlier) for earlier, later in zip(parts, parts[1:]))
    assert len(parts) > 2, "the answer was written in several parts"


async def test_a_continuation_that_cannot_start_leaves_the_reply_as_it_was(alice, worker, chat_client):
    """A cut text that no longer fits the reply's output format (written before the format changed,
    say) is refused by the format, not continued outside it: the reply stays cut and whole, saying why."""
    schema = {"type": "object", "properties": {"intent": {"enum": ["refund", "question"]}}, "required": ["intent"]}
    conversation = await chat_with_format(alice, {"type": "json_schema", "schema": schema}, max_new_tokens=4)
    tab = await chat_client(alice, conversation.pk)
    await tab.receive_until("done", timeout=60)
    reply = await reply_row(conversation)
    await database_sync_to_async(Message.objects.filter(pk=reply.pk).update)(content="Not JSON at all")
    await tab.send({"type": "continue", "message_id": reply.pk})
    done = (await tab.receive_until("done", timeout=60, message_id=reply.pk))[-1]
    assert done["status"] == "complete" and done["finish_reason"] == "length"
    assert "could not be continued" in done["error"] and "does not follow its output format" in done["error"]
    kept = await reply_row(conversation)
    assert (kept.status, kept.content, kept.finish_reason, kept.completion_tokens) == (
        "complete",
        "Not JSON at all",
        "length",
        reply.completion_tokens,
    )
    assert kept.continuable


def test_a_long_history_fitted_for_a_continuation_keeps_the_question_and_the_cut_text(tiny_model):
    """Older turns go first to fit the context; the reply being continued keeps the question it
    answers (here a long one, which the walk's estimate alone would have dropped), and the prompt
    ends with its text, left open."""
    import dataclasses

    from studio.llm.replies import fit_to_context

    small = dataclasses.replace(tiny_model, context_length=160)  # 112 tokens for the prompt
    history = [{"role": "system", "content": "Be brief."}]
    for n in range(3):
        history += [
            {"role": "user", "content": f"Old question {n}"},
            {"role": "assistant", "content": f"Old answer {n}"},
        ]
    history += [{"role": "user", "content": "word " * 86}, {"role": "assistant", "content": "It was a dark"}]
    kept, ids = fit_to_context(small, history, 48, continue_final=True)
    assert kept == [history[0], *history[-2:]]
    assert len(ids) <= 160 - 48
    assert tiny_model.tokenizer.decode(ids).endswith("<|im_start|>assistant\nIt was a dark")
