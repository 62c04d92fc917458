"""What a reply asks for and what it cost, shared by the local batch engine (`engine.py`) and
external engines (`remote.py`): its generation settings, its usage and timing figures, and its
history fitted to the model's context as token ids.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from .constraints import FORMAT_FAILED, FormatError
from .loading import LoadedModel, chat_template_ids
from .tools import ToolUse, hermes_messages, prompt_messages, template_takes_tools

OUT_OF_MEMORY = "out_of_memory"  # the machine's or the GPU's memory ran out


def failure_code(exc: BaseException) -> str:
    """The code of a failure, classified where it is caught by its type, never by its words:
    OUT_OF_MEMORY, FORMAT_FAILED (an output format or a reply's tools that cannot be enforced), else
    "". torch's error is looked up only where torch is loaded already (the web and job processes
    never import it for this)."""
    if isinstance(exc, FormatError):
        return FORMAT_FAILED
    torch = sys.modules.get("torch")
    if isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError)):
        return OUT_OF_MEMORY
    return ""


class PromptTooLongError(ValueError):
    """Even the last message alone does not fit the model's context."""

    def __init__(self, tokens: int, budget: int):
        self.tokens, self.budget = tokens, budget
        super().__init__(f"The message is {tokens} tokens; this model reads at most {budget}. Shorten it.")

    def explain(self, *, context_length: int, max_new_tokens: int) -> None:
        self.args = (
            f"The message is {self.tokens} tokens; this model reads at most {self.budget} "
            f"({context_length} context minus {max_new_tokens} for the reply). Shorten it.",
        )


# The ranges of a reply's sampling, owned here: the chat's Sampling panel, the person's defaults,
# the studio's and the OpenAI-compatible APIs, chat import, prompt versions and the engines all
# check through `sampling_checked` (GenerationSettings too), so no entry point takes what another
# refuses. They are OpenAI's (and vLLM's) ranges: a client that works there works here.
TEMPERATURE_MAX = 2.0
# OpenAI's API takes at most 4 stop sequences, so an external engine (vLLM, llama-server,
# another studio) may take no more: the rule is the strictest engine's, never a silent cut.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a 64-bit integer: vLLM's range, torch's manual_seed takes it
SAMPLING_NAMES = ("temperature", "top_p", "max_new_tokens", "seed", "stop")


class SamplingParameters(TypedDict, total=False):
    """A reply's sampling as stored (Conversation.parameters, Message.parameters, ChatDefaults,
    an API request's) and exported: only the settings given; what is absent falls back to the
    layer below (the prompt version, the person's defaults, the studio's)."""

    temperature: float  # 0 to TEMPERATURE_MAX; 0 is greedy
    top_p: float  # above 0, at most 1
    max_new_tokens: int  # 1 to the studio's cap (LLM_MAX_NEW_TOKENS_CAP)
    seed: int  # SEED_MIN to SEED_MAX
    stop: list[str]  # at most MAX_STOP_SEQUENCES non-empty texts of MAX_STOP_CHARS characters


class SamplingError(ValueError):
    """A sampling setting refused: `field` names it (temperature, top_p, max_new_tokens, seed or
    stop), `requirement` says its range ("must be between 0 and 2"); a form puts its own label
    before it, an API the field's name."""

    code = "invalid_sampling"

    def __init__(self, field: str, requirement: str):
        self.field, self.requirement = field, requirement
        super().__init__(f"{field} {requirement}")


def _checked_number(name: str, value, *, low, high, whole: bool):
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value != value:
        raise SamplingError(name, f"must be {'a whole number' if whole else 'a number'}")
    if name == "top_p" and not 0 < value <= 1:
        raise SamplingError(name, "must be above 0 and at most 1")
    if high is None and value < low:
        raise SamplingError(name, f"must be at least {low}")
    if high is not None and not low <= value <= high:
        shown = f"{low:,} and {high:,}" if whole else f"{low:g} and {high:g}"
        raise SamplingError(name, f"must be between {shown}")
    return value


def sampling_checked(values, *, max_new_tokens_cap: int | None = None) -> SamplingParameters:
    """The sampling settings in `values` (a mapping of JSON values: numbers, a list of texts) that
    are given (not None, not an empty list), each checked against its range; other keys are left
    out. Raises SamplingError naming the first refused, with its range. `max_new_tokens_cap`: the
    studio's (LLM_MAX_NEW_TOKENS_CAP), which every entry point passes; the engines take what they
    are given. Whole-number settings take integers only: callers parse a form's text first
    (studio.input_checks.parsed_number)."""
    ranges = {
        "temperature": (0.0, TEMPERATURE_MAX, False),
        "top_p": (0.0, 1.0, False),
        "max_new_tokens": (1, max_new_tokens_cap, True),
        "seed": (SEED_MIN, SEED_MAX, True),
    }
    checked: SamplingParameters = {}
    for name, (low, high, whole) in ranges.items():
        if values.get(name) is not None:
            checked[name] = _checked_number(name, values[name], low=low, high=high, whole=whole)
    stop = values.get("stop")
    if stop not in (None, [], ()):
        stop = [stop] if isinstance(stop, str) else stop  # OpenAI's API takes one text for one
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise SamplingError("stop", "must be a list of non-empty texts")
        if len(stop) > MAX_STOP_SEQUENCES or any(len(s) > MAX_STOP_CHARS for s in stop):
            raise SamplingError(
                "stop", f"must be at most {MAX_STOP_SEQUENCES}, each at most {MAX_STOP_CHARS} characters"
            )
        checked["stop"] = list(stop)
    return checked


def sampling_in_range(values, *, max_new_tokens_cap: int | None = None) -> tuple[SamplingParameters, list[str]]:
    """Stored sampling brought into the ranges above, and the names of the settings that moved.
    Prompt versions saved before this rule may hold more (a temperature up to 5, up to 16 stop
    sequences, more tokens than the cap); versions never change and teams upgrade in place, so
    their replies take the nearest values in range instead of failing: the temperature clamped to
    TEMPERATURE_MAX, max_new_tokens to the cap, the first MAX_STOP_SEQUENCES stops (one longer than
    MAX_STOP_CHARS is left out: cut, it would stop replies its author never meant to stop). Values
    no rule ever stored (top_p 0, text for a number) still raise SamplingError."""
    adjusted, moved = {name: values.get(name) for name in SAMPLING_NAMES}, []
    if isinstance(adjusted["temperature"], (int, float)) and adjusted["temperature"] > TEMPERATURE_MAX:
        adjusted["temperature"] = TEMPERATURE_MAX
        moved.append("temperature")
    tokens = adjusted["max_new_tokens"]
    if max_new_tokens_cap is not None and isinstance(tokens, int) and tokens > max_new_tokens_cap:
        adjusted["max_new_tokens"] = max_new_tokens_cap
        moved.append("max_new_tokens")
    stop = adjusted["stop"]
    if isinstance(stop, (list, tuple)):
        kept = [s for s in stop if not isinstance(s, str) or len(s) <= MAX_STOP_CHARS][:MAX_STOP_SEQUENCES]
        if len(kept) < len(stop):
            adjusted["stop"] = kept
            moved.append("stop")
    return sampling_checked(adjusted, max_new_tokens_cap=max_new_tokens_cap), moved


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 512  # reply length cap, in tokens
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 1.0  # nucleus sampling mass; 1.0 keeps every token
    stop: tuple[str, ...] = ()  # reply ends before the first of these strings
    seed: int | None = None  # fixes sampling for reproducible replies
    min_new_tokens: int = 0  # forces a fixed length in benchmarks (EOS is ignored until then)
    stall_timeout_s: float = 120.0  # no new text for this long means the reply is stuck (the worker fails it)

    def __post_init__(self):
        # The shared ranges (sampling_checked); floats from settings may arrive as ints and back.
        sampling_checked(
            {
                "temperature": float(self.temperature),
                "top_p": float(self.top_p),
                "max_new_tokens": self.max_new_tokens,
                "seed": self.seed,
                "stop": list(self.stop),
            }
        )


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None  # from the call to the first generated token
    tokens_per_s: float | None = None  # decode speed after the first token

    @classmethod
    def timed(
        cls,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        started: float,
        first_at: float | None,
        last_at: float | None,
    ) -> Usage:
        """The figures of a reply from its clock readings (time.perf_counter): time to the first
        token, and decode speed between the first and the last."""
        usage = cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if first_at is not None:
            usage.ttft_ms = (first_at - started) * 1000
            if completion_tokens > 1 and last_at is not None and last_at > first_at:
                usage.tokens_per_s = (completion_tokens - 1) / (last_at - first_at)
        return usage

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 2),
        }


def render_prompt_ids(
    loaded: LoadedModel, messages: list[dict], *, continue_final: bool = False, tool_use: ToolUse | None = None
) -> list[int]:
    """Token ids of `messages` through the model's chat template, ready for a reply; with
    `continue_final`, the last message (an assistant's, cut short) is left open for the model to
    write on from its last character, as transformers' `continue_final_message` renders it. With
    `tool_use`, the tools shown as the template shows them, else in the Hermes format (tools.py)."""
    messages, tools = prompt_messages(messages, tool_use, native=template_takes_tools(loaded.tokenizer.chat_template))
    if not continue_final:
        return chat_template_ids(loaded.tokenizer, messages, tools)
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("continue_final: the last message must be the assistant's reply to continue")
    encoded = loaded.tokenizer.apply_chat_template(messages, tools=tools, continue_final_message=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


# What a chat template adds around one message (role markers, separators; ChatML adds 5): an
# over-estimate, so that the walk below never keeps a turn the final render then finds too long.
MESSAGE_OVERHEAD_TOKENS = 8


def fit_turns(
    messages: list[dict],
    budget: int,
    *,
    count_text: Callable[[str], int],
    render: Callable[[list[dict]], int | list[int]],
    keep_last: int = 1,
):
    """Drop the oldest turns (never the system message or the last `keep_last`: a reply being
    continued keeps the question it answers) until the prompt fits `budget` tokens: (kept
    messages, what `render` gave for them).

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
        if spent > budget and start <= len(turns) - keep_last:
            break
        start -= 1
    while True:
        kept = system + turns[start:]
        rendered = render(kept)
        size = rendered if isinstance(rendered, int) else len(rendered)
        if size <= budget:
            return kept, rendered
        if start >= len(turns) - keep_last:
            raise PromptTooLongError(size, budget)
        start += 1


def fit_to_context(
    loaded: LoadedModel,
    messages: list[dict],
    max_new_tokens: int,
    *,
    continue_final: bool = False,
    tool_use: ToolUse | None = None,
) -> tuple[list[dict], list[int]]:
    """`messages` fitted to the model's context (fit_turns) and their token ids, ready for a reply;
    with `continue_final`, ready to write on the last message, an assistant's reply cut short
    (render_prompt_ids), which is kept with the turn before it. With `tool_use`, the tools are shown
    (and counted: in the system turn where the template has no tool format of its own)."""
    tokenizer = loaded.tokenizer
    if tool_use and not template_takes_tools(tokenizer.chat_template):
        messages, tool_use = hermes_messages(messages, tool_use), None  # the tools are text in the system turn
    try:
        return fit_turns(
            messages,
            loaded.context_length - max_new_tokens,
            count_text=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            render=lambda kept: render_prompt_ids(loaded, kept, continue_final=continue_final, tool_use=tool_use),
            keep_last=2 if continue_final else 1,
        )
    except PromptTooLongError as exc:
        exc.explain(context_length=loaded.context_length, max_new_tokens=max_new_tokens)
        raise
