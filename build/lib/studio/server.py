"""Serving the studio with daphne, with request bodies bounded at the server.

Daphne hands the application the whole body at once: Twisted spools it to a file while it
arrives, then daphne queues all of it in memory before the application reads a byte. A
150 MB POST to the login page (no login needed) grew the server by 1.78 GB. Here daphne's
request class refuses a body over the route's limit (studio.request_limits) while it
arrives: a declared Content-Length as soon as the headers are in, a chunked body once it
passes the limit. The 413 answer is written and the connection closed; nothing is queued.
"""

from __future__ import annotations

from daphne import http_protocol

from .request_limits import body_limit_for, too_large_response


class BoundedWebRequest(http_protocol.WebRequest):
    body_limit = 0
    body_received = 0
    refused = False

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


def install_body_limits() -> None:
    """Make daphne build its requests from BoundedWebRequest (its HTTP factory reads this name)."""
    http_protocol.WebRequest = BoundedWebRequest


def serve(*, host: str, port: int, application: str, max_frame_bytes: int) -> None:
    from daphne.cli import CommandLineInterface

    install_body_limits()
    CommandLineInterface().run(["--bind", host, "--port", str(port),
                                "--websocket-max-message-size", str(max_frame_bytes), application])
