"""How replies reach model workers, for the web process: wake-ups, failing lapsed replies, and
the embedded worker. Holds no model code: in scaled mode the web process never imports torch or
transformers (chat.worker does, in `llm_worker` processes and the embedded worker only).
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from . import services
from .models import Message

log = logging.getLogger("chat.dispatch")

REQUEST_CHANNEL = "llm.generate"


async def fail_expired_replies(channel_layer, *, conversation_id: int | None = None) -> list[Message]:
    """Fail replies whose worker died or never came, and tell their tabs."""
    failed = await database_sync_to_async(_fail_expired)(conversation_id)
    for message, group_name in failed:
        await channel_layer.group_send(
            group_name,
            {"type": "chat.done", "message_id": message.pk, "status": message.status,
             "usage": message.usage(), "error": message.error},
        )
    return [message for message, _ in failed]


def _fail_expired(conversation_id):
    return [(m, m.conversation.group_name) for m in services.replies_fail_expired(conversation_id=conversation_id)]


# --- embedded mode ---------------------------------------------------------------------

_embedded: dict[int, asyncio.Task] = {}  # event loop id → its in-process worker


async def wake_workers(channel_layer=None) -> None:
    """Tell an idle worker a reply is queued. Best effort: the row is the queue, and workers
    look at it every LLM_QUEUE_POLL_SECONDS anyway (the channel layer may be away or full)."""
    try:
        await (channel_layer or get_channel_layer()).send(REQUEST_CHANNEL, {"wake": True})
    except Exception as exc:
        log.warning("could not wake a worker (%s); it finds the reply when it next looks", exc)


def request_reply_after_commit(message_id: int) -> None:
    """From sync code (views): wake the workers once the queued reply is stored."""
    from asgiref.sync import async_to_sync
    from django.db import transaction

    transaction.on_commit(lambda: async_to_sync(wake_workers)())


def ensure_embedded_worker() -> None:
    """Start the in-process worker on the running event loop, once (embedded mode)."""
    if not settings.LLM_EMBEDDED_WORKER:
        return
    loop = asyncio.get_running_loop()
    task = _embedded.get(id(loop))
    if task is None or task.done():
        from .worker import GenerationWorker  # model code: imported only where a model is served

        worker = GenerationWorker()
        _embedded[id(loop)] = loop.create_task(worker.run(), name="embedded-llm-worker")
