"""What the studio refuses, said once: every app's errors share this base, and every entry point
turns one into what a person reads (a form error, an error frame, a JSON answer) the same way.

`message` says what to fix; `field` names where (a form field or a JSON path: `[3].expected`);
`status` is the HTTP answer of an API that refuses it (400 unless a subclass says otherwise).
"""

from __future__ import annotations


class StudioError(Exception):
    status = 400

    def __init__(self, message: str, field: str = "", *, status: int | None = None):
        self.message, self.field = message, field
        if status is not None:
            self.status = status
        super().__init__(f"{field}: {message}" if field else message)


class NotFound(StudioError):
    status = 404


class Forbidden(StudioError):
    status = 403


class LimitReached(StudioError):
    """A per-person limit (queued evaluations, waiting API requests): try again later."""

    status = 429
