"""The model worker: takes generation requests off the channel layer and streams replies.

Path (DESIGN.md): ChatConsumer stores a queued reply → `send("llm.generate", {"message_id"})`
wakes a worker → the worker claims the next queued row (chat.serving.queue.queued_in_serving_order)
→ text chunks are stored, then sent to `group_send(conversation group)` → the worker stores the
final reply. Several workers (scaled mode) claim from the one table.

The database row is the queue; the channel layer only wakes workers. A wake-up lost to a Redis
restart or a full channel costs at most LLM_QUEUE_POLL_SECONDS: an idle worker looks at the
table that often anyway. A worker rides out Redis and database outages (it retries with
back-off and keeps writing the replies it holds), and stores each chunk before sending it, so
the text a person saw is the text kept if the worker is killed.

Each worker also listens on its own channel for "chat.stop" and "chat.catchup" (a tab
that (re)connects mid-reply asks for the text so far) and renews a lease on the reply it
is writing; a reply whose lease lapses (its worker died) is failed by the sweeper, which every
worker runs (studio.sweeping).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from chat import selectors
from chat.models import Conversation, Message, ModelWorker
from studio import sweeping
from studio.llm import GenerationSettings, LoadedModel, load_model
from studio.llm.adapters import ServedModels
from studio.llm.constraints import FORMAT_FAILED
from studio.llm.engine import BatchEngine, EngineRequest, EngineResult, prepare_prompt
from studio.llm.remote import RemoteEngine
from studio.llm.replies import OUT_OF_MEMORY, failure_code
from studio.llm.tools import ToolUse

from . import queue, registry
from .wakeups import REQUEST_CHANNEL

EXTERNAL_ENGINE_RETRY_S = 10.0

log = logging.getLogger("chat.worker")


def load_configured_model() -> LoadedModel:
    return load_model(
        settings.LLM_MODEL,
        cache_dir=settings.LLM_MODEL_CACHE_DIR,
        device=settings.LLM_DEVICE,
        quantization=settings.LLM_QUANTIZATION,
        dtype=settings.LLM_DTYPE,
    )


def generation_settings_from_config() -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=settings.LLM_MAX_NEW_TOKENS,
        min_new_tokens=settings.LLM_MIN_NEW_TOKENS,
        temperature=settings.LLM_TEMPERATURE,
        top_p=settings.LLM_TOP_P,
        stall_timeout_s=settings.LLM_STALL_TIMEOUT_SECONDS,
    )


@dataclass(eq=False)  # compared (and hashed) by identity
class ActiveReply:
    message_id: int
    group_name: str
    text: str = ""  # stored and sent to the group so far
    pending: str = ""  # decoded, waiting for the next flush (store, then send); guarded by `lock`
    # When it last moved: new text, or a chunk of its long prompt prefilled (the stall timeout's clock).
    last_text_at: float = field(default_factory=time.monotonic)
    parameters: dict = field(default_factory=dict)  # the sampling it is written with (stored with it)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the engine's thread appends to `pending`

    def take_pending(self) -> str:
        with self.lock:
            chunk, self.pending = self.pending, ""
        return chunk


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
        # Evaluation cases take at most half of them, so a chat arriving during a large
        # evaluation always finds a place in the batch at once.
        self.background_slots = max(1, settings.LLM_MAX_BATCH // 2)
        self.background_active = 0
        self.ready = asyncio.Event()  # set once the model is loaded (or failed to load)
        # Held while chunks are stored and sent, so a catch-up reply carries exactly the text of
        # the chunks sent before it.
        self.flush_lock = asyncio.Lock()
        self.has_pending = asyncio.Event()
        self.flush_requested = threading.Event()  # set by the engine's thread when it asked for a flush
        self.background: list[asyncio.Task] = []  # control, leases, flushing (cancelled on shutdown)
        self.wake_up: asyncio.Future | None = None  # the pending receive of a wake-up message

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        self.channel_name = await self.channel_layer.new_channel("llm-worker")
        await self._announce()
        self.background += [
            asyncio.create_task(self._listen_for_control()),
            asyncio.create_task(self._keep_leases()),
            asyncio.create_task(self._flush_loop()),
        ]
        replies: set[asyncio.Task] = set()
        try:
            await self._load_model()
            while True:
                await self.slots.acquire()
                message = await self._next_reply()
                reply = asyncio.create_task(self._handle_in_slot(message))
                replies.add(reply)
                reply.add_done_callback(replies.discard)
        finally:
            for task in [*self.background, *replies, *([self.wake_up] if self.wake_up else [])]:
                task.cancel()
            await self._give_up_active_replies("The model worker was shut down while writing this reply.")
            if self.engine is not None:
                self.engine.close()
            try:
                await database_sync_to_async(registry.worker_forget)(channel_name=self.channel_name)
            except Exception:
                log.warning("could not remove this worker's row (the database is away); it expires on its own")

    def takes_requests(self) -> bool:
        """A worker whose model failed to load takes nothing in scaled mode (healthy workers take
        the queue; the queue timeout then says why). The embedded worker is the only one: it
        takes each request to tell its person why at once."""
        return self.state == ModelWorker.State.READY or (
            self.state == ModelWorker.State.FAILED and settings.LLM_EMBEDDED_WORKER
        )

    async def _next_reply(self) -> Message:
        """Claim the next queued reply: look at the table, else wait for a wake-up (or the poll
        interval) and look again. Redis or database outages are waited out."""
        backoff = 0.5
        while True:
            if self.takes_requests():
                try:
                    message = await database_sync_to_async(queue.reply_claim_next)(
                        worker_channel=self.channel_name,
                        default_model=self.model_name if self.engine else "",
                        background=self.background_active < self.background_slots,
                    )
                except Exception as exc:
                    log.warning("cannot read the queue (%s); retrying in %.0f s", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                backoff = 0.5
                if message is not None:
                    if self.wake_up is not None:  # a full worker must not take wake-ups meant for others
                        self.wake_up.cancel()
                        self.wake_up = None
                    return message
            await self._wake_up_or_poll_interval()

    async def _wake_up_or_poll_interval(self) -> None:
        """Wait for a wake-up, at most LLM_QUEUE_POLL_SECONDS. One receive stays pending across
        waits (not cancelled and restarted every interval: that churned Redis connections)."""
        if self.wake_up is None:
            self.wake_up = asyncio.ensure_future(self.channel_layer.receive(REQUEST_CHANNEL))
        done, _ = await asyncio.wait({self.wake_up}, timeout=settings.LLM_QUEUE_POLL_SECONDS)
        if not done:
            return
        failure, self.wake_up = self.wake_up.exception(), None
        if failure is not None:  # the channel layer is away: the table is still polled
            log.warning("cannot receive wake-ups (%s); polling the queue", failure)
            await asyncio.sleep(settings.LLM_QUEUE_POLL_SECONDS)

    async def _handle_in_slot(self, message: Message) -> None:
        background = message.conversation.kind == Conversation.Kind.EVALUATION
        self.background_active += background
        try:
            await self.handle_claimed(message)
        finally:
            self.background_active -= background
            self.slots.release()

    @property
    def model_name(self) -> str:
        if isinstance(self.engine, RemoteEngine):
            return self.engine.name
        return self.loaded.name if self.loaded else ""

    async def _load_model(self) -> None:
        started = time.perf_counter()
        if settings.LLM_ENGINE == "openai":
            await self._connect_external_engine()
            return
        try:
            self.loaded = await asyncio.to_thread(self.load)
            self.served = ServedModels(self.loaded, settings.STUDIO_ADAPTERS_DIR)
            self.engine = BatchEngine(
                self.loaded, max_batch=settings.LLM_MAX_BATCH, background_share=settings.LLM_BACKGROUND_SHARE
            )
        except Exception as exc:  # the worker stays up to tell every request why
            self.load_error = f"The model could not be loaded: {exc}"
            self.state = ModelWorker.State.FAILED
            log.error("%s", self.load_error)
        else:
            self.state = ModelWorker.State.READY
            # The model, torch and Django are loaded for good: keep the garbage collector from
            # walking them again (its full passes paused decoding here, a few % of tokens/s).
            gc.collect()
            gc.freeze()
            log.info(
                "worker %s ready in %.1f s: %s",
                self.channel_name,
                time.perf_counter() - started,
                self.loaded.describe(),
            )
        await self._announce()
        self.ready.set()

    async def _connect_external_engine(self) -> None:
        """LLM_ENGINE=openai: replies stream from an OpenAI-compatible server; no model is loaded.
        An engine that cannot be reached yet is tried again every EXTERNAL_ENGINE_RETRY_S: the
        worker reports itself failed meanwhile and takes requests once it is reached."""
        if not await self._reach_external_engine():
            self.background.append(asyncio.create_task(self._keep_reaching_external_engine()))
        self.ready.set()

    async def _keep_reaching_external_engine(self) -> None:
        while True:
            await asyncio.sleep(EXTERNAL_ENGINE_RETRY_S)
            if await self._reach_external_engine():
                return

    async def _reach_external_engine(self) -> bool:
        try:
            engine = await asyncio.to_thread(
                RemoteEngine,
                settings.LLM_ENGINE_URL,
                api_key=settings.LLM_ENGINE_API_KEY,
                model=settings.LLM_ENGINE_MODEL,
            )
        except Exception as exc:
            if self.state != ModelWorker.State.FAILED:
                log.error(
                    "The external engine is not usable: %s (trying again every %.0f s)", exc, EXTERNAL_ENGINE_RETRY_S
                )
            self.load_error, self.state = f"The external engine is not usable: {exc}", ModelWorker.State.FAILED
        else:
            self.engine, self.load_error, self.state = engine, "", ModelWorker.State.READY
            log.info("worker %s ready: %s", self.channel_name, self.engine.describe())
        try:
            await self._announce()
        except Exception:
            log.warning("could not announce this worker (the database is away)")
        return self.engine is not None

    async def _announce(self) -> None:
        await database_sync_to_async(registry.worker_heartbeat)(
            channel_name=self.channel_name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            model_name=self.model_name,
            description=(
                self.engine.describe()
                if isinstance(self.engine, RemoteEngine)
                else self.loaded.describe()
                if self.loaded
                else ""
            ),
            error=self.load_error,
        )

    # --- one request -------------------------------------------------------------------

    async def handle_claimed(self, message: Message) -> None:
        model_name = message.model_name
        # A reply being continued (cut at its maximum tokens): its text so far starts the stored and
        # caught-up text, and the new text is appended to it.
        continued = message.being_continued
        active = self.active[message.pk] = ActiveReply(
            message_id=message.pk, group_name=message.conversation.group_name, text=message.content if continued else ""
        )
        frame = await database_sync_to_async(selectors.message_frame)(message=message)
        await self._group_send(active.group_name, {"type": "chat.message", "message": frame})
        try:
            if self.engine is None:
                raise RuntimeError(self.load_error or "The model is not loaded.")
            history, overrides, output_format, tool_use = await database_sync_to_async(self._history_and_overrides)(
                message
            )
            if continued:  # the cut text, left open, with the sampling that wrote it
                history = [*history, {"role": "assistant", "content": message.content}]
                overrides = {**overrides, **_sampling_overrides(message.parameters)}
            generation_settings = dataclasses.replace(self.defaults, **overrides)
            active.parameters = {
                "temperature": generation_settings.temperature,
                "top_p": generation_settings.top_p,
                "max_new_tokens": generation_settings.max_new_tokens,
                **({"seed": generation_settings.seed} if generation_settings.seed is not None else {}),
                **({"stop": list(generation_settings.stop)} if generation_settings.stop else {}),
            }
            # Adapters are added between decode steps; replies for different adapters share a batch.
            adapter = await asyncio.wrap_future(self.engine.call(lambda: self._prepare_adapter(model_name)))
            request = EngineRequest(
                key=message.pk,
                messages=history,
                settings=generation_settings,
                adapter=adapter,
                on_delta=lambda delta: None,
                on_done=lambda result: None,
                background=message.conversation.kind == Conversation.Kind.EVALUATION,
                output_format=output_format,
                continue_final=continued,
                tools=tool_use,
            )
            if isinstance(self.engine, BatchEngine):
                # Fitting a long history to the context happens here, in a thread of its own: never
                # in the engine's step loop, where it would hold every other reply.
                await asyncio.to_thread(prepare_prompt, self.loaded, request)
            result = await self._stream(active, request)
        except Exception as exc:
            log.exception("reply %s failed", message.pk)
            error, code = describe_failure(str(exc) or exc.__class__.__name__, failure_code(exc))
            if continued and active.text == message.content:
                await self._finish_unchanged(active, message, error)
            else:
                await self._finish(active, Message.Status.FAILED, usage={}, error=error, error_code=code)
        else:
            usage = result.usage.as_dict()
            if continued:  # one reply: the figures of all its parts
                usage = summed_usage(message.usage(), usage)
            error, code = describe_failure(result.error, result.error_code)
            if result.finish_reason == "error" and continued and active.text == message.content:
                await self._finish_unchanged(active, message, error)
            elif result.finish_reason == "error":
                await self._finish(active, Message.Status.FAILED, usage=usage, error=error, error_code=code)
            else:
                status = Message.Status.STOPPED if result.finish_reason == "cancelled" else Message.Status.COMPLETE
                await self._finish(active, status, usage=usage, finish_reason=result.finish_reason)
        finally:
            self.active.pop(message.pk, None)

    async def _finish_unchanged(self, active: ActiveReply, message: Message, error: str) -> None:
        """A continuation that added nothing: the reply stays as it was (cut, whole, continuable), and says why."""
        await self._finish(
            active,
            Message.Status.COMPLETE,
            usage=message.usage(),
            finish_reason="length",
            error=f"It could not be continued: {error}",
        )

    def _prepare_adapter(self, model_name: str) -> str:
        """In the engine's thread: the adapter this reply uses, loaded if it is new."""
        if isinstance(self.engine, RemoteEngine):
            if model_name not in ("", self.engine.name):
                raise RuntimeError(f"This worker streams {self.engine.name} from an external engine, not {model_name}.")
            return ""
        adapter = self.served.prepare(model_name)
        self.engine.loaded = self.served.loaded  # peft wraps the same base weights: the batch's cache stays valid
        return adapter

    @staticmethod
    def _history_and_overrides(message: Message) -> tuple[list[dict], dict, dict | None, ToolUse | None]:
        return (
            selectors.chat_history_before(message=message),
            selectors.generation_overrides(message=message),
            selectors.output_format_for(message=message),
            # The tools it may call (an API request's, else its version's): shown to the model, its calls held to them.
            selectors.tools_for(message=message),
        )

    async def _stream(self, active: ActiveReply, request: EngineRequest) -> EngineResult:
        """Submit the reply to the batch; its text goes out through the flush loop as it comes.

        The engine's thread appends each token's text to `active.pending` and wakes the event
        loop only when no flush is due yet: one wake-up per flush for all replies, not one per
        token per reply (the loop would otherwise take the GIL hundreds of times a second from
        the decoding thread)."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()

        def on_delta(delta: str) -> None:
            with active.lock:
                active.pending += delta
                active.last_text_at = time.monotonic()
            if not self.flush_requested.is_set():
                self.flush_requested.set()
                loop.call_soon_threadsafe(self.has_pending.set)

        def on_progress() -> None:  # a chunk of its long prompt is in: it moves, though no text comes yet
            with active.lock:
                active.last_text_at = time.monotonic()

        request.on_delta, request.on_progress = on_delta, on_progress
        request.on_done = lambda result: loop.call_soon_threadsafe(
            lambda: finished.done() or finished.set_result(result)
        )
        stall_s = request.settings.stall_timeout_s
        active.last_text_at = time.monotonic()
        self.engine.submit(request)
        try:
            while True:
                silent_s = time.monotonic() - active.last_text_at
                if silent_s >= stall_s:
                    self.engine.cancel(active.message_id)
                    raise RuntimeError(f"The model produced nothing for {stall_s:.0f} s and was stopped.")
                try:
                    result = await asyncio.wait_for(asyncio.shield(finished), stall_s - silent_s)
                except TimeoutError:
                    continue
                await self._flush([active])
                return result
        except BaseException:
            self.engine.cancel(active.message_id)  # cancelled or failed here: free its row in the batch
            raise

    async def _flush_loop(self) -> None:
        """Every LLM_FLUSH_MS at most: store the new text of every reply in one transaction, then
        send it. A reply's first chunk goes out at once."""
        flush_s = settings.LLM_FLUSH_MS / 1000
        while True:
            await self.has_pending.wait()
            self.has_pending.clear()
            self.flush_requested.clear()  # text from here on asks for the next flush
            try:
                await self._flush(list(self.active.values()))
            except Exception:
                log.exception("could not send the replies' text")
            await asyncio.sleep(flush_s)

    async def _flush(self, replies: list[ActiveReply]) -> None:
        async with self.flush_lock:
            chunks = {active: chunk for active in replies if (chunk := active.take_pending())}
            if not chunks:
                return
            try:
                stored = await database_sync_to_async(queue.replies_save_text)(
                    texts={active.message_id: active.text + chunk for active, chunk in chunks.items()}
                )
            except Exception as exc:  # the database is away: keep streaming; the finish stores it all
                log.warning("could not store the replies' text before sending it: %s", exc)
                stored = {active.message_id for active in chunks}
            for active, chunk in chunks.items():
                if active.message_id not in stored:
                    # Failed by the sweeper (its tabs were told) or deleted: stop writing it
                    # rather than stream text after its end; the finish then stores nothing.
                    self.engine.cancel(active.message_id)
                    continue
                active.text += chunk
                await self._group_send(
                    active.group_name, {"type": "chat.token", "message_id": active.message_id, "text": chunk}
                )

    async def _group_send(self, group_name: str, event: dict) -> None:
        """Best effort: while the channel layer is away the tabs lose their sockets; they reconnect
        and read the text from the database or the catch-up."""
        try:
            await self.channel_layer.group_send(group_name, event)
        except Exception as exc:
            log.warning("could not send to %s: %s", group_name, exc)

    async def _finish(
        self,
        active: ActiveReply,
        status: str,
        *,
        usage: dict,
        error: str = "",
        finish_reason: str = "",
        error_code: str = "",
    ) -> None:
        """Store the final reply (retrying while the database is away), then tell the tabs: the same
        status, finish reason and error code in both (a failure without a code of its own is the
        model's: `model_failed`)."""
        if status == Message.Status.FAILED:
            error_code = error_code or Message.ErrorCode.MODEL_FAILED
        for attempt in range(60):
            try:
                stored = await database_sync_to_async(queue.reply_finish)(
                    message_id=active.message_id,
                    content=active.text,
                    status=status,
                    usage=usage,
                    error=error,
                    error_code=error_code,
                    parameters=active.parameters,
                    finish_reason=finish_reason,
                )
                break
            except Exception as exc:
                log.warning("could not store reply %s (%s); retrying", active.message_id, exc)
                await asyncio.sleep(min(0.5 * 2**attempt, 5))
        else:
            return
        if not stored:
            return  # the lease lapsed and the sweeper already failed it and told the tabs
        await self._group_send(
            active.group_name,
            {
                "type": "chat.done",
                "message_id": active.message_id,
                "status": status,
                "usage": usage,
                "error": error,
                "error_code": error_code,
                "finish_reason": finish_reason,
            },
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
            try:
                event = await self.channel_layer.receive(self.channel_name)
            except Exception as exc:  # the channel layer is away: wait for it
                log.warning("cannot receive stop and catch-up requests (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            try:
                await self._control(event)
            except Exception:
                log.exception("control event %s failed", event.get("type"))

    async def _control(self, event: dict) -> None:
        message_id = event.get("message_id")
        if event.get("type") == "chat.stop" and self.engine is not None:
            # Also before the reply reaches the batch: the engine drops it when it arrives.
            self.engine.cancel(message_id)
            return
        if event.get("type") != "chat.catchup" or not event.get("reply_channel"):
            return
        async with self.flush_lock:
            active = self.active.get(message_id)
            # None: the reply ended meanwhile and the tab reads it from the database.
            await self.channel_layer.send(
                event["reply_channel"],
                {"type": "chat.catchup", "message_id": message_id, "text": active.text if active else None},
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
            alive = await database_sync_to_async(queue.reply_renew_lease)(
                message_id=active.message_id, content=active.text
            )
            if not alive and self.engine is not None:
                self.engine.cancel(active.message_id)  # failed by the sweeper meanwhile: stop wasting the GPU
        await self._announce()
        # Every model worker is a sweeper too (studio.sweeping): lapsed replies, lost and
        # undelivered jobs. In its own thread, so a slow database never holds the event loop.
        await database_sync_to_async(sweeping.sweep_all)()


class WorkerThread:
    """A model worker on an event loop of its own thread, for sync programs that run evaluations
    in-process (`manage.py loop_demo`, tests): `with WorkerThread(load=...) as worker: ...`. It
    finds queued replies by polling the table (LLM_QUEUE_POLL_SECONDS): a wake-up sent on this
    process's channel layer does not reach its loop."""

    def __init__(self, **worker_options):
        self.loop = asyncio.new_event_loop()
        self.worker = GenerationWorker(channel_layer=InMemoryChannelLayer(), **worker_options)
        self.thread = threading.Thread(target=self._run, name="llm-worker-thread", daemon=True)
        self.task: asyncio.Task | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.worker.run())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def __enter__(self) -> GenerationWorker:
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.worker.ready.is_set():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process model worker did not start")
            time.sleep(0.05)
        return self.worker

    def __exit__(self, *exc_info) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)


def _sampling_overrides(parameters: dict) -> dict:
    """GenerationSettings fields from the sampling a reply was written with (Message.parameters)."""
    overrides = {
        name: parameters[name]
        for name in ("temperature", "top_p", "max_new_tokens", "seed")
        if parameters.get(name) is not None
    }
    if parameters.get("stop"):
        overrides["stop"] = tuple(parameters["stop"])
    return overrides


def summed_usage(earlier: dict, added: dict) -> dict:
    """The figures of a reply written in parts (Continue): tokens read and written added up, the time
    to its first token kept, the decode speed averaged over the tokens of each part."""
    earlier_tokens, added_tokens = earlier.get("completion_tokens") or 0, added.get("completion_tokens") or 0
    speeds = [
        (speed, tokens)
        for speed, tokens in ((earlier.get("tokens_per_s"), earlier_tokens), (added.get("tokens_per_s"), added_tokens))
        if speed and tokens
    ]
    return {
        "prompt_tokens": (earlier.get("prompt_tokens") or 0) + (added.get("prompt_tokens") or 0),
        "completion_tokens": earlier_tokens + added_tokens,
        "ttft_ms": earlier.get("ttft_ms") if earlier.get("ttft_ms") is not None else added.get("ttft_ms"),
        "tokens_per_s": round(sum(s * n for s, n in speeds) / sum(n for _, n in speeds), 2) if speeds else None,
    }


# The engine's codes (EngineResult.error_code) as a stored reply's; any other failure is the model's.
_MESSAGE_CODES = {FORMAT_FAILED: Message.ErrorCode.OUTPUT_FORMAT_FAILED, OUT_OF_MEMORY: Message.ErrorCode.OUT_OF_MEMORY}


def describe_failure(error: str, engine_code: str = "") -> tuple[str, str]:
    """A failed reply's sentence a person can act on (never a stack trace) and its stored code, from
    the engine's error and its code (engine.failure_code: classified where it was caught)."""
    code = _MESSAGE_CODES.get(engine_code, Message.ErrorCode.MODEL_FAILED)
    if code == Message.ErrorCode.OUT_OF_MEMORY:
        return "The model ran out of memory writing this reply. Try a shorter conversation or a smaller model.", code
    return (error if error.endswith(".") else error + "."), code
