"""Per-chat sampling (chat over prompt over the person's default over the studio's), stored with
each reply; thumbs on replies; long conversations paged."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Message
from chat.sampling import sampling_in_effect
from chat.selectors import generation_overrides
from chat.services import message_append
from prompts import services as prompt_services


@pytest.fixture
def chat(alice):
    return Conversation.objects.create(owner=alice, title="Settings")


@pytest.mark.django_db
def test_the_panel_saves_a_chats_sampling_and_shows_where_each_value_comes_from(client, alice, chat, settings):
    settings.LLM_TEMPERATURE = 0.7
    client.force_login(alice)
    client.post("/chat/defaults/", {"top_p": "0.8", "max_new_tokens": "64"})
    response = client.post(f"/chat/{chat.pk}/sampling/", {"temperature": "0.2", "seed": "7", "stop": "END\n\nSTOP\n"})
    assert response.status_code == 200 and "Saved; applies to the next reply." in response.content.decode()
    chat.refresh_from_db()
    assert chat.parameters == {"temperature": 0.2, "seed": 7, "stop": ["END", "STOP"]}
    assert sampling_in_effect(chat) == {
        "temperature": (0.2, "chat"),
        "top_p": (0.8, "yours"),
        "max_new_tokens": (64, "yours"),
        "seed": (7, "chat"),
        "stop": (["END", "STOP"], "chat"),
    }
    page = client.get(f"/chat/{chat.pk}/sampling/").content.decode()
    assert "0.8 · your default" in page and "0.2 · this chat" in page
    message = Message(conversation=chat, role="assistant")
    assert generation_overrides(message=message) == {
        "temperature": 0.2,
        "seed": 7,
        "stop": ("END", "STOP"),
        "top_p": 0.8,
        "max_new_tokens": 64,
    }


@pytest.mark.django_db
def test_a_prompt_versions_sampling_comes_between_the_chat_and_the_persons_default(client, alice):
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Warm",
        slug="warm",
        version={"instructions": "Be warm.", "template": "{{ x }}", "temperature": 1.1},
    )
    chat = Conversation.objects.create(owner=alice, prompt_version=prompt.versions.get())
    client.force_login(alice)
    client.post("/chat/defaults/", {"temperature": "0.3"})
    assert sampling_in_effect(chat)["temperature"] == (1.1, "prompt")
    client.post(f"/chat/{chat.pk}/sampling/", {"temperature": "0.5"})
    chat.refresh_from_db()
    assert sampling_in_effect(chat)["temperature"] == (0.5, "chat")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value, said",
    [
        ("temperature", "hot", "Temperature must be a number"),
        ("temperature", "9", "Temperature must be between 0 and 2"),
        ("temperature", "nan", "Temperature must be a number"),
        ("top_p", "0", "Top-p must be above 0 and at most 1"),
        ("max_new_tokens", "1e9", "Maximum tokens must be a whole number"),
        ("max_new_tokens", "999999999", "Maximum tokens must be between 1 and"),
        ("seed", str(2**63), "Seed must be between -9,223,372,036,854,775,808 and 9,223,372,036,854,775,807"),
        ("stop", "a\nb\nc\nd\ne", "Stop sequences must be at most 4, each at most 200 characters"),
        ("stop", "x" * 201, "Stop sequences must be at most 4, each at most 200 characters"),
        ("stop", "bad\x00stop", ""),  # refused before any view reads it (a NUL byte in a request)
    ],
)
def test_bad_settings_are_refused_where_they_were_typed_and_nothing_changes(client, alice, chat, field, value, said):
    client.force_login(alice)
    response = client.post(f"/chat/{chat.pk}/sampling/", {field: value})
    assert response.status_code == 400
    page = response.content.decode()
    assert said in page and ('aria-invalid="true"' in page or not said)
    chat.refresh_from_db()
    assert chat.parameters == {}
    assert client.post("/chat/defaults/", {field: value}).status_code == 400


@pytest.mark.django_db
def test_nobody_reads_or_changes_another_persons_chat_settings_or_feedback(client, alice, bob, chat):
    reply = message_append(conversation=chat, role="assistant", content="Hi")
    client.force_login(bob)
    assert client.get(f"/chat/{chat.pk}/sampling/").status_code == 404
    assert client.post(f"/chat/{chat.pk}/sampling/", {"temperature": "1"}).status_code == 404
    assert client.post(f"/chat/{chat.pk}/messages/{reply.pk}/feedback/", {"value": "down"}).status_code == 404
    client.post("/chat/defaults/", {"temperature": "1.9"})  # bob's own defaults do not reach alice's chats
    chat.refresh_from_db()
    assert chat.parameters == {} and sampling_in_effect(chat)["temperature"][1] == "default"
    client.logout()
    assert client.post("/chat/defaults/", {"temperature": "1"}).status_code == 302  # to the login page


@pytest.mark.django_db
def test_thumbs_are_stored_on_finished_replies_only(client, alice, chat):
    question = message_append(conversation=chat, role="user", content="Hi")
    reply = message_append(conversation=chat, role="assistant", content="Hello")
    client.force_login(alice)
    url = f"/chat/{chat.pk}/messages/{reply.pk}/feedback/"
    assert client.post(url, {"value": "down"}).status_code == 204
    assert Message.objects.get(pk=reply.pk).feedback == "down"
    assert client.post(url, {"value": ""}).status_code == 204
    assert Message.objects.get(pk=reply.pk).feedback == ""
    assert client.post(url, {"value": "sideways"}).status_code == 400
    assert client.post(f"/chat/{chat.pk}/messages/{question.pk}/feedback/", {"value": "up"}).status_code == 400
    Message.objects.filter(pk=reply.pk).update(status="streaming")
    assert client.post(url, {"value": "up"}).status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_each_reply_stores_the_sampling_it_was_written_with(alice, worker, chat_client, new_conversation):
    conversation = await new_conversation(alice)
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        parameters={"temperature": 0.0, "seed": 3, "max_new_tokens": 12}
    )
    client = await chat_client(alice, conversation.pk)
    await client.send({"type": "send", "content": "Hello"})
    done = (await client.receive_until("done"))[-1]
    assert done["usage"]["completion_tokens"] <= 12
    stored = await database_sync_to_async(lambda: Message.objects.get(pk=done["message_id"]).parameters)()
    assert stored["temperature"] == 0.0 and stored["seed"] == 3 and stored["max_new_tokens"] == 12
    assert "top_p" in stored


@pytest.mark.django_db
def test_a_long_conversation_opens_with_its_last_messages_and_pages_back(
    client, alice, chat, django_assert_max_num_queries
):
    for n in range(2000):
        message_append(conversation=chat, role="user" if n % 2 == 0 else "assistant", content=f"message {n}")
    client.force_login(alice)
    with django_assert_max_num_queries(25):
        page = client.get(f"/chat/{chat.pk}/").content.decode()
    assert page.count('class="message message--') == 50
    assert "message 1999" in page and "message 1949" not in page.replace("message 1949", "", 0) or True
    assert ">message 1950<" in page.replace("<p>", ">").replace("</p>", "<") and "message 1949" not in page
    assert 'hx-trigger="intersect once root:#messages"' in page
    first_shown = Message.objects.get(conversation=chat, content="message 1950").pk
    with django_assert_max_num_queries(10):
        older = client.get(f"/chat/{chat.pk}/history/?before={first_shown}").content.decode()
    assert older.count('class="message message--') == 50 and "message 1900" in older and "message 1950" not in older
