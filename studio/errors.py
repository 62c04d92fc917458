"""What the studio refuses, said once: every app's errors share this base, and every entry point
turns one into what a person reads (a form error, an error frame, a JSON answer) the same way.

`message` says what to fix; `field` names where (a form field or a JSON path: `[3].expected`);
`status` is the HTTP answer of an API that refuses it (400 unless a subclass says otherwise);
`code`, where a program may act on which rule refused it (`output_format_too_complex`), goes with
the message in an API's answer.
"""

from __future__ import annotations


class StudioError(Exception):
    status = 400
    # A refusal that passes with time (429): the seconds a client should wait, sent as Retry-After.
    retry_after_s: int | None = None

    def __init__(self, message: str, field: str = "", *, status: int | None = None, code: str = ""):
        self.message, self.field, self.code = message, field, code
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
    retry_after_s = 10  # a waiting reply takes seconds, an evaluation longer: a client asks again soon
