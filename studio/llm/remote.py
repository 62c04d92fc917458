"""An external engine: stream replies from any OpenAI-compatible server (vLLM, llama.cpp's
`llama-server`, Ollama, another studio) instead of loading a model.

Same interface as `engine.BatchEngine` (`submit`, `cancel`, `call`, `close`), so the model worker
keeps its protocol, leases, stop, usage and storage; the server does the batching. Each reply is
one streamed `POST /chat/completions` in a thread of its own; a stop closes its connection.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from concurrent.futures import Future

from .constraints import OutputFormat
from .engine import EngineRequest, EngineResult
from .loading import ModelLoadError
from .replies import Usage
from .tools import CALL_CLOSE, CALL_OPEN, openai_tool_choice, openai_tools, structured_messages


def response_format_of(output_format: OutputFormat) -> dict:
    """An output format as OpenAI's `response_format`, which external engines take for JSON only."""
    if output_format["type"] == "json":
        return {"type": "json_object"}
    if output_format["type"] == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": output_format["schema"], "strict": True},
        }
    raise ValueError(
        f"An external engine takes only JSON output formats (response_format), not "
        f"{output_format['type']}: use a JSON Schema, or serve the model with LLM_ENGINE=local."
    )


class RemoteEngine:
    def __init__(self, url: str, *, api_key: str = "", model: str = "", timeout_s: float = 120.0):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelLoadError(f"LLM_ENGINE_URL={url!r}: give the server's OpenAI base URL, e.g. http://host:8000/v1")
        self.parts, self.api_key, self.timeout_s = parts, api_key, timeout_s
        self.model = model or self._first_model()
        self.connections: dict[object, http.client.HTTPConnection] = {}
        self.cancelled: set = set()
        self.lock = threading.Lock()

    # --- what the worker shows -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model

    def describe(self) -> str:
        return f"{self.model} at {self.parts.scheme}://{self.parts.netloc}{self.parts.path} (external engine)"

    # --- the engine interface --------------------------------------------------------------

    def submit(self, request: EngineRequest) -> None:
        threading.Thread(target=self._reply, args=(request,), name="llm-remote-reply", daemon=True).start()

    def cancel(self, key) -> None:
        with self.lock:
            self.cancelled.add(key)
            connection = self.connections.get(key)
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(2)  # the server sees the client go and stops writing
            except OSError:
                pass

    def call(self, function) -> Future:
        future: Future = Future()
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        for key in list(self.connections):
            self.cancel(key)

    # --- one reply -------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        return kind(self.parts.hostname, self.parts.port, timeout=self.timeout_s)

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _first_model(self) -> str:
        connection = self._connection()
        try:
            connection.request("GET", self.parts.path + "/models", headers=self._headers())
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise ModelLoadError(f"The external engine answered {response.status} on /models: {body[:200]!r}")
            models = json.loads(body).get("data") or []
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"The external engine at {self.parts.geturl()} cannot be reached: {exc}") from exc
        finally:
            connection.close()
        if not models:
            raise ModelLoadError("The external engine lists no models; set LLM_ENGINE_MODEL.")
        return models[0]["id"]

    def _reply(self, request: EngineRequest) -> None:
        settings = request.settings
        body = {
            "model": self.model,
            # With tools, the stored calls and results go as OpenAI's structured messages.
            "messages": structured_messages(request.messages, arguments_as="text")
            if request.tools
            else request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.stop:  # at most 4, OpenAI's limit: the shared rule (replies.MAX_STOP_SEQUENCES) says so
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        if request.continue_final:  # vLLM's names; llama-server continues a final assistant message by itself
            body.update(continue_final_message=True, add_generation_prompt=False)
        if request.output_format:  # vLLM and llama-server enforce these themselves
            try:
                body["response_format"] = response_format_of(request.output_format)
            except ValueError as exc:
                request.on_done(EngineResult("", "error", Usage(), error=str(exc)))
                return
        if request.tools:  # vLLM and llama-server take them (vLLM: --enable-auto-tool-choice)
            body.update(
                tools=openai_tools(request.tools),
                tool_choice=openai_tool_choice(request.tools),
                parallel_tool_calls=request.tools["parallel"],
            )
        started, first_at, last_at = time.perf_counter(), None, None
        text, usage, finish = [], Usage(), "stop"
        calls = _CallsAsText()

        def written(delta: str) -> None:
            nonlocal first_at, last_at
            if delta:
                first_at = first_at or time.perf_counter()
                last_at = time.perf_counter()
                text.append(delta)
                request.on_delta(delta)

        connection = self._connection()
        with self.lock:
            if request.key in self.cancelled:
                self.cancelled.discard(request.key)
                request.on_done(EngineResult("", "cancelled", usage))
                return
            self.connections[request.key] = connection
        try:
            connection.request(
                "POST", self.parts.path + "/chat/completions", body=json.dumps(body), headers=self._headers()
            )
            response = connection.getresponse()
            if response.status != 200:
                detail = response.read()[:500].decode("utf-8", "replace")
                raise RuntimeError(f"The external engine answered {response.status}: {detail}")
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    raise RuntimeError(chunk["error"].get("message") or "The external engine failed.")
                if chunk.get("usage"):
                    usage.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                    usage.completion_tokens = chunk["usage"].get("completion_tokens") or 0
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    written(delta.get("content") or "")
                    for call in delta.get("tool_calls") or []:
                        written(calls.take(call, after_text=bool(text)))
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
            written(calls.close())
        except Exception as exc:
            with self.lock:
                cancelled = request.key in self.cancelled
            if cancelled:
                finish = "cancelled"
            else:
                request.on_done(EngineResult("".join(text), "error", usage, error=str(exc)))
                return
        finally:
            connection.close()
            with self.lock:
                self.connections.pop(request.key, None)
                was_cancelled = request.key in self.cancelled
                self.cancelled.discard(request.key)
        if was_cancelled:
            finish = "cancelled"
        usage = Usage.timed(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            started=started,
            first_at=first_at,
            last_at=last_at,
        )
        request.on_done(EngineResult("".join(text), finish, usage))


class _CallsAsText:
    """An external engine's streamed `tool_calls` as the studio's text form of calls (tools.py), so
    they are stored, streamed and read back like the local engine's: a call's head once its name
    comes, its arguments as they come, its end when the next call starts or the reply ends."""

    def __init__(self):
        self.index: int | None = None  # the call being written
        self.name = ""
        self.arguments = ""  # all of its arguments so far
        self.written = 0  # ...of which this many characters are written (after its head)
        self.opened = False  # its head is written

    def take(self, delta: dict, *, after_text: bool) -> str:
        """The text a `tool_calls` delta adds; `after_text`: the reply has text before it."""
        out = ""
        if delta.get("index", 0) != self.index:
            out += self.close()
            self.index, self.name, self.arguments, self.written, self.opened = delta.get("index", 0), "", "", 0, False
        function = delta.get("function") or {}
        self.name = self.name or function.get("name") or ""
        self.arguments += function.get("arguments") or ""
        if self.name and not self.opened:
            out += ("\n" if after_text or out else "") + f"{CALL_OPEN}\n" + '{"name": ' + json.dumps(self.name)
            out += ', "arguments": '
            self.opened = True
        if self.opened:
            out += self.arguments[self.written :]
            self.written = len(self.arguments)
        return out

    def close(self) -> str:
        """The end of the call being written ("" when none is)."""
        opened, self.index, self.opened = self.opened, None, False
        if not opened:
            return ""
        return ("{}" if not self.arguments.strip() else "") + f"}}\n{CALL_CLOSE}"
