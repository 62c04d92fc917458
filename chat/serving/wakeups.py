"""Wake-ups for model workers, from the web process and the job workers. The database row is the
queue; a message on REQUEST_CHANNEL only wakes an idle worker. Holds no model code: in scaled
mode the web process never imports torch or transformers.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger("chat.wakeups")

REQUEST_CHANNEL = "llm.generate"


async def wake_workers(channel_layer=None) -> None:
    """Tell an idle worker a reply is queued. Best effort: the row is the queue, and workers
    look at it every LLM_QUEUE_POLL_SECONDS anyway (the channel layer may be away or full)."""
    try:
        await (channel_layer or get_channel_layer()).send(REQUEST_CHANNEL, {"wake": True})
    except Exception as exc:
        log.warning("could not wake a worker (%s); it finds the reply when it next looks", exc)


def request_reply_after_commit() -> None:
    """From sync code (views): wake the workers once the queued reply is stored."""
    transaction.on_commit(lambda: async_to_sync(wake_workers)())
