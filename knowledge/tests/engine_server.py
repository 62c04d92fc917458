"""A small real HTTP server on loopback standing in for an engine outside the studio (an embedding
server, a reranker): the test says how it answers each request, and reads what it was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# answer(path, body) -> (status, JSON-able value or raw bytes)
Answer = Callable[[str, dict], tuple[int, object]]


class EngineServer:
    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers), in order
        self.released = threading.Event()  # set at the end: a request held by `hang` returns
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                server.requests.append((self.path, body, dict(self.headers)))
                status, payload = server.answer(self.path, body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def hang(self) -> tuple[int, object]:
        """An answer that comes only when the test ends (the client's timeout comes first)."""
        self.released.wait(timeout=60)
        return 200, {"data": []}

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
