"""Serving the studio with daphne, with request bodies bounded at the server and kept out of memory.

Daphne hands the application the whole body at once: Twisted spools it to a file while it
arrives, then daphne queues all of it in memory before the application reads a byte. A
150 MB POST to the login page (no login needed) grew the server by 1.78 GB. Here daphne's
request class refuses a body over the route's limit (studio.request_limits) while it
arrives: a declared Content-Length as soon as the headers are in, a chunked body once it
passes the limit. The 413 answer is written and the connection closed; nothing is queued.

A body within the limit stays in the file Twisted spooled it to (a temporary file past 100 kB):
Twisted does not parse it as a form (it did, whole, for multipart bodies daphne never reads: ten
19 MiB files in one upload grew the server by 1.9 GB), and the application reads it from that
file a piece at a time (SpooledBodyQueue) instead of from 8 KiB messages daphne queued all at
once (which held the whole body and left ~140 MB of it behind, fragmented).
"""

from __future__ import annotations

import asyncio
from functools import partial

from daphne import http_protocol
from daphne.cli import CommandLineInterface
from daphne.server import Server

from .request_limits import body_limit_for, too_large_response


class BoundedWebRequest(http_protocol.WebRequest):
    body_limit = 0
    body_received = 0
    refused = False

    def __init__(self, *args, **kwargs):
        # Twisted's own form parsing (request.args) reads a multipart body whole and copies it
        # several times; daphne never looks at request.args.
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    def gotLength(self, length):
        path = getattr(self.channel, "_path", b"/").split(b"?")[0].decode("latin-1")
        self.body_limit = body_limit_for(path)
        self.body_path = path
        if length is not None and length > self.body_limit:
            self._refuse()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.body_received += len(data)
        if self.body_received > self.body_limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        self.refused = True
        reason, body, headers = too_large_response(self.body_path, self.body_limit)
        head = b"HTTP/1.1 413 " + reason + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.channel.transport.write(head + b"\r\n" + body)
        self.channel.loseConnection()


class _Body:
    """Where the request's body stands in the queue: read from its file when the application asks."""


class SpooledBodyQueue(asyncio.Queue):
    """One HTTP request's input queue (the application's `receive`). Daphne puts the body in as
    8 KiB `http.request` messages, all at once; here they are only counted, and the application
    gets the body in pieces read from the file Twisted spooled it to, one piece per `receive()`.
    Other messages (`http.disconnect`) queue as usual, behind the body."""

    PIECE_BYTES = 256 * 1024

    def __init__(self, body_file):
        super().__init__()
        self.body_file = body_file
        self.body_bytes = 0  # as daphne put it in
        self.body_complete = False
        self.body_read = 0  # handed to the application

    def _put(self, message):
        if message.get("type") == "http.request" and not self.body_complete:
            self.body_bytes += len(message.get("body", b""))
            if message.get("more_body"):
                return  # a getter woken meanwhile finds the queue empty and waits on
            self.body_complete = True
            message = _Body
        super()._put(message)

    def _get(self):
        if self._queue[0] is not _Body:
            return super()._get()
        try:
            self.body_file.seek(self.body_read)
            piece = self.body_file.read(min(self.PIECE_BYTES, self.body_bytes - self.body_read))
        except (ValueError, OSError):  # closed: the connection went away meanwhile
            self._queue.popleft()
            return {"type": "http.disconnect"}
        self.body_read += len(piece)
        more = bool(piece) and self.body_read < self.body_bytes
        if not more:
            self._queue.popleft()
        return {"type": "http.request", "body": piece, "more_body": more}


class BoundedServer(Server):
    def create_application(self, protocol, scope):
        """daphne's own, with a SpooledBodyQueue for an HTTP request's input (WebSockets keep theirs)."""
        assert "application_instance" not in self.connections[protocol]
        input_queue = (
            SpooledBodyQueue(protocol.content) if isinstance(protocol, http_protocol.WebRequest) else asyncio.Queue()
        )
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue


def install_body_limits() -> None:
    """Make daphne build its requests from BoundedWebRequest (its HTTP factory reads this name)."""
    http_protocol.WebRequest = BoundedWebRequest


def serve(*, host: str, port: int, application: str, max_frame_bytes: int) -> None:
    class BoundedCommandLine(CommandLineInterface):
        server_class = BoundedServer

    install_body_limits()
    BoundedCommandLine().run(
        ["--bind", host, "--port", str(port), "--websocket-max-message-size", str(max_frame_bytes), application]
    )
