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
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from studio.llm import GenerationSettings, LoadedModel, load_model
from studio.llm.adapters import ServedModels
from studio.llm.engine import BatchEngine, EngineRequest, EngineResult

from . import selectors, services
from .models import Message, ModelWorker

log = logging.getLogger("chat.worker")

REQUEST_CHANNEL = "llm.generate"


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
        stall_timeout_s=settings.LLM_STALL_TIMEOUT_SECONDS,
    )


@dataclass
class ActiveReply:
    message_id: int
    group_name: str
    text: str = ""  # what has been sent to the group so far
    # Held while a chunk is appended and sent, so a catch-up reply carries exactly the text of
    # the chunks sent before it.
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
        self.engine: BatchEngine | None = None  # decodes every reply in flight together
        self.active: dict[int, ActiveReply] = {}  # message id → the reply being written
        # A worker takes no more replies than its batch holds: the rest wait on the request
        # channel, where another worker (scaled mode) may take them.
        self.slots = asyncio.Semaphore(settings.LLM_MAX_BATCH)
        self.ready = asyncio.Event()  # set once the model is loaded (or failed to load)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        self.channel_name = await self.channel_layer.new_channel("llm-worker")
        await self._announce()
        helpers = [asyncio.create_task(self._listen_for_control()), asyncio.create_task(self._keep_leases())]
        replies: set[asyncio.Task] = set()
        try:
            await self._load_model()
            while True:
                await self.slots.acquire()
                request = await self.channel_layer.receive(REQUEST_CHANNEL)
                reply = asyncio.create_task(self._handle_in_slot(request))
                replies.add(reply)
                reply.add_done_callback(replies.discard)
        finally:
            for task in [*helpers, *replies]:
                task.cancel()
            await self._give_up_active_replies("The model worker was shut down while writing this reply.")
            if self.engine is not None:
                self.engine.close()
            await database_sync_to_async(services.worker_forget)(channel_name=self.channel_name)

    async def _handle_in_slot(self, request: dict) -> None:
        try:
            await self.handle_request(request)
        finally:
            self.slots.release()

    async def _load_model(self) -> None:
        started = time.perf_counter()
        try:
            self.loaded = await asyncio.to_thread(self.load)
            self.served = ServedModels(self.loaded, settings.STUDIO_ADAPTERS_DIR)
            self.engine = BatchEngine(self.loaded, max_batch=settings.LLM_MAX_BATCH)
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
        active = self.active[message.pk] = ActiveReply(message_id=message.pk,
                                                       group_name=message.conversation.group_name)
        await self.channel_layer.group_send(active.group_name, {"type": "chat.message", "message": message.to_frame()})
        try:
            if self.engine is None:
                raise RuntimeError(self.load_error or "The model is not loaded.")
            history, overrides = await database_sync_to_async(self._history_and_overrides)(message)
            generation_settings = dataclasses.replace(self.defaults, **overrides)
            # Adapters are added between decode steps; replies for different adapters share a batch.
            adapter = await asyncio.wrap_future(self.engine.call(lambda: self._prepare_adapter(model_name)))
            result = await self._stream(active, EngineRequest(
                key=message.pk, messages=history, settings=generation_settings, adapter=adapter,
                on_delta=lambda delta: None, on_done=lambda result: None))
        except Exception as exc:
            log.exception("reply %s failed", message.pk)
            await self._finish(active, Message.Status.FAILED, usage={}, error=describe_failure(exc))
        else:
            if result.finish_reason == "error":
                await self._finish(active, Message.Status.FAILED, usage=result.usage.as_dict(),
                                   error=describe_failure(RuntimeError(result.error)))
            else:
                status = Message.Status.STOPPED if result.finish_reason == "cancelled" else Message.Status.COMPLETE
                await self._finish(active, status, usage=result.usage.as_dict())
        finally:
            self.active.pop(message.pk, None)

    def _prepare_adapter(self, model_name: str) -> str:
        """In the engine's thread: the adapter this reply uses, loaded if it is new."""
        adapter = self.served.prepare(model_name)
        self.engine.loaded = self.served.loaded  # peft wraps the same base weights: the batch's cache stays valid
        return adapter

    @staticmethod
    def _history_and_overrides(message: Message) -> tuple[list[dict], dict]:
        return selectors.chat_history_before(message=message), selectors.generation_overrides(message=message)

    async def _stream(self, active: ActiveReply, request: EngineRequest) -> EngineResult:
        """Submit the reply to the batch; send its text to the group in chunks as it comes."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        request.on_delta = lambda delta: loop.call_soon_threadsafe(deltas.put_nowait, delta)
        request.on_done = lambda result: loop.call_soon_threadsafe(deltas.put_nowait, result)
        self.engine.submit(request)
        flush_s = settings.LLM_FLUSH_MS / 1000
        stall_s = request.settings.stall_timeout_s
        pending, pending_count, last_flush, last_item = "", 0, 0.0, time.perf_counter()
        try:
            while True:
                timeout = stall_s if not pending else max(0.0, last_flush + flush_s - time.perf_counter())
                try:
                    item = await asyncio.wait_for(deltas.get(), timeout)
                except TimeoutError:
                    item = None
                    if time.perf_counter() - last_item >= stall_s:
                        self.engine.cancel(active.message_id)
                        raise RuntimeError(f"The model produced nothing for {stall_s:.0f} s and was stopped.") from None
                if isinstance(item, EngineResult):
                    if pending:
                        await self._send_chunk(active, pending)
                    return item
                if item is not None:
                    pending += item
                    pending_count += 1
                    last_item = time.perf_counter()
                now = time.perf_counter()
                if pending and (item is None or pending_count >= settings.LLM_FLUSH_TOKENS or now - last_flush >= flush_s):
                    await self._send_chunk(active, pending)
                    pending, pending_count, last_flush = "", 0, now
        except BaseException:
            self.engine.cancel(active.message_id)  # cancelled or failed here: free its row in the batch
            raise

    async def _send_chunk(self, active: ActiveReply, text: str) -> None:
        async with active.send_lock:
            active.text += text
            await self.channel_layer.group_send(
                active.group_name, {"type": "chat.token", "message_id": active.message_id, "text": text}
            )

    async def _finish(self, active: ActiveReply, status: str, *, usage: dict, error: str = "") -> None:
        stored = await database_sync_to_async(services.reply_finish)(
            message_id=active.message_id, content=active.text, status=status, usage=usage, error=error
        )
        if not stored:
            return  # the lease lapsed and a reaper already failed it and told the tabs
        await self.channel_layer.group_send(
            active.group_name,
            {"type": "chat.done", "message_id": active.message_id, "status": status, "usage": usage, "error": error},
        )

    async def _give_up_active_replies(self, error: str) -> None:
        for active in list(self.active.values()):
            if self.engine is not None:
                self.engine.cancel(active.message_id)
            try:
                await asyncio.shield(self._finish(active, Message.Status.FAILED, usage={}, error=error))
            except Exception:
                log.exception("could not mark reply %s failed on shutdown", active.message_id)

    # --- control channel and leases ----------------------------------------------------

    async def _listen_for_control(self) -> None:
        while True:
            event = await self.channel_layer.receive(self.channel_name)
            active = self.active.get(event.get("message_id"))
            if active is None:
                if event.get("type") == "chat.catchup" and event.get("reply_channel"):
                    # The reply ended meanwhile: the tab reads it from the database.
                    await self.channel_layer.send(event["reply_channel"], {"type": "chat.catchup",
                                                                           "message_id": event.get("message_id"),
                                                                           "text": None})
                continue
            if event.get("type") == "chat.stop" and self.engine is not None:
                self.engine.cancel(active.message_id)
            elif event.get("type") == "chat.catchup" and event.get("reply_channel"):
                async with active.send_lock:
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
        for active in list(self.active.values()):
            alive = await database_sync_to_async(services.reply_renew_lease)(
                message_id=active.message_id, content=active.text
            )
            if not alive and self.engine is not None:
                self.engine.cancel(active.message_id)  # failed by a reaper meanwhile: stop wasting the GPU
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
