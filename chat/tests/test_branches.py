"""Branches: an edit or a regeneration starts a branch and keeps the old one; `switch` moves
between them; every tab, a reload and the model see the same active branch."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Message
from chat.selectors import Branches, chat_history_before

pytestmark = [pytest.mark.django_db(transaction=True)]


def message_frames(frames):
    return [f["message"] for f in frames if f["type"] == "message"]


async def converse(client, text):
    """Send `text`, wait for the reply: (user message id, reply id)."""
    await client.send({"type": "send", "content": text})
    frames = await client.receive_until("done")
    sent = message_frames(frames)
    return sent[0]["id"], frames[-1]["message_id"]


@database_sync_to_async
def active_path(conversation_id):
    return Branches.of(Conversation.objects.get(pk=conversation_id)).active_path()


@database_sync_to_async
def history_of(message_id):
    return chat_history_before(message=Message.objects.select_related("conversation").get(pk=message_id))


async def test_an_edit_starts_a_branch_that_the_model_reads_and_keeps_the_old_one(
    alice, worker, chat_client, new_conversation
):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    first_question, first_answer = await converse(client, "What is a pear?")
    second_question, second_answer = await converse(client, "And an apple?")

    await client.send({"type": "edit", "message_id": first_question, "content": "What is a fig?"})
    frames = await client.receive_until("done")
    edited, reply = message_frames(frames)[:2]
    assert edited["role"] == "user" and edited["content"] == "What is a fig?" and edited["parent"] is None
    assert edited["siblings"] == [first_question, edited["id"]]
    assert reply["parent"] == edited["id"] and reply["siblings"] == [reply["id"]]
    assert {"type": "branch", "active": [edited["id"], reply["id"]]} in frames
    assert frames[-1]["status"] == "complete"

    # The model read the new branch only; the old branch is all still stored.
    assert await history_of(reply["id"]) == [{"role": "user", "content": "What is a fig?"}]
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 6

    # Switching back to the first question brings its whole branch, down to the last reply.
    await client.send({"type": "switch", "message_id": first_question})
    frames = await client.receive_until("branch")
    assert frames[-1]["active"] == [first_question, first_answer, second_question, second_answer]
    assert [m["id"] for m in message_frames(frames)] == [first_question, first_answer, second_question, second_answer]
    assert message_frames(frames)[0]["siblings"] == [first_question, edited["id"]]
    assert await active_path(conversation.pk) == [first_question, first_answer, second_question, second_answer]

    # Sending now continues the active branch.
    third_question, third_answer = await converse(client, "Thanks")
    assert await active_path(conversation.pk) == [
        first_question,
        first_answer,
        second_question,
        second_answer,
        third_question,
        third_answer,
    ]
    history = await history_of(third_answer)
    assert [m["content"] for m in history if m["role"] == "user"] == ["What is a pear?", "And an apple?", "Thanks"]


async def test_two_tabs_and_a_reload_show_the_same_branch(alice, worker, chat_client, new_conversation):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    question, answer = await converse(tab, "Hello")
    other_tab = await chat_client(alice, conversation.pk)
    await other_tab.receive_until("message", timeout=10)
    await other_tab.receive_until("message", timeout=10)  # the history: question and answer

    await tab.send({"type": "regenerate", "message_id": answer})
    frames = await tab.receive_until("done")
    second = message_frames(frames)[0]
    assert second["siblings"] == [answer, second["id"]]
    seen_by_other = await other_tab.receive_until("branch")
    assert seen_by_other[-1]["active"] == [question, second["id"]]

    await other_tab.send({"type": "switch", "message_id": answer})
    assert (await tab.receive_until("branch"))[-1]["active"] == [question, answer]

    reloaded = await chat_client(alice, conversation.pk)
    history = [await reloaded.receive(), await reloaded.receive()]
    assert [m["id"] for m in message_frames(history)] == [question, answer]
    assert message_frames(history)[1]["siblings"] == [answer, second["id"]]


async def test_the_page_shows_the_active_branch_with_its_switch(alice, worker, chat_client, new_conversation, client):
    conversation = await new_conversation(alice)
    tab = await chat_client(alice, conversation.pk)
    question, answer = await converse(tab, "Hello")
    await tab.send({"type": "regenerate", "message_id": answer})
    second = (await tab.receive_until("done"))[-1]["message_id"]
    await database_sync_to_async(client.force_login)(alice)
    page = (await database_sync_to_async(client.get)(f"/chat/{conversation.pk}/")).content.decode()
    assert f'id="message-{second}"' in page and f'id="message-{answer}"' not in page
    assert "2/2" in page and f'data-target="{answer}"' in page


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"type": "switch", "message_id": 999999}, "no_such_message"),
        ({"type": "switch", "message_id": "x"}, "no_such_message"),
        ({"type": "switch"}, "no_such_message"),
        ({"type": "edit", "message_id": 999999, "content": "hi"}, "no_such_message"),
        ({"type": "edit", "message_id": 1, "content": 5}, "malformed_frame"),
        ({"type": "regenerate", "message_id": 999999}, "no_such_message"),
    ],
)
async def test_frames_about_missing_messages_are_refused(alice, worker, chat_client, new_conversation, frame, code):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send(frame)
    reply = await client.receive()
    assert (reply["type"], reply["code"]) == ("error", code)


async def test_nobody_edits_switches_or_regenerates_in_another_persons_conversation(
    alice, bob, worker, chat_client, new_conversation
):
    alices = await new_conversation(alice)
    alice_tab = await chat_client(alice, alices.pk)
    question, answer = await converse(alice_tab, "My secret plan")
    bobs = await new_conversation(bob)
    bob_tab = await chat_client(bob, bobs.pk)
    for frame, said in [
        ({"type": "switch", "message_id": question}, f"no message {question}"),
        ({"type": "edit", "message_id": question, "content": "mine now"}, f"no message of yours {question}"),
        ({"type": "regenerate", "message_id": answer}, f"no reply {answer}"),
    ]:
        await bob_tab.send(frame)
        reply = await bob_tab.receive()
        # The same answer as for a message that does not exist: nothing about Alice's is revealed.
        assert reply == {"type": "error", "error": reply["error"], "code": "no_such_message"} and said in reply["error"]
    assert await active_path(alices.pk) == [question, answer]
    assert await database_sync_to_async(Message.objects.filter(conversation=alices).count)() == 2


async def test_an_edit_while_the_model_answers_is_refused_and_nothing_changes(
    alice, start_worker, chat_client, settings, new_conversation
):
    settings.LLM_MAX_NEW_TOKENS = 4000
    await start_worker()
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Write a lot"})
    frames = await client.receive_until("token")
    question = message_frames(frames)[0]["id"]
    await client.send({"type": "edit", "message_id": question, "content": "Write less"})
    refusal = (await client.receive_until("error"))[-1]
    assert refusal["code"] == "reply_in_progress" and "stop the reply before editing" in refusal["error"]
    await client.send({"type": "stop"})
    await client.receive_until("done")
    assert len(await active_path(conversation.pk)) == 2


def test_conversations_stored_before_branches_open_as_one_straight_branch(alice, client):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0008_message_error_code")])
    old_apps = executor.loader.project_state([("chat", "0008_message_error_code")]).apps
    old_conversation = old_apps.get_model("chat", "Conversation").objects.create(owner_id=alice.pk, title="Before")
    old_messages = old_apps.get_model("chat", "Message").objects
    stored = [
        old_messages.create(conversation=old_conversation, role=role, content=content).pk
        for role, content in [("user", "One"), ("assistant", "Two"), ("user", "Three"), ("assistant", "Four")]
    ]

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    conversation = Conversation.objects.get(pk=old_conversation.pk)
    assert Branches.of(conversation).active_path() == stored
    assert list(Message.objects.filter(conversation=conversation).values_list("parent_id", flat=True)) == [
        None,
        *stored[:-1],
    ]
    assert [m["content"] for m in chat_history_before(message=Message.objects.get(pk=stored[-1]))] == [
        "One",
        "Two",
        "Three",
    ]
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert all(f'id="message-{pk}"' in page for pk in stored)
