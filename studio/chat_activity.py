"""Whether chat replies are being written now, for background work that yields to people waiting
on them: knowledge ingestion pauses between its embedding batches (on a CPU-only job worker they
share the cores with the model). The chat app owns the answer and registers it (in its AppConfig's
ready); this ground floor imports no app, so knowledge/ asks here without importing chat/. Nothing
registered: nothing waits."""

from __future__ import annotations

from collections.abc import Callable

_check: Callable[[], bool] | None = None


def register(check: Callable[[], bool]) -> None:
    """`check()`: True while replies are being written (chat's IN_PROGRESS messages, evaluations'
    cases left out: those are background work too)."""
    global _check
    _check = check


def replies_in_progress() -> bool:
    return _check is not None and bool(_check())
