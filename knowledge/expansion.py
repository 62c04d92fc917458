"""Query expansion: a served chat model rewrites the question in other words, and search fuses what
each rewrite finds with what the question finds (search.py), so a passage worded unlike the question
can still come up. Off by default (a base's `expand_query`): it costs a model reply before every
search, measured and returned with the search (`expansion`).

The model is asked by the chat app (chat/serving/expansion.py registers `ask` here when Django
starts): knowledge sits below chat and never imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_REWRITES = 3
MAX_REWRITE_CHARS = 300
REWRITE_INSTRUCTIONS = (
    "Rewrite the user's question {count} times, each time in other words, as someone searching a document "
    "for the answer would ask it. Write one rewrite per line, with no numbering and nothing else."
)

# (question, user, how many) -> the model's reply text; raises ExpansionFailed with a reason.
_ask: Callable[[str, object, int], str] | None = None


class ExpansionFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Expansion:
    rewrites: list[str] = field(default_factory=list)
    ms: float = 0.0
    note: str = ""  # why there are none, when there are none

    def to_dict(self) -> dict:
        return {"rewrites": self.rewrites, "ms": round(self.ms, 1), "note": self.note}


def register(ask: Callable[[str, object, int], str]) -> None:
    global _ask
    _ask = ask


def expand(query: str, *, user) -> Expansion:
    """Up to MAX_REWRITES rewrites of the question, each unlike it and the others; a model that
    is not there or fails gives none, with a note (the search goes on with the question alone)."""
    started = time.perf_counter()
    if _ask is None:
        return Expansion(note="not expanded: no chat model is served here")
    try:
        reply = _ask(query, user, MAX_REWRITES)
    except ExpansionFailed as exc:
        return Expansion(ms=(time.perf_counter() - started) * 1000, note=f"not expanded: {exc.reason}")
    return Expansion(rewrites=rewrites_in(reply, query), ms=(time.perf_counter() - started) * 1000)


def rewrites_in(reply: str, query: str) -> list[str]:
    """The rewrites of a model's reply: its lines, list marks and quotes taken off, each once, not
    the question itself, at most MAX_REWRITES of at most MAX_REWRITE_CHARS."""
    seen = {" ".join(query.lower().split())}
    found = []
    for line in reply.splitlines():
        text = line.strip().lstrip("-*•0123456789.) ").strip().strip('"').strip()[:MAX_REWRITE_CHARS]
        key = " ".join(text.lower().split())
        if len(key) < 3 or key in seen:
            continue
        seen.add(key)
        found.append(text)
        if len(found) == MAX_REWRITES:
            break
    return found
