"""Answers that are tool calls: a failure case's `actual` or `expected` may be one or more calls,
stored in the Hermes text form a reply that called a tool has (studio/llm/tools.py), so a flagged
reply keeps its calls as they are and an evaluation compares like with like.

An import row or an API case may give the calls as JSON; `answer_text` turns them into that text:

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
        "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}   (OpenAI's message)
    {"name": "get_weather", "arguments": {"city": "Paris"}}                      (one call)
    [{"name": "get_weather", "arguments": {...}}, {"name": "get_time", ...}]     (several)

Anything else stays text (a JSON answer such as {"item": "apple"} is no call: it has no
"arguments"). Django-free: the scorer (evals/scorers.py) reads calls back with `answer_calls`.
"""

from __future__ import annotations

import json

from studio.llm.tools import CALL_OPEN, TOOL_NAME, assistant_text, read_reply

MAX_CALLS = 128  # as many as the tools a request may declare (studio.llm.tools.MAX_TOOLS)
_CALL_KEYS = {"name", "arguments", "id", "type"}  # a bare call; "id"/"type" as OpenAI's clients add them


class AnswerError(ValueError):
    """A JSON answer shaped like calls that cannot be one; `field` names where (`expected.tool_calls[1].arguments`)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message, self.field = message, field


def answer_text(value, field: str):
    """`value` as a case stores it: calls given as JSON (an object or list, or their JSON text, as a
    CSV cell holds them) as their Hermes text; any other value returned unchanged (text stays text;
    the caller checks the rest)."""
    parsed = value
    if isinstance(value, str):
        if value.strip()[:1] not in ("{", "["):
            return value
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
    shape = _calls_shape(parsed, field)
    if shape is None:
        return value
    content, calls, where = shape
    if len(calls) > MAX_CALLS:
        raise AnswerError(f"holds {len(calls):,} tool calls; at most {MAX_CALLS}", field)
    if not calls and isinstance(content, str) and content.strip():
        return content  # OpenAI's message with no calls: its text
    if not calls:
        raise AnswerError("`tool_calls` is empty: give at least one call, or the answer as text", field)
    if content is not None and not isinstance(content, str):
        raise AnswerError("must be text or null", f"{field}.content")
    written = [_checked_call(call, f"{field}{where(n)}") for n, call in enumerate(calls)]
    return assistant_text((content or "").strip(), written)


def _calls_shape(parsed, field: str):
    """(content, calls, where-of-call-n) when `parsed` is shaped as calls, else None."""
    if isinstance(parsed, dict) and "tool_calls" in parsed:
        calls = parsed["tool_calls"]
        if not isinstance(calls, list):
            raise AnswerError("must be a list of calls", f"{field}.tool_calls")
        return parsed.get("content"), calls, lambda n: f".tool_calls[{n}]"
    if _is_call(parsed):
        return None, [parsed], lambda n: ""
    if isinstance(parsed, list) and parsed and all(_is_call(item) for item in parsed):
        return None, parsed, lambda n: f"[{n}]"
    return None


def _is_call(item) -> bool:
    if not isinstance(item, dict):
        return False
    if item.get("type") == "function" and isinstance(item.get("function"), dict):  # OpenAI's tool_calls[n]
        return True
    return "name" in item and "arguments" in item and set(item) <= _CALL_KEYS


def _checked_call(call, where: str) -> tuple[str, str]:
    """(name, arguments JSON) of one call, its name and arguments checked."""
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        call, where = call["function"], f"{where}.function"
    if not isinstance(call, dict):
        raise AnswerError('must be {"name": ..., "arguments": {...}}', where)
    name = call.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise AnswerError(f"1 to 64 letters, digits, _ or - (got {str(name)[:80]!r})", f"{where}.name")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI's form: the arguments' JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise AnswerError("is not valid JSON", f"{where}.arguments") from None
    if not isinstance(arguments, dict):
        raise AnswerError("must be a JSON object of the tool's arguments", f"{where}.arguments")
    return name, json.dumps(arguments, ensure_ascii=False)


def answer_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A stored answer's (content, [(name, arguments JSON text)]); no calls for a text answer."""
    if CALL_OPEN not in text:
        return text, []
    content, calls = read_reply(text)
    return content, [(call["function"]["name"], call["function"]["arguments"]) for call in calls]


def answer_cards(text: str) -> dict:
    """What a page shows of an answer: {"content", "calls": [{"name", "arguments" (pretty JSON, or the
    text as written when it does not parse)}]}."""
    content, calls = answer_calls(text)
    cards = []
    for name, arguments in calls:
        try:
            shown = json.dumps(json.loads(arguments), ensure_ascii=False, indent=2)
        except ValueError:
            shown = arguments
        cards.append({"name": name, "arguments": shown})
    return {"content": content, "calls": cards}
