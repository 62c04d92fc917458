"""One sweeper for what lapses when a process dies or a message is lost: replies whose model
worker died or never came, jobs whose job worker died, jobs the job queue never got.

Each app registers the sweep of what it owns (in its AppConfig.ready), so this ground floor
imports no app. Every long-running process runs them all on a schedule: each model worker (in
its lease loop), each job worker (a thread beside Celery) and, where the model worker does not
live in it, the web process. Each sweep is a conditional update, so several processes sweeping
at once fail or dispatch a thing once. Pages, APIs and selectors only read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections

from .database import database_unavailable

log = logging.getLogger("studio")
_sweeps: list[Callable[[], None]] = []


def register(sweep: Callable[[], None]) -> None:
    if sweep not in _sweeps:
        _sweeps.append(sweep)


def sweep_all() -> None:
    """Run every registered sweep once (from sync code)."""
    for sweep in list(_sweeps):
        try:
            sweep()
        except Exception as exc:  # the database or the channel layer is away: the next round tries again
            busy = database_unavailable(exc)  # expected while it lasts: one line a round, no traceback
            log.warning(
                "sweep %s failed%s",
                getattr(sweep, "__qualname__", sweep),
                f": the database cannot take it now ({exc})" if busy else "",
                exc_info=not busy,
            )


def start_thread(interval_s: float) -> threading.Event:
    """Sweep every `interval_s` in a daemon thread (job workers); set the returned event to stop."""
    stop = threading.Event()

    def run():
        while not stop.wait(interval_s):
            sweep_all()
            close_old_connections()  # a connection the database dropped meanwhile is not reused

    threading.Thread(target=run, name="studio-sweeper", daemon=True).start()
    return stop
