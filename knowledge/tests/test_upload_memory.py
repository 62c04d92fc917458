"""Uploads stay on disk on their way in (issue 25: ten 19 MiB files in one request raised the web
process 1.4 GB and left 210 MB behind). Twisted no longer parses a body as a form (it read a
multipart body whole and copied it several times); daphne's body messages are only counted, and
the application reads the body from Twisted's spool file a piece at a time; the body-limit
middleware counts a chunked body instead of gathering it. Measured figures: benchmarks/knowledge_memory.py."""

import asyncio
import io
import tempfile

import pytest

from studio.request_limits import BodyLimitMiddleware
from studio.server import BoundedWebRequest, SpooledBodyQueue

BODY = bytes(range(256)) * 4096  # 1 MiB


def test_the_queue_holds_none_of_the_body_and_hands_it_over_in_pieces_from_its_file():
    spool = tempfile.TemporaryFile()
    spool.write(BODY)
    spool.seek(0)
    queue = SpooledBodyQueue(spool)
    # As daphne does: the whole body at once, in 8 KiB messages, before the application reads any.
    while True:
        chunk = spool.read(8192)
        queue.put_nowait({"type": "http.request", "body": chunk, "more_body": len(chunk) == 8192})
        if len(chunk) < 8192:
            break
    queue.put_nowait({"type": "http.disconnect"})
    assert len(queue._queue) == 2  # a place holder for the body, and the disconnect: no bytes
    assert all(not isinstance(item, dict) or "body" not in item for item in queue._queue)

    async def receive_all():
        pieces = []
        while True:
            message = await queue.get()
            pieces.append(message)
            if not message.get("more_body"):
                return pieces, await queue.get()

    pieces, after = asyncio.run(receive_all())
    assert b"".join(piece["body"] for piece in pieces) == BODY
    assert max(len(piece["body"]) for piece in pieces) == SpooledBodyQueue.PIECE_BYTES and len(pieces) == 4
    assert after == {"type": "http.disconnect"}


def test_a_body_whose_file_was_closed_meanwhile_reads_as_a_disconnect():
    spool = io.BytesIO(BODY)
    queue = SpooledBodyQueue(spool)
    queue.put_nowait({"type": "http.request", "body": BODY, "more_body": False})
    spool.close()  # the connection went away: Twisted closed its spool
    assert asyncio.run(queue.get()) == {"type": "http.disconnect"}


def test_twisted_does_not_parse_the_body_as_a_form():
    class Channel:
        def getPeer(self):
            return None

        def getHost(self):
            return None

        transport = None
        factory = type("Factory", (), {"server": type("Server", (), {"protocol_connected": lambda self, r: None})()})()

    assert BoundedWebRequest(Channel())._parsePOSTFormSubmission is False


def run_app(app, messages):
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def main():
        await BodyLimitMiddleware(app)(
            {"type": "http", "path": "/knowledge/1/documents/upload/", "headers": []}, receive, send
        )

    asyncio.run(main())
    return sent


@pytest.fixture
def upload_limit_of_3_mib(settings):
    from studio import request_limits

    settings.STUDIO_UPLOAD_ROUTE_BYTES = {r"^/knowledge/[0-9]+/documents/upload/$": 3 * 1024 * 1024}
    request_limits._route_limits.cache_clear()
    yield
    request_limits._route_limits.cache_clear()


def test_a_chunked_body_reaches_the_app_as_it_comes_and_one_past_the_limit_is_refused(upload_limit_of_3_mib):
    seen = []

    async def app(scope, receive, send):  # as Django's handler: reads the whole body, then answers
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            seen.append(len(message["body"]))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pieces = [{"type": "http.request", "body": BODY, "more_body": True} for _ in range(2)]
    answer = run_app(app, [*pieces, {"type": "http.request", "body": b"", "more_body": False}])
    assert seen == [len(BODY), len(BODY), 0] and answer[0]["status"] == 200  # each piece as it came, not gathered

    seen.clear()
    answer = run_app(app, [{"type": "http.request", "body": BODY, "more_body": True} for _ in range(5)])
    assert answer[0]["status"] == 413 and seen == [len(BODY)] * 3
