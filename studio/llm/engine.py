"""Continuous batching: many replies decoded together, each joining at the next step.

One decode step runs the model once for the replies of one lane: a (B, 1) batch of their last
tokens over one key/value cache. A new reply is prefilled (its prompt through the model), then
its cache is merged into its lane's, left-padded to a common length, so it joins at the next
step; a finished, stopped or failed reply leaves by dropping its row. Each reply keeps its own
sampling (temperature, top-p, seed), length limit, stop strings and adapter.

Prefill is bounded per step, so that no prompt, however long, holds the replies being written:
a prompt of at most `prefill_chunk_tokens` is prefilled whole (as many of them per step as fit
that budget, the first always), a longer one a chunk of that many tokens at a time (fewer where
such a chunk would keep the replies being written waiting long) into a cache of its own,
between the lane's decode steps, until its whole prompt is in and it joins the lane like any
other (chunked prefill, as vLLM's `max_num_batched_tokens` bounds a step); a step prefills short
prompts or a chunk. Long prompts take their chunks in turn, and each chunk tells its reply that
it is moving (`on_progress`), so the worker's stall timeout never fails a reply that is being
prefilled. On a CPU a chunk costs many decode steps, so while replies of its lane are being
written, chunks take at most `prefill_share` of the time of the lane's decode steps (after a
first burst of `prefill_burst_s`, so that a prompt of a few chunks is not slowed): a reply being
written keeps about 1 / (1 + share) of its speed, and waits at most one chunk between two
tokens. Measured in `make bench` (chat during a long prefill against alone).

Two lanes, so that work nobody waits for at a screen never slows the replies people read as
they are written: the *foreground* (chat, playground, API) and the *background* (evaluation
cases). The background lane gets the whole model when the foreground is idle, and at most
`background_share` of the time while a foreground reply is being written or prefilled: its
short prompts are prefilled several in one pass (within the step's prefill budget while the
foreground is busy) and its steps come between foreground steps only while its share allows.
Measured in `make bench` (chat during a large evaluation against alone).

The step loop runs in one thread; `submit` and `cancel` are safe from any thread, and each
reply's text arrives through its own `on_delta` / `on_done` callbacks (called from the loop
thread). Nothing is prepared here: a request arrives as token ids (`prepare_prompt`, in the
caller's thread), so a long history never holds the loop. Knows only token ids and text.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .constraints import FORMAT_FAILED, NO_TOKEN_ALLOWED, OutputFormat, ReplyConstraint, closing_window, is_free
from .loading import LoadedModel
from .replies import GenerationSettings, Usage, failure_code, fit_to_context
from .tools import ToolUse, tool_constraint

# Background prompts prefilled together in one forward pass (evaluation cases arrive in bursts).
BACKGROUND_PREFILL_BATCH = 8
# Prompt tokens one lane prefills between two of its decode steps: a longer prompt is prefilled
# in chunks of this many. Measured on SmolLM2-135M, bfloat16, 2 CPU cores (AMX): a chunk of 256
# takes 0.11 s at the start of a prompt and 0.46 s at its 6,500th token (512: 0.18 and 0.75 s);
# a 7,000-token prompt takes 7.8 s in chunks of 256 (6.5 s in 512s), 4.7 s in one pass (the
# chunks' attention runs on a masked kernel, slower than the causal one of a whole prefill).
PREFILL_CHUNK_TOKENS = 256
# ...and fewer while replies of its lane are being written, where that many took longer than
# this or PREFILL_CHUNK_STEPS of their decode steps, whichever is longer: a chunk costs more the
# longer the prefix it attends to, and more in float32 (about 1.4 s for 256 tokens at the
# 6,500th here) or with a bigger model. At such a prefix a chunk's time is nearly
# proportional to its tokens, so smaller chunks cost the prompt little; the bound in decode
# steps keeps a chunk well above the cost of one pass over the weights (on a machine so busy
# that a step takes 0.4 s, chunks shrunk to 0.5 s would be mostly that cost).
PREFILL_CHUNK_S = 0.5
PREFILL_CHUNK_STEPS = 4
PREFILL_MIN_CHUNK_TOKENS = 32
# While a lane's replies are being written, its long prompts' chunks take at most this share of
# the time its decode steps take (those replies keep about 1 / 1.15 = 87 % of their speed; 0.2
# measured 0.78 in `make bench`, the steps after a chunk being slower), after a first burst of
# this many seconds (so a prompt of a few chunks, a chat with retrieved passages, is not slowed:
# a token bucket of the share, holding at most the burst).
PREFILL_SHARE = 0.15
PREFILL_BURST_S = 1.0


@dataclass
class EngineRequest:
    key: object  # the caller's id for this reply
    messages: list[dict]
    settings: GenerationSettings
    on_delta: Callable[[str], None]
    on_done: Callable[[EngineResult], None]
    adapter: str = ""  # a peft adapter name, "" for the base model
    prompt_ids: list[int] | None = None  # the messages fitted to the context (prepare_prompt)
    background: bool = False  # nobody reads it as it is written (an evaluation's case)
    output_format: OutputFormat | None = None  # the shape its answer must take (constraints.py); None: free text
    constraint: ReplyConstraint | None = None  # its matcher, built by prepare_prompt
    # Called (from the loop thread) after each chunk of a long prompt's prefill: the reply moves
    # though no text comes yet (the worker's stall timeout counts it as progress).
    on_progress: Callable[[], None] = lambda: None
    # Write on from the last message, an assistant's reply cut short (Continue): its text ends the
    # prompt unclosed, and its output format's matcher starts past it.
    continue_final: bool = False
    tools: ToolUse | None = (
        None  # the tools it may call (tools.py): shown in its prompt, its calls held to their schemas
    )


@dataclass
class EngineResult:
    text: str
    finish_reason: str  # "stop", "length", "cancelled" or "error"
    usage: Usage
    error: str = ""
    error_code: str = ""  # why it failed, for programs: FORMAT_FAILED, OUT_OF_MEMORY (replies.failure_code), else ""


def prepare_prompt(loaded: LoadedModel, request: EngineRequest) -> EngineRequest:
    """The request's messages fitted to the context, as token ids, and its output format's matcher:
    run in the caller's thread, never in the step loop. Raises PromptTooLongError, FormatError."""
    if request.prompt_ids is None:
        _, request.prompt_ids = fit_to_context(
            loaded,
            request.messages,
            request.settings.max_new_tokens,
            continue_final=request.continue_final,
            tool_use=request.tools,
        )
    if request.constraint is None:  # built once (submit prepares again what the worker prepared)
        if request.tools:
            request.constraint = tool_constraint(loaded.tokenizer, request.tools, request.output_format)
        if request.constraint is None and not is_free(request.output_format):
            request.constraint = ReplyConstraint(loaded.tokenizer, request.output_format)
        if request.constraint is not None and request.continue_final:
            request.constraint.advance_through(request.messages[-1]["content"])
    return request


@dataclass
class _Row:
    request: EngineRequest
    prompt_ids: list[int]
    generator: torch.Generator | None
    completion: list[int] = field(default_factory=list)
    text: str = ""  # sent so far
    unsent: str = ""  # decoded, held back while it could begin a stop string
    started: float = 0.0
    first_token_at: float | None = None
    last_token_at: float | None = None
    done: str | None = None  # why it ends, once it does: "stop", "length", "cancelled", "error"
    error: str = ""
    stopped_by_string: bool = False
    prefix_offset: int = 0  # the window of completion tokens decoded for the newest text
    read_offset: int = 0
    cache: DynamicCache | None = None  # its own cache while its long prompt is prefilled in chunks
    prefilled: int = 0  # prompt tokens in that cache so far
    token_s: float = 0.0  # what a prompt token cost in its last chunk


class _Lane:
    """The rows of one lane and their key/value cache."""

    def __init__(self):
        self.rows: list[_Row] = []  # being written (decoded together)
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, L): 1 where the cache holds a real token
        self.waiting: deque[EngineRequest] = deque()
        self.prefilling: deque[_Row] = deque()  # long prompts prefilled a chunk at a time, in turn
        self.busy_s = 0.0  # time spent on this lane's steps and prefills (for the background share)
        self.prefill_credit_s = 0.0  # time its chunks may take now while its rows are written (prefill share)
        self.step_s = 0.0  # its last decode step's time

    @property
    def idle(self) -> bool:
        return not self.rows and not self.prefilling and not self.waiting

    def merge(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Rows prefilled together (their cache, (b, T) mask) join this lane, left-padded."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width, length = self.mask.shape[1], mask.shape[1]
        if length > width:  # the lane grows on the left to the newcomers' length
            for layer in self.cache.layers:
                layer.keys = _pad_left(layer.keys, length - width)
                layer.values = _pad_left(layer.values, length - width)
            self.mask = _pad_left_2d(self.mask, length - width)
            width = length
        for own, new in zip(self.cache.layers, cache.layers):
            own.keys = torch.cat([own.keys, _pad_left(new.keys, width - length)], dim=0)
            own.values = torch.cat([own.values, _pad_left(new.values, width - length)], dim=0)
        self.mask = torch.cat([self.mask, _pad_left_2d(mask, width - length)], dim=0)

    def keep(self, indices: list[int]) -> None:
        self.rows = [self.rows[index] for index in indices]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        selected = torch.tensor(indices, device=self.mask.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[selected], layer.values[selected]
        self.mask = self.mask[selected]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # left columns no row uses
        if unused:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            self.mask = self.mask[:, unused:]


class BatchEngine:
    """Continuous batching over one loaded model (its `model`, `tokenizer`)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = 8,
        background_share: float = 0.1,
        prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS,
        prefill_share: float = PREFILL_SHARE,
        prefill_burst_s: float = PREFILL_BURST_S,
    ):
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens={prefill_chunk_tokens}: must be at least 1")
        self.loaded = loaded
        self.max_batch = max_batch  # rows of both lanes together
        self.background_share = background_share
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.prefill_share = prefill_share
        self.prefill_burst_s = prefill_burst_s
        self.incoming: queue.Queue[EngineRequest] = queue.Queue()
        self.calls: queue.Queue[tuple[Callable, Future]] = queue.Queue()  # run between steps (adapter loads)
        self.cancelled: set = set()
        self.lock = threading.Lock()
        self.foreground, self.background = _Lane(), _Lane()
        for lane in (self.foreground, self.background):
            lane.prefill_credit_s = prefill_burst_s
        self.wake = threading.Event()
        self.stopping = False
        self.eos_ids = self._eos_ids()
        # A prefill needs the logits of its last position only: not (T, V) of them (1.4 GB for a
        # 7,000-token prompt on SmolLM2, and a good part of its time).
        base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
        self.last_logits_only = (
            {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
        )
        self.thread = threading.Thread(target=self._loop, name="llm-batch-engine", daemon=True)
        self.thread.start()

    # --- from any thread -------------------------------------------------------------------

    def submit(self, request: EngineRequest) -> None:
        """Queue a reply. Its prompt is prepared here, in the caller's thread, if it was not yet."""
        prepare_prompt(self.loaded, request)
        self.incoming.put(request)
        self.wake.set()

    def cancel(self, key) -> None:
        with self.lock:
            self.cancelled.add(key)
        self.wake.set()

    def call(self, function: Callable) -> Future:
        """Run `function` in the step loop's thread between two steps (nothing else touches the
        model then: adding an adapter rewires its layers); its result or error comes in the future."""
        future: Future = Future()
        self.calls.put((function, future))
        self.wake.set()
        return future

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(10)

    @property
    def rows(self) -> list[_Row]:
        """Every reply in the engine: being written or being prefilled."""
        lanes = (self.foreground, self.background)
        return [row for lane in lanes for row in lane.rows] + [row for lane in lanes for row in lane.prefilling]

    # --- the step loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            self._run_calls()
            self._take_incoming()
            if self.foreground.idle and self.background.idle:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            for lane in (self.foreground, self.background):
                try:
                    self._drop_cancelled(lane)
                    self._turn(lane)
                except Exception as exc:  # a step failed: every reply of the lane fails, the engine goes on
                    for row in lane.rows:
                        self._finish(row, "error", error=f"{exc.__class__.__name__}: {exc}", code=failure_code(exc))
                    lane.rows, lane.cache, lane.mask = [], None, None
                if not lane.rows:
                    lane.prefill_credit_s = self.prefill_burst_s  # full again for the next spell of writing
            if self.foreground.idle:
                self.foreground.busy_s = self.background.busy_s = 0.0  # the share counts per busy spell

    def _turn(self, lane: _Lane) -> None:
        """One turn of `lane`: new prompts admitted (within the step's prefill budget), a chunk of
        a long prompt (within the prefill share), then one decode step of its rows."""
        background = lane is self.background
        if background and not self._background_may_run():
            return
        prefilled = self._timed(lane, lambda: self._admit(lane))
        if (
            lane.prefilling
            and not prefilled
            and self._chunk_may_run(lane)  # a step's budget holds one or the other
            and (not background or self._background_may_run())
        ):
            started, writing = time.perf_counter(), bool(lane.rows)
            self._timed(lane, lambda: self._prefill_chunk(lane))
            if writing:
                lane.prefill_credit_s -= time.perf_counter() - started
        if lane.rows and (not background or self._background_may_run()):
            started = time.perf_counter()
            self._timed(lane, lambda: self._decode_step(lane))
            lane.step_s = time.perf_counter() - started
            lane.prefill_credit_s = min(self.prefill_burst_s, lane.prefill_credit_s + self.prefill_share * lane.step_s)

    def _background_may_run(self) -> bool:
        """The background lane runs freely while nobody's reply is being written or prefilled, else
        within its share."""
        if self.foreground.idle:
            return True
        return self.background.busy_s < self.background_share * self.foreground.busy_s

    def _chunk_may_run(self, lane: _Lane) -> bool:
        """A long prompt's next chunk runs at once while none of its lane's replies is being written
        (the background lane's are read by nobody), else while the prefill share leaves it credit."""
        return not lane.rows or lane is self.background or lane.prefill_credit_s > 0

    @staticmethod
    def _timed(lane: _Lane, work: Callable):
        started = time.perf_counter()
        try:
            return work()
        finally:
            lane.busy_s += time.perf_counter() - started

    def _run_calls(self) -> None:
        while True:
            try:
                function, future = self.calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

    def _take_incoming(self) -> None:
        while True:
            try:
                request = self.incoming.get_nowait()
            except queue.Empty:
                return
            (self.background if request.background else self.foreground).waiting.append(request)

    def _room(self) -> int:
        return self.max_batch - len(self.rows)

    def _admit(self, lane: _Lane) -> int:
        """Waiting replies of `lane` enter it, in order, as long as the batch has room. A long
        prompt joins the lane's chunked prefills (nothing is computed yet); short ones are
        prefilled whole, within the step's budget of prompt tokens (the first one always). In the
        foreground each alone and at once (someone waits for its first token); in the background
        several together, within the budget only while the foreground is busy. Returns the prompt
        tokens it prefilled."""
        background = lane is self.background
        budget = None if background and self.foreground.idle else self.prefill_chunk_tokens
        batch, tokens = [], 0
        while lane.waiting and self._room() - len(batch) > 0:
            length = len(lane.waiting[0].prompt_ids)
            short = length <= self.prefill_chunk_tokens
            if short and (tokens or batch) and budget is not None and tokens + length > budget:
                break  # this step's prefill budget is spent: the rest come in at the next one
            if short and background and len(batch) == BACKGROUND_PREFILL_BATCH:
                break
            request = lane.waiting.popleft()
            if self._withdrawn(request):
                continue
            if not short:
                lane.prefilling.append(self._new_row(request))
            elif background:
                batch.append(request)
                tokens += length
            else:
                tokens += length
                self._prefill(lane, [request])
        if batch:
            self._prefill(lane, batch)
        return tokens  # prompt tokens prefilled

    def _withdrawn(self, request: EngineRequest) -> bool:
        with self.lock:
            if request.key not in self.cancelled:
                return False
            self.cancelled.discard(request.key)
        request.on_done(EngineResult("", "cancelled", Usage()))
        return True

    def _new_row(self, request: EngineRequest) -> _Row:
        generator = None
        if request.settings.seed is not None:
            generator = torch.Generator(device=self.loaded.model.device).manual_seed(request.settings.seed)
        return _Row(request=request, prompt_ids=request.prompt_ids, generator=generator, started=time.perf_counter())

    def _prefill(self, lane: _Lane, requests: list[EngineRequest]) -> None:
        """The prompts of `requests` in one forward pass (left-padded to a common length); their
        cache joins the lane's. A prefill that fails fails its own replies only."""
        device = self.loaded.model.device
        rows = [self._new_row(request) for request in requests]
        try:
            length = max(len(row.prompt_ids) for row in rows)
            ids = torch.tensor(
                [[0] * (length - len(row.prompt_ids)) + row.prompt_ids for row in rows], device=device
            )  # (b, T)
            mask = torch.tensor(
                [[0] * (length - len(row.prompt_ids)) + [1] * len(row.prompt_ids) for row in rows],
                dtype=torch.long,
                device=device,
            )  # (b, T)
            cache = DynamicCache()
            with torch.inference_mode():
                output = self.loaded.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
                    past_key_values=cache,
                    use_cache=True,
                    **self.last_logits_only,
                    **self._adapter_kwargs(rows),
                )
            if len(rows) > 1:  # padded positions hold what padding computed: zero them, masked or not
                padding = (mask == 0)[:, None, :, None]
                for layer in cache.layers:
                    layer.keys = layer.keys.masked_fill(padding, 0)
                    layer.values = layer.values.masked_fill(padding, 0)
            logits = output.logits[:, -1, :]  # (b, V)
        except Exception as exc:
            for request in requests:
                request.on_done(
                    EngineResult(
                        "", "error", Usage(), error=f"{exc.__class__.__name__}: {exc}", error_code=failure_code(exc)
                    )
                )
            return
        self._join(lane, rows, cache, mask, logits)

    def _prefill_chunk(self, lane: _Lane) -> None:
        """The next chunk of the first long prompt in turn, into its own cache (positions and mask
        continue its prefix); with its last chunk it joins the lane. A chunk that fails fails its
        own reply only."""
        row = lane.prefilling.popleft()
        device = self.loaded.model.device
        start = row.prefilled
        end = min(start + self._chunk_tokens(lane, row), len(row.prompt_ids))
        started = time.perf_counter()
        try:
            if row.cache is None:
                row.cache = DynamicCache()
            with torch.inference_mode():
                output = self.loaded.model(
                    input_ids=torch.tensor([row.prompt_ids[start:end]], device=device),
                    attention_mask=torch.ones((1, end), dtype=torch.long, device=device),
                    position_ids=torch.arange(start, end, device=device)[None],  # (1, n)
                    past_key_values=row.cache,
                    use_cache=True,
                    **self.last_logits_only,
                    **self._adapter_kwargs([row]),
                )
        except Exception as exc:
            row.cache = None
            self._finish(row, "error", error=f"{exc.__class__.__name__}: {exc}", code=failure_code(exc))
            return
        row.prefilled, row.token_s = end, (time.perf_counter() - started) / (end - start)
        row.request.on_progress()
        if end < len(row.prompt_ids):
            lane.prefilling.append(row)  # the next long prompt's turn
            return
        cache, row.cache = row.cache, None
        self._join(lane, [row], cache, torch.ones((1, end), dtype=torch.long, device=device), output.logits[:, -1, :])

    def _chunk_tokens(self, lane: _Lane, row: _Row) -> int:
        """The size of `row`'s next chunk: the engine's, or while its lane's replies are being
        written, as many tokens as fit in the longer of PREFILL_CHUNK_S and PREFILL_CHUNK_STEPS of
        their decode steps at what a token cost in its last chunk."""
        if not lane.rows or not row.token_s:
            return self.prefill_chunk_tokens  # nobody's reply waits between two chunks, or no cost known yet
        target_s = max(PREFILL_CHUNK_S, PREFILL_CHUNK_STEPS * lane.step_s)
        fits = int(target_s / row.token_s)
        return max(min(PREFILL_MIN_CHUNK_TOKENS, self.prefill_chunk_tokens), min(fits, self.prefill_chunk_tokens))

    def _join(
        self, lane: _Lane, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor, logits: torch.Tensor
    ) -> None:
        """Prefilled rows (their cache, (b, T) mask, (b, V) last logits) join the lane with their first token."""
        lane.merge(cache, mask)
        lane.rows.extend(rows)
        for index, row in enumerate(rows):
            self._take(row, self._sample(row, logits[index]))
        self._drop_finished(lane)

    def _decode_step(self, lane: _Lane) -> None:
        device = self.loaded.model.device
        last = torch.tensor([[row.completion[-1]] for row in lane.rows], device=device)  # (B, 1)
        positions = lane.mask.sum(dim=1, keepdim=True)  # (B, 1): each row's next position
        lane.mask = torch.cat([lane.mask, torch.ones((len(lane.rows), 1), dtype=torch.long, device=device)], dim=1)
        with torch.inference_mode():
            output = self.loaded.model(
                input_ids=last,
                attention_mask=lane.mask,
                position_ids=positions,
                past_key_values=lane.cache,
                use_cache=True,
                **self._adapter_kwargs(lane.rows),
            )
        logits = output.logits[:, -1, :]  # (B, V)
        for index, row in enumerate(list(lane.rows)):
            self._take(row, self._sample(row, logits[index]))
        self._drop_finished(lane)

    def _adapter_kwargs(self, rows: list[_Row]) -> dict:
        if not hasattr(self.loaded.model, "peft_config"):
            return {}
        return {"adapter_names": [row.request.adapter or "__base__" for row in rows]}

    def _sample(self, row: _Row, logits: torch.Tensor) -> int | None:
        """The next token of `row` (None: its output format allows none here)."""
        settings = row.request.settings
        constraint = row.request.constraint
        if constraint is not None:
            left = settings.max_new_tokens - len(row.completion)
            closing = constraint.closes_at_limit and left <= closing_window(settings.max_new_tokens)
            if not constraint.restrict(logits, closing=closing):
                return None
        elif len(row.completion) < settings.min_new_tokens:
            logits = logits.clone()
            logits[list(self.eos_ids)] = -float("inf")
        if settings.temperature == 0:
            return int(torch.argmax(logits))
        probabilities = torch.softmax(logits.float() / settings.temperature, dim=-1)
        if settings.top_p < 1.0:
            sorted_p, order = torch.sort(probabilities, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < settings.top_p
            probabilities = torch.zeros_like(probabilities).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probabilities, 1, generator=row.generator))

    def _take(self, row: _Row, token: int | None) -> None:
        constraint = row.request.constraint
        if token is None:  # its format allows nothing here, or its matcher failed: never a whole answer
            constraint.broken = constraint.broken or NO_TOKEN_ALLOWED
            row.done, row.error = "error", constraint.broken
            return
        now = time.perf_counter()
        row.first_token_at = row.first_token_at or now
        row.last_token_at = now
        row.completion.append(token)
        settings = row.request.settings
        if token in self.eos_ids:
            row.done = "stop"
            return
        if constraint is not None and not constraint.advance(token):
            row.done, row.error = "error", constraint.broken
            return
        row.unsent += self._decode_new(row)
        # Under an output format the format says where the answer ends: a stop string would cut it
        # short of its shape and call it whole.
        stops = settings.stop if constraint is None else ()
        stop_at = min((row.unsent.find(s) for s in stops if s in row.unsent), default=None)
        if stop_at is not None:
            self._send(row, row.unsent[:stop_at])
            row.unsent = ""
            row.done, row.stopped_by_string = "stop", True
            return
        hold_back = max((len(s) for s in stops), default=1) - 1
        cut = len(row.unsent) - hold_back
        if cut > 0:
            self._send(row, row.unsent[:cut])
            row.unsent = row.unsent[cut:]
        if constraint is not None and constraint.complete:
            row.done = "stop"  # the answer has its whole shape: nothing more may follow
        elif len(row.completion) >= settings.max_new_tokens:
            row.done = "length"  # cut short: a constrained answer is then incomplete, never called valid

    def _send(self, row: _Row, delta: str) -> None:
        if delta:
            row.text += delta
            row.request.on_delta(delta)

    def _decode_new(self, row: _Row) -> str:
        """The text the newest token adds, decoding a short window rather than the whole reply
        each step (a window, because a token's text can depend on the ones before it, and a
        multi-byte character can span tokens: nothing is emitted while it ends unfinished)."""
        decode = self.loaded.tokenizer.decode
        before = decode(row.completion[row.prefix_offset : row.read_offset], skip_special_tokens=True)
        after = decode(row.completion[row.prefix_offset :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd") or not after.startswith(before):
            return ""
        row.prefix_offset, row.read_offset = row.read_offset, len(row.completion)
        return after[len(before) :]

    def _tail(self, row: _Row) -> str:
        """What the whole completion decodes to beyond the text sent: the held-back tail, and
        anything a mid-stream decode could not place (never cut short by detokenisation)."""
        full = self.loaded.tokenizer.decode(
            [t for t in row.completion if t not in self.eos_ids], skip_special_tokens=True
        )
        return full[len(row.text) :] if full.startswith(row.text) else row.unsent

    def _drop_cancelled(self, lane: _Lane) -> None:
        """Stopped replies leave their lane, whether they are being written, prefilled or still waiting."""
        with self.lock:
            keys = self.cancelled & (
                {row.request.key for row in lane.rows}
                | {r.key for r in lane.waiting}
                | {row.request.key for row in lane.prefilling}
            )
            self.cancelled -= keys
        if not keys:
            return
        for request in [r for r in lane.waiting if r.key in keys]:
            lane.waiting.remove(request)
            request.on_done(EngineResult("", "cancelled", Usage()))
        for row in [row for row in lane.prefilling if row.request.key in keys]:
            lane.prefilling.remove(row)
            row.cache = None  # its partial prefill is dropped with it
            self._finish(row, "cancelled")
        for row in lane.rows:
            if row.request.key in keys:
                row.done = "cancelled"
        self._drop_finished(lane)

    def _drop_finished(self, lane: _Lane) -> None:
        keep = [index for index, row in enumerate(lane.rows) if not row.done]
        if len(keep) == len(lane.rows):
            return
        for row in lane.rows:
            if row.done:
                if row.done not in ("cancelled", "error") and not row.stopped_by_string:
                    self._send(row, self._tail(row))
                self._finish(row, row.done, error=row.error)
        lane.keep(keep)

    def _finish(self, row: _Row, reason: str, *, error: str = "", code: str = "") -> None:
        usage = Usage.timed(
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.completion),
            started=row.started,
            first_at=row.first_token_at,
            last_at=row.last_token_at,
        )
        constraint = row.request.constraint
        if reason == "error" and constraint is not None and constraint.broken:
            code = FORMAT_FAILED
        row.request.on_done(EngineResult(row.text, reason, usage, error=error, error_code=code))

    def _eos_ids(self) -> set[int]:
        eos = self.loaded.model.generation_config.eos_token_id
        if eos is None:
            eos = self.loaded.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, D) → (B, H, width + T, D), zeros first (masked out by the attention mask)."""
    if width <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[2] = width
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


def _pad_left_2d(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) → (B, width + T), zeros first."""
    if width <= 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], width)), mask], dim=1)


def reply_once(
    engine: BatchEngine,
    messages: list[dict],
    settings: GenerationSettings,
    *,
    on_delta: Callable[[str], None] | None = None,
    key: object = None,
    timeout_s: float = 600.0,
) -> EngineResult:
    """One reply through `engine`, waited for: for scripts and tests that want a reply, not a stream."""
    done: Future = Future()
    engine.submit(
        EngineRequest(
            key=key if key is not None else object(),
            messages=messages,
            settings=settings,
            on_delta=on_delta or (lambda delta: None),
            on_done=done.set_result,
        )
    )
    return done.result(timeout_s)
