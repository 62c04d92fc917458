"""The sandbox: what people write that only costs something when it runs (a prompt version's
template, a scorer's regular expression, an output format's grammar) runs in separate
processes, under a wall-clock limit and a memory cap.

Templates render here (`op: render`, `op: inspect`); the regular expressions people give
scorers (`op: regex`) and the output formats of versions and API requests (`op: format`) are
compiled here: what a pattern or a schema costs is only known by compiling it. On the ground
floor because it serves more than prompts: evaluations' scorers and the OpenAI-compatible API
send their patterns and formats to it (`prompts.rendering` holds the one pool and whose turn it is).

`template_engine` bounds what a template computes; this is the guarantee on top of it: a
template that still finds something slow to do holds one sandbox process (never the web
process's interpreter lock), and is killed when its time is up. The web process waits on a
pipe, which releases the lock, so every other page and socket keeps answering.

Protocol: one JSON line per request on the child's stdin (`{"op": "render", "template",
"variables"}`, `{"op": "inspect", "template"}`, `{"op": "regex", "pattern"}`, `{"op": "format",
"format"}`), one JSON line back on its stdout.

Django-free: the child imports only this module, `template_engine`, Jinja2, regex and
`studio.llm.constraints`.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import regex

from studio.llm.constraints import FormatError, ascii_classes, check_format

from . import template_engine
from .template_engine import MissingVariablesError, TemplateError, TemplateLimitError

MEMORY_CAP_BYTES = 1024 * 1024 * 1024  # address space of one sandbox process
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


# --- the child ------------------------------------------------------------------------------


def _answer(request: dict) -> dict:
    try:
        if request.get("op") == "regex":  # a scorer's pattern, compiled where its size cannot hurt
            try:  # as the job worker will compile it (\d and \w ASCII: constraints.ASCII_CLASSES)
                regex.compile(ascii_classes(request["pattern"], nested_classes=False), cache_pattern=False)
            except (regex.error, FormatError) as exc:
                return {"error": str(exc)}
            return {"ok": None}
        if request.get("op") == "format":  # an output format, compiled as a model worker will compile it
            try:
                return {"ok": {"warnings": check_format(request["format"])}}
            except FormatError as exc:  # an answer, not an error: its code goes back with it
                return {"ok": {"refused": str(exc), "code": exc.code}}
        if request.get("op") == "inspect":
            variables = template_engine.template_variables(request["template"])
            return {"ok": {"variables": variables, "limit": template_engine.trial_render(request["template"])}}
        return {"ok": template_engine.render_user_turn(request["template"], request["variables"])}
    except MissingVariablesError as exc:
        return {"missing": exc.missing}
    except TemplateLimitError as exc:
        return {"limit": str(exc)}
    except TemplateError as exc:
        return {"error": str(exc)}


def _serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))
    for line in sys.stdin:
        try:
            answer = _answer(json.loads(line))
        except MemoryError:
            answer = {"limit": "The template needs more memory than a render may use."}
            print(json.dumps(answer), flush=True)
            return  # a process that ran out of memory is replaced, not trusted
        print(json.dumps(answer), flush=True)


# --- the parent -----------------------------------------------------------------------------


class _SandboxProcess:
    def __init__(self):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "studio.sandbox"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.buffer = b""

    def ask(self, request: dict, timeout: float) -> dict:
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError  # it died (out of memory, killed)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class SandboxPool:
    """A few sandbox processes, started on first use and replaced when one is killed, shared
    fairly: one person has at most one request running at a time, and people waiting are served
    in turn (whoever was served longest ago first). So a person whose templates run into the time
    limit holds one process and slows only themselves; everyone else is served by the others."""

    def __init__(self, size: int):
        self.idle: list[_SandboxProcess | None] = [None] * size  # None: a slot whose process starts when needed
        self.condition = threading.Condition()
        self.waiting: list[tuple[object, object]] = []  # (owner, ticket) in arrival order
        self.running: dict[object, int] = {}  # owner → requests running
        self.served_at: dict[object, int] = {}  # owner → turn number when last served
        self.turns = 0

    def ask(self, request: dict, timeout: float, *, owner=None) -> dict:
        """`owner`: who asks (a person, an address); None for the studio itself (never queued per owner)."""
        ticket = object()
        owner = ticket if owner is None else owner
        with self.condition:
            self.waiting.append((owner, ticket))
            while not self._turn_of(ticket):
                self.condition.wait()
            self.waiting.remove((owner, ticket))
            self.running[owner] = self.running.get(owner, 0) + 1
            self.turns += 1
            self.served_at[owner] = self.turns
            slot = self.idle.pop()
        try:
            if slot is None or slot.process.poll() is not None:
                slot = _SandboxProcess()
            try:
                return slot.ask(request, timeout)
            except TimeoutError:
                slot.kill()
                slot = None
                raise TemplateLimitError(
                    f"The template took longer than {timeout:g} s to render and was stopped; simplify its loops."
                ) from None
            except (EOFError, BrokenPipeError, ValueError):
                slot.kill()
                slot = None
                raise TemplateLimitError("The template needs more memory than a render may use.") from None
        finally:
            with self.condition:
                self.idle.append(slot)
                self.running[owner] -= 1
                if not self.running[owner]:
                    del self.running[owner]
                if len(self.served_at) > 10_000:  # forget long-gone owners
                    self.served_at = {o: t for o, t in self.served_at.items() if o in self.running}
                self.condition.notify_all()

    def _turn_of(self, ticket) -> bool:
        if not self.idle:
            return False
        eligible = [
            (self.served_at.get(owner, 0), n, t)
            for n, (owner, t) in enumerate(self.waiting)
            if owner not in self.running
        ]
        return bool(eligible) and min(eligible, key=lambda entry: entry[:2])[2] is ticket


def unpack(answer: dict):
    """The result of an answer, or the engine's exception raised again in this process."""
    if "ok" in answer:
        return answer["ok"]
    if "missing" in answer:
        raise MissingVariablesError(answer["missing"])
    if "limit" in answer:
        raise TemplateLimitError(answer["limit"])
    raise TemplateError(answer.get("error", "The template failed to render."))


if __name__ == "__main__":
    _serve()
