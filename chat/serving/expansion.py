"""Query expansion's model call (knowledge/expansion.py): the rewrites of a question asked of the
served default model as an unlisted reply, waited for here (a person is waiting: it is queued with
people's replies, not the background lane), then removed. Bounded by KNOWLEDGE_EXPANSION_TIMEOUT."""

from __future__ import annotations

import time
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings

from knowledge.expansion import REWRITE_INSTRUCTIONS, ExpansionFailed

from ..models import Conversation, Message
from .queue import replies_withdraw
from .wakeups import wake_workers

POLL_S = 0.05
REWRITE_PARAMETERS = {"max_new_tokens": 96, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 0}


def ask_for_rewrites(question: str, user, count: int) -> str:
    from .. import services  # noqa: PLC0415 - chat.services imports this app's serving modules

    key = f"expansion:{uuid.uuid4().hex}"
    reply = services.reply_request_unlisted(
        owner=user,
        kind=Conversation.Kind.RETRIEVAL,
        messages=[
            {"role": "system", "content": REWRITE_INSTRUCTIONS.format(count=count)},
            {"role": "user", "content": question},
        ],
        model_name="",
        parameters=REWRITE_PARAMETERS,
        title="Query expansion",
        job=key,
    )
    try:
        async_to_sync(wake_workers)()
        deadline = time.monotonic() + settings.KNOWLEDGE_EXPANSION_TIMEOUT
        while time.monotonic() < deadline:
            done = Message.objects.filter(pk=reply.pk).exclude(status__in=Message.IN_PROGRESS).first()
            if done is not None:
                if done.status == Message.Status.FAILED:
                    raise ExpansionFailed(f"the model gave no rewrites ({done.error or 'it failed'})")
                return done.content
            time.sleep(POLL_S)
        raise ExpansionFailed(
            f"no rewrites within {settings.KNOWLEDGE_EXPANSION_TIMEOUT:g} s (KNOWLEDGE_EXPANSION_TIMEOUT): "
            "the model workers are busy or away"
        )
    finally:
        replies_withdraw(message_ids=[reply.pk])
        Conversation.objects.filter(job=key).delete()
