"""The model worker: takes generation requests off the channel layer and streams replies.

Path (DESIGN.md): ChatConsumer → `send("llm.generate", {"message_id"})` → a worker claims
the queued reply → token chunks to `group_send(conversation group)` → the worker stores
the final reply. Several workers (scaled mode) compete on the one request channel.

Each worker also listens on its own channel for "chat.stop" and "chat.catchup" (a tab
that (re)connects mid-reply asks for the text so far) and renews a lease on the reply it
is writing; a reply whose lease lapses (its worker died) is failed by whoever sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from studio.llm import Generation, GenerationSettings, LoadedModel, load_model
from studio.llm.adapters import ServedModels

from . import selectors, services
from .models import Message, ModelWorker

log = logging.getLogger("chat.worker")

REQUEST_CHANNEL = "llm.generate"
_STREAM_END = object()


def load_configured_model() -> LoadedModel:
    return load_model(
        settings.LLM_MODEL,
        cache_dir=settings.LLM_MODEL_CACHE_DIR,
        device=settings.LLM_DEVICE,
        quantization=settings.LLM_QUANTIZATION,
    )


def generation_settings_from_config() -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=settings.LLM_MAX_NEW_TOKENS,
        min_new_tokens=settings.LLM_MIN_NEW_TOKENS,
        temperature=settings.LLM_TEMPERATURE,
        top_p=settings.LLM_TOP_P,
    )


@dataclass
class ActiveReply:
    message_id: int
    group_name: str
    generation: Generation | None = None
    text: str = ""  # what has been sent to the group so far


class GenerationWorker:
    def __init__(self, *, load=load_configured_model, channel_layer=None, defaults: GenerationSettings | None = None):
        self.load = load
        self.channel_layer = channel_layer or get_channel_layer()
        self.defaults = defaults or generation_settings_from_config()
        self.loaded: LoadedModel | None = None
        self.served: ServedModels | None = None  # the base model and its fine-tuned adapters
        self.load_error = ""
        self.state = ModelWorker.State.LOADING
        self.channel_name = ""
        self.active: ActiveReply | None = None
        # Held while a chunk is appended and sent, so a catch-up reply carries exactly the
        # text of the chunks sent before it.
        self.send_lock = asyncio.Lock()
        self.ready = asyncio.Event()  # set once the model is loaded (or failed to load)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        self.channel_name = await self.channel_layer.new_channel("llm-worker")
        await self._announce()
        helpers = [asyncio.create_task(self._listen_for_control()), asyncio.create_task(self._keep_leases())]
        try:
            await self._load_model()
            while True:
                request = await self.channel_layer.receive(REQUEST_CHANNEL)
                await self.handle_request(request)
        finally:
            for task in helpers:
                task.cancel()
            await self._give_up_active_reply("The model worker was shut down while writing this reply.")
            await database_sync_to_async(services.worker_forget)(channel_name=self.channel_name)

    async def _load_model(self) -> None:
        started = time.perf_counter()
        try:
            self.loaded = await asyncio.to_thread(self.load)
            self.served = ServedModels(self.loaded, settings.STUDIO_ADAPTERS_DIR)
        except Exception as exc:  # the worker stays up to tell every request why
            self.load_error = f"The model could not be loaded: {exc}"
            self.state = ModelWorker.State.FAILED
            log.error("%s", self.load_error)
        else:
            self.state = ModelWorker.State.READY
            log.info("worker %s ready in %.1f s: %s", self.channel_name, time.perf_counter() - started,
                     self.loaded.describe())
        await self._announce()
        self.ready.set()

    async def _announce(self) -> None:
        await database_sync_to_async(services.worker_heartbeat)(
            channel_name=self.channel_name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            model_name=self.loaded.name if self.loaded else "",
            description=self.loaded.describe() if self.loaded else "",
            error=self.load_error,
        )

    # --- one request -------------------------------------------------------------------

    async def handle_request(self, request: dict) -> None:
        message_id = request.get("message_id")
        requested = await database_sync_to_async(selectors.requested_model)(message_id=message_id)
        model_name = (requested or self.loaded.name) if self.loaded else ""
        message = await database_sync_to_async(services.reply_claim)(
            message_id=message_id, worker_channel=self.channel_name, model_name=model_name
        )
        if message is None:
            return  # stopped while queued, or failed by the queue timeout
        self.active = ActiveReply(message_id=message.pk, group_name=message.conversation.group_name)
        await self.channel_layer.group_send(
            self.active.group_name, {"type": "chat.message", "message": message.to_frame()}
        )
        try:
            if self.loaded is None:
                raise RuntimeError(self.load_error or "The model is not loaded.")
            history, overrides = await database_sync_to_async(self._history_and_overrides)(message)
            generation_settings = dataclasses.replace(self.defaults, **overrides)
            # Replies are written one at a time, so switching the adapter here affects only this one.
            await asyncio.to_thread(self.served.activate, model_name)
            generation = await asyncio.to_thread(Generation, self.served.loaded, history, generation_settings)
            self.active.generation = generation
            await self._stream(generation)
        except Exception as exc:
            log.exception("reply %s failed", message.pk)
            await self._finish(Message.Status.FAILED, usage={}, error=describe_failure(exc))
        else:
            status = Message.Status.STOPPED if generation.finish_reason == "cancelled" else Message.Status.COMPLETE
            await self._finish(status, usage=generation.usage.as_dict())
        finally:
            self.active = None

    @staticmethod
    def _history_and_overrides(message: Message) -> tuple[list[dict], dict]:
        return selectors.chat_history_before(message=message), selectors.generation_overrides(message=message)

    async def _stream(self, generation: Generation) -> None:
        """Run the generation in a thread; send its text to the group in chunks."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()

        def produce():
            try:
                for delta in generation:
                    loop.call_soon_threadsafe(deltas.put_nowait, delta)
            except BaseException as exc:
                loop.call_soon_threadsafe(deltas.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(deltas.put_nowait, _STREAM_END)

        producer = loop.run_in_executor(None, produce)
        flush_s = settings.LLM_FLUSH_MS / 1000
        pending, pending_count, last_flush = "", 0, 0.0  # last_flush 0: the first token goes at once
        try:
            while True:
                timeout = None if not pending else max(0.0, last_flush + flush_s - time.perf_counter())
                try:
                    item = await asyncio.wait_for(deltas.get(), timeout)
                except TimeoutError:
                    item = None
                if item is _STREAM_END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if item is not None:
                    pending += item
                    pending_count += 1
                now = time.perf_counter()
                if pending and (item is None or pending_count >= settings.LLM_FLUSH_TOKENS or now - last_flush >= flush_s):
                    await self._send_chunk(pending)
                    pending, pending_count, last_flush = "", 0, now
            if pending:
                await self._send_chunk(pending)
        finally:
            if not producer.done():  # cancelled or failed mid-stream: free the model thread
                generation.cancel()
            await asyncio.shield(producer)

    async def _send_chunk(self, text: str) -> None:
        async with self.send_lock:
            self.active.text += text
            await self.channel_layer.group_send(
                self.active.group_name, {"type": "chat.token", "message_id": self.active.message_id, "text": text}
            )

    async def _finish(self, status: str, *, usage: dict, error: str = "") -> None:
        active = self.active
        stored = await database_sync_to_async(services.reply_finish)(
            message_id=active.message_id, content=active.text, status=status, usage=usage, error=error
        )
        if not stored:
            return  # the lease lapsed and a reaper already failed it and told the tabs
        await self.channel_layer.group_send(
            active.group_name,
            {"type": "chat.done", "message_id": active.message_id, "status": status, "usage": usage, "error": error},
        )

    async def _give_up_active_reply(self, error: str) -> None:
        if self.active is None:
            return
        if self.active.generation is not None:
            self.active.generation.cancel()
        try:
            await asyncio.shield(self._finish(Message.Status.FAILED, usage={}, error=error))
        except Exception:
            log.exception("could not mark reply %s failed on shutdown", self.active.message_id)

    # --- control channel and leases ----------------------------------------------------

    async def _listen_for_control(self) -> None:
        while True:
            event = await self.channel_layer.receive(self.channel_name)
            active = self.active
            if active is None or event.get("message_id") != active.message_id:
                if event.get("type") == "chat.catchup" and event.get("reply_channel"):
                    # The reply ended meanwhile: the tab reads it from the database.
                    await self.channel_layer.send(event["reply_channel"], {"type": "chat.catchup",
                                                                           "message_id": event.get("message_id"),
                                                                           "text": None})
                continue
            if event.get("type") == "chat.stop" and active.generation is not None:
                active.generation.cancel()
            elif event.get("type") == "chat.catchup" and event.get("reply_channel"):
                async with self.send_lock:
                    await self.channel_layer.send(
                        event["reply_channel"],
                        {"type": "chat.catchup", "message_id": active.message_id, "text": active.text},
                    )

    async def _keep_leases(self) -> None:
        interval = max(settings.LLM_LEASE_SECONDS / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew_once()
            except Exception:
                log.exception("lease renewal failed")

    async def _renew_once(self) -> None:
        active = self.active
        if active is not None:
            alive = await database_sync_to_async(services.reply_renew_lease)(
                message_id=active.message_id, content=active.text
            )
            if not alive and active.generation is not None:
                active.generation.cancel()  # failed by a reaper meanwhile: stop wasting the GPU
        await self._announce()
        await fail_expired_replies(self.channel_layer)
        await database_sync_to_async(services.workers_forget_silent)()


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


def describe_failure(exc: Exception) -> str:
    """A sentence a person can act on, never a stack trace."""
    text = str(exc) or exc.__class__.__name__
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return "The model ran out of memory writing this reply. Try a shorter conversation or a smaller model."
    return text if text.endswith(".") else text + "."


# --- embedded mode ---------------------------------------------------------------------

_embedded: dict[int, asyncio.Task] = {}


def request_reply_after_commit(message_id: int) -> None:
    """From sync code (views): ask the workers for a reply once the queued message is stored."""
    from asgiref.sync import async_to_sync
    from django.db import transaction

    def send():
        async_to_sync(get_channel_layer().send)(REQUEST_CHANNEL, {"message_id": message_id})

    transaction.on_commit(send)


def ensure_embedded_worker() -> None:
    """Start the in-process worker on the running event loop, once (embedded mode)."""
    if not settings.LLM_EMBEDDED_WORKER:
        return
    loop = asyncio.get_running_loop()
    task = _embedded.get(id(loop))
    if task is None or task.done():
        worker = GenerationWorker()
        _embedded[id(loop)] = loop.create_task(worker.run(), name="embedded-llm-worker")
