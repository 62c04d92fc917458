"""Personas: alice owns the prompt "order-json" and flags replies; bob is another user; carol is staff.

The prompt asks for a fixed JSON shape, the kind of task SmolLM2-135M gets wrong.
"""

import pytest

from chat.models import Conversation, Message
from chat.services import message_append
from prompts import services as prompt_services

ORDER_VERSION = {
    "instructions": 'Reply with JSON only: {"item": <text>, "quantity": <number>}.',
    "template": "Order: {{ order }}",
    "commit_message": "First version",
    "max_new_tokens": 24,
}


@pytest.fixture
def order_prompt(alice):
    return prompt_services.prompt_create(owner=alice, name="Order JSON", slug="order-json", version=dict(ORDER_VERSION))


@pytest.fixture
def order_version(order_prompt):
    return order_prompt.versions.get(number=1)


def finished_reply(conversation, content="not json", model="tiny-llama-v2"):
    return message_append(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=content,
        status=Message.Status.COMPLETE,
        model_name=model,
    )


@pytest.fixture
def chat_with_reply(alice):
    """A plain chat: system prompt, two turns; the second reply is the bad one."""
    conversation = Conversation.objects.create(owner=alice, title="Weather", system_prompt="Be brief.")
    message_append(conversation=conversation, role="user", content="Hi")
    finished_reply(conversation, "Hello!")
    message_append(conversation=conversation, role="user", content="What is 2 + 2?")
    return conversation, finished_reply(conversation, "5")


@pytest.fixture
def make_cases(alice, order_version):
    """make_cases(n, **fields): n shared cases of order-json v1 by alice."""
    from evals import services
    from evals.models import FailureCase

    def make(n=3, user=None, **fields):
        rows = [
            {
                "prompt": "order-json",
                "version": 1,
                "input": {"order": f"{k + 2} apples"},
                "actual": "apples",
                "expected": f'{{"item": "apple", "quantity": {k + 2}}}',
                **fields,
            }
            for k in range(n)
        ]
        return services.cases_create(user=user or alice, rows=rows, source=FailureCase.Source.API)

    return make
