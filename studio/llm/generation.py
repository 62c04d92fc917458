"""Streaming chat generation over transformers' `generate`.

`Generation` runs `model.generate` in a thread and yields text as tokens arrive. It knows
only token ids and text: storing replies and talking to browsers is the worker's job.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .loading import LoadedModel, chat_template_ids


class PromptTooLongError(ValueError):
    """Even the last message alone does not fit the model's context."""

    def __init__(self, tokens: int, budget: int):
        self.tokens, self.budget = tokens, budget
        super().__init__(f"The message is {tokens} tokens; this model reads at most {budget}. Shorten it.")

    def explain(self, *, context_length: int, max_new_tokens: int) -> None:
        self.args = (f"The message is {self.tokens} tokens; this model reads at most {self.budget} "
                     f"({context_length} context minus {max_new_tokens} for the reply). Shorten it.",)


class GenerationStalledError(RuntimeError):
    """`generate` produced nothing for `stall_timeout_s`: the model thread is stuck."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 512  # reply length cap, in tokens
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 1.0  # nucleus sampling mass; 1.0 keeps every token
    stop: tuple[str, ...] = ()  # reply ends before the first of these strings
    seed: int | None = None  # fixes sampling for reproducible replies
    min_new_tokens: int = 0  # forces a fixed length in benchmarks (EOS is ignored until then)
    stall_timeout_s: float = 120.0  # no token for this long means the model thread is stuck

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be at least 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must not be empty strings")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None  # from the call to the first generated token
    tokens_per_s: float | None = None  # decode speed after the first token

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 2),
        }


class _TokenQueueStreamer(BaseStreamer):
    """Hands each step's new token ids from the generate thread to the reading thread."""

    def __init__(self, token_queue: queue.Queue):
        self.token_queue = token_queue
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() first puts the whole prompt
            self.prompt_seen = True
            return
        self.token_queue.put(("tokens", value.reshape(-1).tolist(), time.perf_counter()))

    def end(self):
        self.token_queue.put(("end", None, time.perf_counter()))


class _StopWhenCancelled(StoppingCriteria):
    def __init__(self, cancelled: threading.Event):
        self.cancelled = cancelled

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)


def render_prompt_ids(loaded: LoadedModel, messages: list[dict]) -> list[int]:
    """Token ids of `messages` through the model's chat template, ready for a reply."""
    return chat_template_ids(loaded.tokenizer, messages)


# What a chat template adds around one message (role markers, separators; ChatML adds 5): an
# over-estimate, so that the walk below never keeps a turn the final render then finds too long.
MESSAGE_OVERHEAD_TOKENS = 8


def fit_turns(messages: list[dict], budget: int, *, count_text: Callable[[str], int],
              render: Callable[[list[dict]], int | list[int]]):
    """Drop the oldest turns (never the system message or the last one) until the prompt fits
    `budget` tokens: (kept messages, what `render` gave for them).

    Linear in the history, whatever its length: walking back from the newest turn, each turn's
    text is tokenised once until the budget is spent (older turns are never read), then the kept
    turns are rendered once (again only if the template's own tokens were under-estimated). A
    history of 500 long messages costs what one context's worth costs."""
    system = [m for m in messages if m["role"] == "system"][:1]
    turns = [m for m in messages if m["role"] != "system"]
    spent = sum(count_text(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in system)
    start = len(turns)
    while start > 0:
        spent += count_text(turns[start - 1]["content"]) + MESSAGE_OVERHEAD_TOKENS
        if spent > budget and start < len(turns):
            break
        start -= 1
    while True:
        kept = system + turns[start:]
        rendered = render(kept)
        size = rendered if isinstance(rendered, int) else len(rendered)
        if size <= budget:
            return kept, rendered
        if start >= len(turns) - 1:
            raise PromptTooLongError(size, budget)
        start += 1


def fit_to_context(loaded: LoadedModel, messages: list[dict], max_new_tokens: int) -> tuple[list[dict], list[int]]:
    """`messages` fitted to the model's context (fit_turns) and their token ids, ready for a reply."""
    tokenizer = loaded.tokenizer
    try:
        return fit_turns(messages, loaded.context_length - max_new_tokens,
                         count_text=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
                         render=lambda kept: render_prompt_ids(loaded, kept))
    except PromptTooLongError as exc:
        exc.explain(context_length=loaded.context_length, max_new_tokens=max_new_tokens)
        raise


class Generation:
    """One streamed reply. Iterate it for text deltas; afterwards `usage` and
    `finish_reason` ("stop", "length" or "cancelled") are set. `cancel()` from any thread."""

    def __init__(self, loaded: LoadedModel, messages: list[dict], settings: GenerationSettings):
        self.loaded = loaded
        self.settings = settings
        self.messages, self.prompt_ids = fit_to_context(loaded, messages, settings.max_new_tokens)
        self.usage = Usage(prompt_tokens=len(self.prompt_ids))
        self.finish_reason: str | None = None
        self.text = ""
        self._cancelled = threading.Event()  # tells generate() to stop, for any reason
        self._cancelled_by_user = False

    def cancel(self) -> None:
        self._cancelled_by_user = True
        self._cancelled.set()

    def _generate_kwargs(self, streamer: BaseStreamer) -> dict:
        settings = self.settings
        tokenizer = self.loaded.tokenizer
        kwargs = dict(
            input_ids=torch.tensor([self.prompt_ids], device=self.loaded.model.device),
            attention_mask=torch.ones((1, len(self.prompt_ids)), dtype=torch.long, device=self.loaded.model.device),
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens or None,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopWhenCancelled(self._cancelled)]),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        if settings.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
        return kwargs

    def __iter__(self) -> Iterator[str]:
        token_queue: queue.Queue = queue.Queue()
        failure: list[BaseException] = []
        kwargs = self._generate_kwargs(_TokenQueueStreamer(token_queue))

        def run_generate():
            try:
                if self.settings.seed is not None:
                    torch.manual_seed(self.settings.seed)
                with torch.inference_mode():
                    self.loaded.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the reading thread below
                failure.append(exc)
                token_queue.put(("end", None, time.perf_counter()))

        started = time.perf_counter()
        thread = threading.Thread(target=run_generate, name="llm-generate", daemon=True)
        thread.start()
        completion_ids: list[int] = []
        first_token_at = last_token_at = None
        eos_ids = self._eos_ids()
        stopped_by_string = False
        # Text that could be the start of a stop sequence is held back until it is not:
        # streamed text cannot be taken back.
        hold_back = max((len(s) for s in self.settings.stop), default=1) - 1
        unsent = ""
        try:
            while True:
                try:
                    kind, token_ids, at = token_queue.get(timeout=self.settings.stall_timeout_s)
                except queue.Empty:
                    self._cancelled.set()
                    raise GenerationStalledError(
                        f"The model produced no token for {self.settings.stall_timeout_s:.0f} s."
                    ) from None
                if kind == "end":
                    break
                if first_token_at is None:
                    first_token_at = at
                last_token_at = at
                if stopped_by_string:
                    continue  # generate() needs a step to notice the cancel; drop its extra tokens
                completion_ids.extend(token_ids)
                unsent = self._decode_unsent(completion_ids, unsent)
                stop_at = self._find_stop(unsent)
                if stop_at is not None:
                    delta, unsent = unsent[:stop_at], ""
                    stopped_by_string = True
                    self._cancelled.set()
                else:
                    cut = len(unsent) - hold_back
                    delta, unsent = unsent[:cut], unsent[cut:]
                if delta:
                    self.text += delta
                    yield delta
        finally:
            self._cancelled.set()
            thread.join()
        if failure:
            raise failure[0]
        if unsent:
            self.text += unsent
            yield unsent

        generated = [t for t in completion_ids if t not in eos_ids]
        self.usage.completion_tokens = len(completion_ids)
        if first_token_at is not None:
            self.usage.ttft_ms = (first_token_at - started) * 1000
            if len(completion_ids) > 1 and last_token_at > first_token_at:
                self.usage.tokens_per_s = (len(completion_ids) - 1) / (last_token_at - first_token_at)
        if stopped_by_string or len(generated) < len(completion_ids):
            self.finish_reason = "stop"
        elif self._cancelled_by_user:
            self.finish_reason = "cancelled"
        elif len(completion_ids) >= self.settings.max_new_tokens:
            self.finish_reason = "length"
        else:
            self.finish_reason = "stop"

    def _eos_ids(self) -> set[int]:
        eos = self.loaded.model.generation_config.eos_token_id
        if eos is None:
            eos = self.loaded.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def _decode_unsent(self, completion_ids: list[int], unsent: str) -> str:
        """The decoded text not yielded yet, given all completion ids so far."""
        # Decoding the whole reply each step keeps multi-byte characters and
        # tokenizer clean-up right; a trailing U+FFFD means a character is still incomplete.
        full = self.loaded.tokenizer.decode(completion_ids, skip_special_tokens=True)
        if full.endswith("\ufffd") or not full.startswith(self.text):
            return unsent
        return full[len(self.text) :]

    def _find_stop(self, text: str) -> int | None:
        positions = [text.find(s) for s in self.settings.stop if s in text]
        return min(positions) if positions else None
