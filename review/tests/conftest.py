"""Personas: alice owns the prompt "support" (answers a customer's question), dave is one of its
editors, bob is another user who may see the prompt (prompts are team data) but not review its
traffic, carol is staff. Live replies are stored as the studio stores them: an API request
(`prompt:support`) is an `api` conversation with the version, its variables and the reply."""

import json

import pytest

from accounts.services import api_token_create
from chat.models import Conversation, Message
from chat.services import message_append
from prompts import services as prompt_services

SUPPORT_VERSION = {
    "instructions": "Answer the customer in one sentence.",
    "template": "Question: {{ question }}",
    "commit_message": "First version",
    "max_new_tokens": 24,
}


@pytest.fixture
def dave(django_user_model):
    return django_user_model.objects.create_user("dave", password="dave-password-1")


@pytest.fixture
def support(alice, dave):
    prompt = prompt_services.prompt_create(owner=alice, name="Support", slug="support", version=dict(SUPPORT_VERSION))
    prompt.editors.add(dave)
    return prompt


@pytest.fixture
def support_version(support):
    return support.versions.get(number=1)


def live_reply(version, *, owner, question="Where is my order?", answer="No idea.", kind=Conversation.Kind.API):
    """One finished reply of `version` as a request to it stored it (its owner: the token's person)."""
    conversation = Conversation.objects.create(
        owner=owner,
        kind=kind,
        system_prompt=version.instructions,
        prompt_version=version,
        prompt_variables={"question": question},
        model_name="tiny-llama-v2",
        title=question,
    )
    message_append(conversation=conversation, role=Message.Role.USER, content=f"Question: {question}")
    return message_append(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=answer,
        status=Message.Status.COMPLETE,
        model_name="tiny-llama-v2",
    )


@pytest.fixture
def reply(support_version, bob):
    """A reply to bob's request to `prompt:support` (bob uses the prompt; alice owns it)."""
    return live_reply(support_version, owner=bob)


@pytest.fixture
def tokens(alice, bob, carol, dave):
    return {user.username: api_token_create(user=user, name="review")[1] for user in (alice, bob, carol, dave)}


class Api:
    """The review API as one person calls it."""

    def __init__(self, client, token):
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path):
        return self.client.get(path, **self.headers)

    def post(self, path, body=None):
        return self.client.post(path, json.dumps(body or {}), content_type="application/json", **self.headers)


@pytest.fixture
def api(client, tokens):
    """api("alice").get("/api/review-queue/?prompt=support")"""
    return lambda username: Api(client, tokens[username])
