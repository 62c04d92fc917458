"""Personas: alice owns the prompt "support" (its version 1 carries the `production` label), dave is
one of its editors, bob is another user (he sees the prompt, as everyone does, but not its traffic),
carol is staff. Live replies are stored as the studio stores them: an API request (`prompt:support`)
is an `api` conversation with the version; a chat from a version is a `chat` one."""

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
LENGTH = {"type": "length", "max": 200}


@pytest.fixture
def dave(django_user_model):
    return django_user_model.objects.create_user("dave", password="dave-password-1")


@pytest.fixture
def support(alice, dave):
    prompt = prompt_services.prompt_create(owner=alice, name="Support", slug="support", version=dict(SUPPORT_VERSION))
    prompt.editors.add(dave)
    prompt_services.label_move(prompt=prompt, name="production", version=prompt.versions.get(number=1), user=alice)
    return prompt


@pytest.fixture
def v1(support):
    return support.versions.get(number=1)


@pytest.fixture
def v2(support, alice):
    return prompt_services.version_create(
        prompt=support, author=alice, fields={**SUPPORT_VERSION, "commit_message": "v2"}
    )


def live_reply(
    version,
    *,
    owner,
    question="Where is my order?",
    answer="It left the warehouse today.",
    kind=Conversation.Kind.API,
    status=Message.Status.COMPLETE,
    requested_model="",
):
    """One reply of `version` as the studio stores a request to it."""
    conversation = Conversation.objects.create(
        owner=owner, kind=kind, prompt_version=version, prompt_variables={"question": question}, title=question
    )
    message_append(conversation=conversation, role=Message.Role.USER, content=f"Question: {question}")
    return message_append(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=answer,
        status=status,
        model_name="tiny-llama-v2",
        requested_model=requested_model,
    )


@pytest.fixture
def tokens(alice, bob, carol, dave):
    return {user.username: api_token_create(user=user, name="online")[1] for user in (alice, bob, carol, dave)}


class Api:
    """The online evaluation API as one person calls it."""

    def __init__(self, client, token):
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path):
        return self.client.get(path, **self.headers)

    def post(self, path, body=None):
        import json

        return self.client.post(
            path, data=json.dumps(body) if body is not None else "", content_type="application/json", **self.headers
        )

    def delete(self, path):
        return self.client.delete(path, **self.headers)


@pytest.fixture
def api(client, tokens):
    return lambda username: Api(client, tokens[username])


class Sent:
    """What the receiver handed to the sending thread (the thread itself is not started)."""

    def __init__(self):
        self.sample_ids = []

    def submit(self, function, sample_ids):
        self.sample_ids += sample_ids


@pytest.fixture
def sent(monkeypatch):
    from online import sampling

    recorder = Sent()
    monkeypatch.setattr(sampling, "_sending_thread", lambda: recorder)
    return recorder
