"""Side by side: one message, two replies (the conversation's model and another) written in the
same batch; keeping one records the preference pair."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Message
from chat.selectors import Branches
from chat.services import message_append
from tests.settings import TINY_MODEL_DIR

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_two_replies_stream_side_by_side_in_one_batch(alice, worker, chat_client, new_conversation):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Compare these", "compare": TINY_MODEL_DIR.name})
    frames = []
    while sum(1 for f in frames if f["type"] == "done") < 2:
        frames.extend(await client.receive_until("done", timeout=30))
    sent = [f["message"] for f in frames if f["type"] == "message"]
    question, reply, side = sent[0], sent[1], sent[2]
    assert reply["parent"] == side["parent"] == question["id"]
    assert side["side_of"] == reply["id"] and reply["siblings"] == side["siblings"] == [reply["id"], side["id"]]
    assert {"type": "branch", "active": [question["id"], reply["id"]]} in frames
    # Both were being written before either ended: the same batch.
    started = [i for i, f in enumerate(frames) if f["type"] == "message" and f["message"]["status"] == "streaming"]
    first_done = next(i for i, f in enumerate(frames) if f["type"] == "done")
    assert len(started) == 2 and max(started) < first_done
    assert all(f["status"] == "complete" for f in frames if f["type"] == "done")
    stored = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation, role="assistant").values_list("model_name", "status")
        )
    )()
    assert stored == [(TINY_MODEL_DIR.name, "complete")] * 2
    # The model read the same conversation for both, and the active branch goes on from the first.
    await client.send({"type": "send", "content": "Go on"})
    await client.receive_until("done", timeout=30)
    from chat.models import Conversation

    path = await database_sync_to_async(
        lambda: Branches.of(Conversation.objects.get(pk=conversation.pk)).active_path()
    )()
    assert path[:2] == [question["id"], reply["id"]] and len(path) == 4


async def test_side_by_side_with_an_unknown_model_is_refused_and_nothing_is_stored(
    alice, worker, chat_client, new_conversation
):
    conversation = await new_conversation(alice)
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Compare", "compare": "no-such-model"})
    refusal = await client.receive()
    assert (refusal["type"], refusal["code"]) == ("error", "no_such_model") and "no-such-model" in refusal["error"]
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()


def test_keeping_one_of_two_replies_records_the_preference_pair(client, alice, bob):
    from chat.models import Conversation
    from evals.models import FailureCase
    from evals.services import cases_prefer

    conversation = Conversation.objects.create(owner=alice, title="Pair")
    question = message_append(conversation=conversation, role="user", content="Capital of France?")
    kept = message_append(conversation=conversation, role="assistant", content="Paris.")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="Lyon, I think.", side_of=kept
    )
    client.force_login(bob)
    assert client.post(f"/cases/prefer/{kept.pk}/").status_code == 404  # not bob's conversation
    client.force_login(alice)
    page = client.post(f"/cases/prefer/{kept.pk}/").content.decode()
    assert "preference pair #" in page
    case = FailureCase.objects.get()
    assert (case.actual, case.expected, case.input_text) == ("Lyon, I think.", "Paris.", "Capital of France?")
    assert [t.name for t in case.tags.all()] == ["preference"]
    assert cases_prefer(user=alice, kept=Message.objects.select_related("conversation").get(pk=kept.pk)) == [case]
    from finetune.training_data import training_rows

    (row,) = training_rows([case], "dpo")
    assert row["chosen"][0]["content"] == "Paris." and row["rejected"][0]["content"] == "Lyon, I think."
