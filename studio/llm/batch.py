"""Many replies at once: static batches through `model.generate`, for evaluations.

A chat reply streams alone (`generation.Generation`); an evaluation knows all its prompts up
front, so it decodes them in batches of prompts of similar length (left-padded), which on this
2-core CPU in float32 decodes a batch of 8 about 4x faster in aggregate than one at a time.
Knows only messages, token ids and text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .generation import GenerationSettings, fit_to_context
from .loading import LoadedModel


@dataclass
class BatchReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of text or a stop string) or "length"


def generate_batch(loaded: LoadedModel, conversations: list[list[dict]], settings: GenerationSettings, *,
                   batch_size: int = 8, before_batch: Callable[[], None] | None = None
                   ) -> Iterator[tuple[int, BatchReply]]:
    """Yield (index into `conversations`, reply) as each batch finishes. Prompts are sorted by
    length so that a batch pads little; `before_batch()` runs before each (to pause or cancel)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    prompts = [fit_to_context(loaded, messages, settings.max_new_tokens)[1] for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    for start in range(0, len(order), batch_size):
        if before_batch is not None:
            before_batch()
        indices = order[start:start + batch_size]
        for index, reply in zip(indices, _decode([prompts[i] for i in indices], loaded, settings)):
            yield index, reply


def _decode(prompts: list[list[int]], loaded: LoadedModel, settings: GenerationSettings) -> list[BatchReply]:
    tokenizer, model = loaded.tokenizer, loaded.model
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids in prompts)
    # Left padding: every row's last prompt token sits in the last column, where decoding starts.
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts], device=model.device)  # (B, T)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=model.device)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=settings.max_new_tokens,
                  min_new_tokens=settings.min_new_tokens or None, pad_token_id=pad_id)
    if settings.stop:
        kwargs.update(stop_strings=list(settings.stop), tokenizer=tokenizer)  # each row stops on its own
    if settings.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
    with torch.inference_mode():
        output = model.generate(**kwargs)  # (B, T + new)
    eos_ids = _eos_ids(loaded)
    replies = []
    for row, ids in enumerate(prompts):
        completion = output[row, width:].tolist()
        ended = next((n for n, token in enumerate(completion) if token in eos_ids), None)
        completion = completion[:ended + 1] if ended is not None else completion
        text = tokenizer.decode([t for t in completion if t not in eos_ids], skip_special_tokens=True)
        stop_at = min((text.find(s) for s in settings.stop if s in text), default=None)
        if stop_at is not None:
            text = text[:stop_at]
        finish = "stop" if ended is not None or stop_at is not None or len(completion) < settings.max_new_tokens \
            else "length"
        replies.append(BatchReply(text=text, prompt_tokens=len(ids), completion_tokens=len(completion),
                                  finish_reason=finish))
    return replies


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
