"""API requests and an evaluation's cases are conversations a person can find: the sidebar lists
them by kind, and the API says where its request is kept."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from chat.models import Conversation
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_sidebar_lists_chats_api_requests_and_evaluation_cases_apart(client, alice, bob):
    Conversation.objects.create(owner=alice, title="a chat", kind="chat", system_prompt="x")
    Conversation.objects.create(owner=alice, title="API: tiny", kind="api")
    Conversation.objects.create(owner=bob, title="API: bob's", kind="api")
    client.force_login(alice)
    chats = client.get("/chat/").content.decode()
    assert "a chat" in chats and "API: tiny" not in chats
    api = client.get("/chat/?kind=api").content.decode()
    assert "API: tiny" in api and "a chat" not in api and "bob&#x27;s" not in api
    assert "No evaluation is being answered now" in client.get("/chat/?kind=evaluation").content.decode()


def test_an_api_request_says_which_conversation_keeps_it(alice):
    token = api_token_create(user=alice, name="sdk")[1]
    answer = Client().post(
        "/v1/chat/completions",
        json.dumps({"model": TINY_MODEL_DIR.name, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    conversation = Conversation.objects.get(owner=alice, kind="api")
    assert answer["X-Studio-Conversation"] == f"/chat/{conversation.pk}/"
    from asgiref.sync import async_to_sync

    async def first_event():
        async for part in answer.streaming_content:
            return part.decode()

    first = async_to_sync(first_event)()
    assert json.loads(first.removeprefix("data: "))["studio"] == {"conversation": conversation.pk}


def test_the_model_picker_refreshes_itself_only_when_the_models_change(client, alice):
    from chat.serving.registry import available_models

    conversation = Conversation.objects.create(owner=alice, title="c")
    client.force_login(alice)
    known = "|".join(available_models())
    assert client.get(f"/chat/{conversation.pk}/model/", {"known": known}).status_code == 204
    changed = client.get(f"/chat/{conversation.pk}/model/", {"known": known + "|gone"})
    assert changed.status_code == 200 and 'id="model-picker"' in changed.content.decode()
