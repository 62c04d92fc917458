"""Continuous batching: many replies decoded together, each joining at the next step.

One decode step runs the model once for every reply in flight: a (B, 1) batch of their last
tokens over one key/value cache. A new reply is prefilled alone (its prompt in one forward
pass), then its cache is merged into the batch's, left-padded to a common length, so it joins
at the next step; a finished, stopped or failed reply leaves by dropping its row. Each reply
keeps its own sampling (temperature, top-p, seed), length limit, stop strings and adapter.

The step loop runs in one thread; `submit` and `cancel` are safe from any thread, and each
reply's text arrives through its own `on_delta` / `on_done` callbacks (called from the loop
thread). Knows only token ids and text.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .generation import GenerationSettings, Usage, fit_to_context
from .loading import LoadedModel


@dataclass
class EngineRequest:
    key: object  # the caller's id for this reply
    messages: list[dict]
    settings: GenerationSettings
    on_delta: Callable[[str], None]
    on_done: Callable[["EngineResult"], None]
    adapter: str = ""  # a peft adapter name, "" for the base model


@dataclass
class EngineResult:
    text: str
    finish_reason: str  # "stop", "length", "cancelled" or "error"
    usage: Usage
    error: str = ""


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
    done: str | None = None  # why it ends, once it does: "stop", "length", "cancelled"
    stopped_by_string: bool = False
    prefix_offset: int = 0  # the window of completion tokens decoded for the newest text
    read_offset: int = 0


class BatchEngine:
    """Continuous batching over one loaded model (its `model`, `tokenizer`)."""

    def __init__(self, loaded: LoadedModel, *, max_batch: int = 8):
        self.loaded = loaded
        self.max_batch = max_batch
        self.incoming: queue.Queue[EngineRequest] = queue.Queue()
        self.calls: queue.Queue[tuple[Callable, Future]] = queue.Queue()  # run between steps (adapter loads)
        self.cancelled: set = set()
        self.lock = threading.Lock()
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, L): 1 where the cache holds a real token
        self.wake = threading.Event()
        self.stopping = False
        self.eos_ids = self._eos_ids()
        self.thread = threading.Thread(target=self._loop, name="llm-batch-engine", daemon=True)
        self.thread.start()

    # --- from any thread -------------------------------------------------------------------

    def submit(self, request: EngineRequest) -> None:
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

    def in_flight(self) -> int:
        return len(self.rows) + self.incoming.qsize()

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(10)

    # --- the step loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            self._run_calls()
            if not self.rows and self.incoming.empty():
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            try:
                self._admit()
                self._drop_cancelled()
                if self.rows:
                    self._decode_step()
            except Exception as exc:  # a step failed: every reply in it fails, the engine goes on
                for row in self.rows:
                    self._finish(row, "error", error=f"{exc.__class__.__name__}: {exc}")
                self.rows, self.cache, self.mask = [], None, None

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

    def _admit(self) -> None:
        while len(self.rows) < self.max_batch:
            try:
                request = self.incoming.get_nowait()
            except queue.Empty:
                return
            with self.lock:
                if request.key in self.cancelled:
                    self.cancelled.discard(request.key)
                    request.on_done(EngineResult("", "cancelled", Usage()))
                    continue
            try:
                self._prefill(request)
            except Exception as exc:
                request.on_done(EngineResult("", "error", Usage(), error=str(exc)))

    def _prefill(self, request: EngineRequest) -> None:
        """The new reply's prompt in one pass alone; its cache joins the batch's, left-padded."""
        _, prompt_ids = fit_to_context(self.loaded, request.messages, request.settings.max_new_tokens)
        generator = None
        if request.settings.seed is not None:
            generator = torch.Generator(device=self.loaded.model.device).manual_seed(request.settings.seed)
        row = _Row(request=request, prompt_ids=prompt_ids, generator=generator, started=time.perf_counter())
        device = self.loaded.model.device
        cache = DynamicCache()
        ids = torch.tensor([prompt_ids], device=device)  # (1, T)
        with torch.inference_mode():
            output = self.loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                                       use_cache=True, **self._adapter_kwargs([row]))
        logits = output.logits[:, -1, :]  # (1, V)
        self._merge(cache, len(prompt_ids))
        self.rows.append(row)
        self._take(row, self._sample(row, logits[0]))

    def _merge(self, cache: DynamicCache, length: int) -> None:
        device = self.loaded.model.device
        if self.cache is None:
            self.cache, self.mask = cache, torch.ones((1, length), dtype=torch.long, device=device)
            return
        width = self.mask.shape[1]
        if length > width:  # the batch grows on the left to the newcomer's length
            grow = length - width
            for layer in self.cache.layers:
                layer.keys = _pad_left(layer.keys, grow)
                layer.values = _pad_left(layer.values, grow)
            self.mask = torch.cat([torch.zeros((self.mask.shape[0], grow), dtype=torch.long, device=device),
                                   self.mask], dim=1)
            width = length
        pad = width - length
        for own, new in zip(self.cache.layers, cache.layers):
            own.keys = torch.cat([own.keys, _pad_left(new.keys, pad)], dim=0)
            own.values = torch.cat([own.values, _pad_left(new.values, pad)], dim=0)
        row_mask = torch.cat([torch.zeros(pad, dtype=torch.long, device=device),
                              torch.ones(length, dtype=torch.long, device=device)])
        self.mask = torch.cat([self.mask, row_mask[None]], dim=0)

    def _decode_step(self) -> None:
        device = self.loaded.model.device
        last = torch.tensor([[row.completion[-1]] for row in self.rows], device=device)  # (B, 1)
        positions = self.mask.sum(dim=1, keepdim=True)  # (B, 1): each row's next position
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long, device=device)], dim=1)
        with torch.inference_mode():
            output = self.loaded.model(input_ids=last, attention_mask=self.mask, position_ids=positions,
                                       past_key_values=self.cache, use_cache=True,
                                       **self._adapter_kwargs(self.rows))
        logits = output.logits[:, -1, :]  # (B, V)
        for index, row in enumerate(list(self.rows)):
            self._take(row, self._sample(row, logits[index]))
        self._drop_finished()

    def _adapter_kwargs(self, rows: list[_Row]) -> dict:
        names = [row.request.adapter or "__base__" for row in rows]
        if all(name == "__base__" for name in names) and not hasattr(self.loaded.model, "peft_config"):
            return {}
        return {"adapter_names": names} if hasattr(self.loaded.model, "peft_config") else {}

    def _sample(self, row: _Row, logits: torch.Tensor) -> int:
        settings = row.request.settings
        if len(row.completion) < settings.min_new_tokens:
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

    def _take(self, row: _Row, token: int) -> None:
        now = time.perf_counter()
        row.first_token_at = row.first_token_at or now
        row.last_token_at = now
        row.completion.append(token)
        settings = row.request.settings
        if token in self.eos_ids:
            row.done = "stop"
            return
        row.unsent += self._decode_new(row)
        stop_at = min((row.unsent.find(s) for s in settings.stop if s in row.unsent), default=None)
        if stop_at is not None:
            self._send(row, row.unsent[:stop_at])
            row.unsent = ""
            row.done, row.stopped_by_string = "stop", True
            return
        hold_back = max((len(s) for s in settings.stop), default=1) - 1
        cut = len(row.unsent) - hold_back
        if cut > 0:
            self._send(row, row.unsent[:cut])
            row.unsent = row.unsent[cut:]
        if len(row.completion) >= settings.max_new_tokens:
            row.done = "length"

    def _send(self, row: _Row, delta: str) -> None:
        if delta:
            row.text += delta
            row.request.on_delta(delta)

    def _decode_new(self, row: _Row) -> str:
        """The text the newest token adds, decoding a short window rather than the whole reply
        each step (a window, because a token's text can depend on the ones before it, and a
        multi-byte character can span tokens: nothing is emitted while it ends unfinished)."""
        decode = self.loaded.tokenizer.decode
        before = decode(row.completion[row.prefix_offset:row.read_offset], skip_special_tokens=True)
        after = decode(row.completion[row.prefix_offset:], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd") or not after.startswith(before):
            return ""
        row.prefix_offset, row.read_offset = row.read_offset, len(row.completion)
        return after[len(before):]

    def _tail(self, row: _Row) -> str:
        """What the whole completion decodes to beyond the text sent: the held-back tail, and
        anything a mid-stream decode could not place (never cut short by detokenisation)."""
        full = self.loaded.tokenizer.decode([t for t in row.completion if t not in self.eos_ids],
                                            skip_special_tokens=True)
        return full[len(row.text):] if full.startswith(row.text) else row.unsent

    def _drop_cancelled(self) -> None:
        with self.lock:
            keys, self.cancelled = self.cancelled, set()
        for row in self.rows:
            if row.request.key in keys:
                row.done = "cancelled"
        self.cancelled |= {key for key in keys if not any(r.request.key == key for r in self.rows)}
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [index for index, row in enumerate(self.rows) if not row.done]
        if len(keep) == len(self.rows):
            return
        for index, row in enumerate(self.rows):
            if row.done:
                if row.done != "cancelled" and not row.stopped_by_string:
                    self._send(row, self._tail(row))
                self._finish(row, row.done)
        self.rows = [self.rows[index] for index in keep]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        selected = torch.tensor(keep, device=self.mask.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[selected], layer.values[selected]
        self.mask = self.mask[selected]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # left columns no row uses
        if unused:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            self.mask = self.mask[:, unused:]

    def _finish(self, row: _Row, reason: str, *, error: str = "") -> None:
        usage = Usage(prompt_tokens=len(row.prompt_ids), completion_tokens=len(row.completion))
        if row.first_token_at is not None:
            usage.ttft_ms = (row.first_token_at - row.started) * 1000
            if len(row.completion) > 1 and row.last_token_at > row.first_token_at:
                usage.tokens_per_s = (len(row.completion) - 1) / (row.last_token_at - row.first_token_at)
        row.request.on_done(EngineResult(row.text, reason, usage, error=error))

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
