"""A prompt version as chat messages: system, few-shot pairs, then the user turn.

The template is Jinja2, bounded by construction (`studio/template_engine.py`) and rendered in a
separate process under a time limit (`studio/sandbox.py`), so that no template can hold
the web process. Undefined variables are an error rather than a silent blank. The user's
text only ever enters as a variable's value: Jinja2 never parses values, so `{{ secret }}`
typed by a user reaches the model literally.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

from django.conf import settings

from knowledge.retrieval import RetrievalRecord, passages
from studio.llm.constraints import FORMAT_TOO_COMPLEX, FormatError, OutputFormat, clean_format, is_free
from studio.sandbox import SandboxPool, unpack
from studio.template_engine import MissingVariablesError, TemplateError, TemplateLimitError

__all__ = [
    "MissingVariablesError",
    "TemplateError",
    "TemplateLimitError",
    "assembled_messages",
    "inspect_template",
    "render_messages",
    "render_user_turn",
    "render_version_turn",
]

_pool: SandboxPool | None = None
_pool_lock = threading.Lock()
# Who the renders of this request or socket are for (set by studio.middleware and the consumers):
# the pool serves people in turn, one render each at a time. A callable, so that the person is
# only looked up when something is rendered.
render_owner: contextvars.ContextVar[Callable[[], object] | None] = contextvars.ContextVar("render_owner", default=None)


def _ask(request: dict):
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = SandboxPool(settings.TEMPLATE_RENDER_PROCESSES)
    owner = render_owner.get()
    return unpack(_pool.ask(request, settings.TEMPLATE_RENDER_TIMEOUT_SECONDS, owner=owner() if owner else None))


def format_warnings(output_format: OutputFormat) -> list[str]:
    """Check an output format (its shape here, its grammar compiled in a sandbox process, bounded in
    time and memory, as a model worker would compile it): its warnings, or FormatError."""
    output_format = clean_format(output_format)
    if is_free(output_format):
        return []
    try:
        checked = _ask({"op": "format", "format": output_format})
    except TemplateLimitError:
        raise FormatError(
            "the format takes more time or memory to compile than a version may use; simplify it", FORMAT_TOO_COMPLEX
        ) from None
    except TemplateError as exc:
        raise FormatError(str(exc)) from None
    if "refused" in checked:
        raise FormatError(checked["refused"], checked["code"])
    return checked["warnings"]


def pattern_error(pattern: str) -> str | None:
    """Compile a regular expression in a sandbox process (bounded in memory and time, outside this
    process and its shared pattern cache): None when it compiles, else why not."""
    try:
        _ask({"op": "regex", "pattern": pattern})
    except TemplateLimitError:
        return "the pattern needs more memory or time to compile than a scorer may use; simplify its repetitions"
    except TemplateError as exc:
        return str(exc)
    return None


def inspect_template(template: str) -> list[str]:
    """At save time: the template's variables, in order of first use. Raises TemplateError when it
    does not parse, TemplateLimitError when a trial render with sample values hits a limit."""
    inspected = _ask({"op": "inspect", "template": template})
    if inspected["limit"]:
        raise TemplateLimitError(inspected["limit"])
    return inspected["variables"]


def render_user_turn(template: str, variables: dict) -> str:
    return _ask({"op": "render", "template": template, "variables": variables})


# The variable a template lays its version's retrieved passages out with (a list of {"number",
# "text", "document", "page", "heading"}); a version whose template never names it gets the default
# layout: the passages as numbered sources in the system turn.
PASSAGES = "passages"


def render_version_turn(version, variables: dict, retrieval: RetrievalRecord | None = None) -> str:
    """A version's user turn: its template with `variables`, and, for a version whose template lays
    out the passages it retrieved, those of `retrieval` (knowledge.retrieval's record) as `passages`."""
    if (version.retrieval or {}).get("layout") == "template":
        variables = {**variables, PASSAGES: passages(retrieval)}
    return render_user_turn(version.template, variables)


def assembled_messages(*, system: str = "", examples=(), turns=()) -> list[dict]:
    """What a model reads: the system message (when there is one), each few-shot example as a
    user/assistant pair, then the turns. Every place that sends a version to a model builds its
    messages here: chat, the playground, the APIs, evaluations and their judges, exports."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for example in examples:
        messages += [{"role": "user", "content": example["input"]}, {"role": "assistant", "content": example["output"]}]
    return messages + [{"role": turn["role"], "content": turn["content"]} for turn in turns]


def render_messages(*, instructions: str, examples: list[dict], template: str, variables: dict) -> list[dict]:
    return assembled_messages(
        system=instructions,
        examples=examples,
        turns=[{"role": "user", "content": render_user_turn(template, variables)}],
    )
