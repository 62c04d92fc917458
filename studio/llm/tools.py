"""Tool calls: the tools a reply may call, how the model is shown them, the grammar that holds a
call to its tool's schema while decoding, and a reply's calls read back, whole or as they stream.

One text form wherever a call is stored or passed between processes, the Hermes format (Qwen and
SmolLM2's larger models write it; NousResearch's Hermes models named it):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

and a tool's result as `<tool_response>\\n...\\n</tool_response>` in a user turn (several results
of one turn one after the other). An API request's history is stored so: an assistant's calls as
its text, the tools' results as a user turn. Where the model's chat template has no tool format of
its own (the bundled SmolLM2-135M's, the tests' tiny model's), the model reads exactly that, with
the tools listed in the system turn inside `<tools></tools>`, one JSON per line. Where the template
reads `tools`, transformers renders them its way: the stored turns are turned back into OpenAI's
structured messages (`tool_calls`, `role: "tool"`) for it. Calls are held to the Hermes tags in
both cases (Qwen's templates write them; a template with another call syntax gets them too).

With `tool_choice` "required" or a named tool, the reply is one call (several where
`parallel_tool_calls` allows) whose "name" is a tool's and whose "arguments" validate against its
`parameters`; with "auto" it is free text until the model writes `<tool_call>`, then held to the
same grammar (an llguidance lazy lexeme); with "none" the tools are shown and nothing is held.

Django-free: the web process checks requests and reads calls; the model worker renders the
prompt and builds the constraint.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Literal, TypedDict

from .constraints import (
    JSON_LAYOUT,
    FormatError,
    OutputFormat,
    ReplyConstraint,
    closed_objects,
    in_written_order,
    is_free,
)

# Bounds checked before the prompt is built (a request of 1,000 tools or 1 MB of them is refused
# naming the bound, never rendered): OpenAI takes at most 128 tools a request.
MAX_TOOLS = 128
MAX_TOOLS_JSON_BYTES = 256 * 1024  # names, descriptions and parameter schemas, written as JSON, together
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for a function's name
TOOL_CHOICES = ("auto", "none", "required")

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
NO_PARAMETERS = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}  # OpenAI: no `parameters`, no arguments
# The system turn's tools section where the template has none (Qwen2.5's wording, the Hermes format).
TOOLS_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
_RESPONSES = re.compile(r"\s*(?:<tool_response>\n.*?\n</tool_response>\s*)+", re.DOTALL)
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
_HEAD_START = '{"name": "'
_HEAD_END = '", "arguments": '
_VALUES_NOT_SCHEMAS = ("enum", "const", "default", "examples")


class ToolFunction(TypedDict, total=False):
    """A function the model may call, as a request declares it (OpenAI's `tools[].function`)."""

    name: str  # TOOL_NAME
    description: str
    parameters: dict  # a JSON Schema of its arguments (an object)
    strict: bool  # OpenAI's strict mode: objects take no key beyond their properties


class ToolUse(TypedDict):
    """The tools of one reply, as every layer stores and passes them (Conversation.parameters["tools"],
    EngineRequest.tools): the functions, which calls are allowed, and how many."""

    tools: list[ToolFunction]
    choice: Literal["auto", "none", "required", "function"]  # "function": the one named in `function`
    function: str  # the tool a "function" choice names, else ""
    parallel: bool  # several calls in one reply


class ToolError(ValueError):
    """A request's tools refused: `param` names OpenAI's field (tools, tool_choice, parallel_tool_calls);
    the message says where and what to change."""

    def __init__(self, message: str, param: str = "tools"):
        super().__init__(message)
        self.param = param


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# --- a request's tools, checked ---------------------------------------------------------------------


def clean_tool_use(tools, tool_choice=None, parallel_tool_calls=None) -> ToolUse | None:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` as a ToolUse (None: no tools), their
    shapes and bounds checked before anything is rendered; raises ToolError naming the field. The
    parameter schemas are checked as output formats are by the caller (constraints.clean_format and
    the sandboxed compile), naming `tools[n].function.parameters`."""
    if tools in (None, []):
        if tool_choice not in (None, "none", "auto"):
            raise ToolError("`tool_choice` asks for a call, but the request declares no `tools`.", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise ToolError('`tools` must be a list of {"type": "function", "function": {"name", "parameters"}}.')
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"`tools` holds {len(tools):,} tools; at most {MAX_TOOLS} a request.")
    size = len(json.dumps(tools, ensure_ascii=False).encode())
    if size > MAX_TOOLS_JSON_BYTES:
        raise ToolError(
            f"`tools` comes to {size // 1024:,} KB of JSON; at most {MAX_TOOLS_JSON_BYTES // 1024} KB "
            "(names, descriptions and parameter schemas together). Send fewer tools or shorter descriptions."
        )
    functions: list[ToolFunction] = []
    for n, tool in enumerate(tools):
        where = f"tools[{n}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise ToolError(f'{where}: must be {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}.')
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ToolError(f"{where}.function.name: 1 to 64 letters, digits, _ or - (got {str(name)[:80]!r}).")
        if any(earlier["name"] == name for earlier in functions):
            raise ToolError(f"{where}.function.name: `{name}` is declared twice.")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolError(f"{where}.function.description: must be text.")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = NO_PARAMETERS
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ToolError(
                f"{where}.function.parameters: a JSON Schema of the arguments, which are an object: "
                f"{json.dumps(NO_PARAMETERS)} or with properties."
            )
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise ToolError(f"{where}.function.strict: must be true or false.")
        cleaned: ToolFunction = {"name": name, "parameters": parameters}
        if description:
            cleaned["description"] = description
        if strict:  # OpenAI's strict mode, as `response_format`'s: no key beyond the properties
            cleaned["strict"], cleaned["parameters"] = True, closed_objects(parameters)
        functions.append(cleaned)
    choice, named = _clean_choice(tool_choice, [function["name"] for function in functions])
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolError("`parallel_tool_calls` must be true or false.", "parallel_tool_calls")
    return {
        "tools": functions,
        "choice": choice,
        "function": named,
        "parallel": parallel_tool_calls is not False,  # OpenAI's default: several calls may come at once
    }


def _clean_choice(tool_choice, names: list[str]) -> tuple[str, str]:
    if tool_choice is None:
        return "auto", ""
    if tool_choice in TOOL_CHOICES:
        return tool_choice, ""
    shape = '`tool_choice` must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.'
    if not isinstance(tool_choice, dict) or tool_choice.get("type") != "function":
        raise ToolError(shape, "tool_choice")
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise ToolError(shape, "tool_choice")
    if name not in names:
        raise ToolError(
            f"`tool_choice` names `{name[:80]}`, which is not one of the tools ({', '.join(names)}).", "tool_choice"
        )
    return "function", name


def openai_tools(tool_use: ToolUse) -> list[dict]:
    """The tools in OpenAI's request shape (what chat templates and external engines take)."""
    shown = []
    for tool in tool_use["tools"]:
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool["parameters"]
        if tool.get("strict"):
            function["strict"] = True
        shown.append({"type": "function", "function": function})
    return shown


def openai_tool_choice(tool_use: ToolUse):
    if tool_use["choice"] == "function":
        return {"type": "function", "function": {"name": tool_use["function"]}}
    return tool_use["choice"]


# --- the text form: calls and results as the model reads and writes them ---------------------------


def call_text(name: str, arguments) -> str:
    """One call as the model writes it; `arguments` an object, or its JSON text as a client sent it."""
    if isinstance(arguments, str):
        written = arguments
    else:
        written = json.dumps(arguments, ensure_ascii=False)
    return f"{CALL_OPEN}\n{_HEAD_START}{name}{_HEAD_END}{written}}}\n{CALL_CLOSE}"


def assistant_text(content: str, calls: list[tuple[str, str]]) -> str:
    """An assistant turn that called tools ((name, arguments JSON) each), as it is stored and read."""
    written = "\n".join(call_text(name, arguments) for name, arguments in calls)
    return f"{content}\n{written}" if content else written


def responses_text(results: list[str]) -> str:
    """The tools' results of one turn, as the user turn that carries them."""
    return "\n".join(f"{RESPONSE_OPEN}\n{result}\n{RESPONSE_CLOSE}" for result in results)


def tool_results_in(text: str) -> list[str] | None:
    """The tools' results a user turn carries (responses_text), or None for a person's message."""
    if not _RESPONSES.fullmatch(text):
        return None
    return _RESPONSE.findall(text)


# --- what the chat template renders -----------------------------------------------------------------


def template_takes_tools(chat_template) -> bool:
    """Whether a chat template shows tools its own way: it reads a `tools` variable."""
    if isinstance(chat_template, dict):  # named templates
        return any(template_takes_tools(text) for text in chat_template.values())
    return isinstance(chat_template, str) and re.search(r"\btools\b", chat_template) is not None


def hermes_messages(messages: list[dict], tool_use: ToolUse) -> list[dict]:
    """The turns with the tools listed in the system turn (after its own text), for a template with
    no tool format: calls and results are in the turns' text already."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in openai_tools(tool_use))
    section = TOOLS_INSTRUCTIONS.format(tools=listed)
    if messages and messages[0]["role"] == "system":
        system = messages[0]["content"]
        return [{"role": "system", "content": f"{system}\n\n{section}" if system else section}, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def structured_messages(messages: list[dict], *, arguments_as: Literal["object", "text"] = "object") -> list[dict]:
    """The stored turns as OpenAI's structured messages: an assistant's calls as `tool_calls` (ids
    `call_1`, `call_2`... in order), a user turn of tool results as `tool` messages answering the
    calls before it in order. `arguments_as`: "object" for chat templates (transformers' convention),
    "text" (a JSON string) for OpenAI-compatible servers."""
    structured, calls_so_far, waiting = [], 0, []
    for message in messages:
        role, text = message["role"], message["content"]
        if role == "assistant" and CALL_OPEN in text:
            content, calls = read_reply(text)
            if calls:
                tool_calls = []
                for call in calls:
                    calls_so_far += 1
                    arguments = call["function"]["arguments"]
                    if arguments_as == "object":
                        try:
                            arguments = json.loads(arguments)
                        except ValueError:
                            pass  # cut short: the template shows the text
                    tool_calls.append(
                        {
                            "id": f"call_{calls_so_far}",
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": arguments},
                        }
                    )
                waiting = [(call["id"], call["function"]["name"]) for call in tool_calls]
                structured.append({"role": "assistant", "content": content or "", "tool_calls": tool_calls})
                continue
        results = tool_results_in(text) if role == "user" else None
        if results is not None:
            for n, result in enumerate(results):
                call_id, name = waiting[n] if n < len(waiting) else (f"call_{calls_so_far}", "")
                structured.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": result})
            waiting = []
            continue
        structured.append({"role": role, "content": text})
    return structured


def prompt_messages(messages: list[dict], tool_use: ToolUse | None, *, native: bool):
    """What the chat template renders for a reply: (messages, `tools` to pass it or None). `native`:
    the template takes tools (template_takes_tools)."""
    if not tool_use:
        return messages, None
    if native:
        return structured_messages(messages), openai_tools(tool_use)
    return hermes_messages(messages, tool_use), None


# --- the grammar a reply is held to -----------------------------------------------------------------


def call_grammar(tool_use: ToolUse, answer_format: OutputFormat | None = None) -> str | None:
    """The llguidance (Lark) grammar of a reply with tools, or None where nothing is held ("none":
    the output format alone applies). "required" or a named tool: calls only; "auto": free text (or
    the output format's JSON) until `<tool_call>`, then the call's grammar. Each tool is one
    alternative, a JSON Schema {"name": {"const": ...}, "arguments": its parameters}, in the same
    JSON layout as output formats."""
    choice = tool_use["choice"]
    if choice == "none":
        return None
    tools = tool_use["tools"]
    if choice == "function":
        tools = [tool for tool in tools if tool["name"] == tool_use["function"]]
    lines = ["%llguidance {}"]
    alternatives = " | ".join(f"tool_{n}" for n in range(len(tools)))
    more = f' ("\\n{CALL_OPEN}" body)*' if tool_use["parallel"] else ""
    if choice in ("required", "function"):
        lines.append(f'start: "{CALL_OPEN}" body{more}')
    elif is_free(answer_format):
        # Free text, until the model writes the trigger: the lazy lexeme ends at its first `<tool_call>`.
        lines += [f"start: TEXT | head body{more}", f'head[lazy]: TEXT "{CALL_OPEN}"', r"TEXT: /(.|\n)*/"]
    elif answer_format["type"] in ("json", "json_schema"):
        schema = {"type": "object"} if answer_format["type"] == "json" else in_written_order(answer_format["schema"])
        lines += [f'start: answer | "{CALL_OPEN}" body{more}', f"answer: %json {_laid_out(schema)}"]
    else:
        raise FormatError(
            f"A reply that may call tools can take a JSON output format, not a {answer_format['type']}; "
            'set `tool_choice` to "none" or change the output format.'
        )
    lines.append(f'body: "\\n" ({alternatives}) "\\n{CALL_CLOSE}"')
    lines += [f"tool_{n}: %json {_laid_out(call_schema(tool))}" for n, tool in enumerate(tools)]
    return "\n".join(lines)


def call_schema(tool: ToolFunction) -> dict:
    """The JSON Schema of one call to `tool`: its name, then arguments valid against its parameters
    (whose local `$ref`s are moved under `arguments`, where the parameters now sit)."""
    parameters = {key: value for key, value in tool["parameters"].items() if key not in ("$schema", "$id")}
    return {
        "type": "object",
        "properties": {"name": {"const": tool["name"]}, "arguments": _rebased(in_written_order(parameters))},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _laid_out(schema: dict) -> str:
    return json.dumps({**schema, "x-guidance": JSON_LAYOUT}, ensure_ascii=False)


def _rebased(node, inside_values: bool = False):
    if isinstance(node, list):
        return [_rebased(item, inside_values) for item in node]
    if not isinstance(node, dict):
        return node
    rebased = {}
    for key, value in node.items():
        if key == "$ref" and not inside_values and isinstance(value, str) and value.startswith("#"):
            rebased[key] = "#/properties/arguments" + value[1:]
        else:
            rebased[key] = _rebased(value, inside_values or key in _VALUES_NOT_SCHEMAS)
    return rebased


def tool_constraint(hf_tokenizer, tool_use: ToolUse, answer_format: OutputFormat | None = None):
    """The reply's matcher under its tools (None where nothing is held). A schema no call can satisfy
    raises FormatError naming its tool (the reply fails; the batch goes on)."""
    grammar = call_grammar(tool_use, answer_format)
    if grammar is None:
        return None
    try:
        constraint = ReplyConstraint(hf_tokenizer, grammar=grammar, subject="The tools' schemas")
        constraint.closes_at_limit = True  # a call cut at the reply's limit is no call: it closes before it
        return constraint
    except FormatError as exc:
        # llguidance loads only where a grammar compiles (the model worker)
        import llguidance  # noqa: PLC0415

        for tool in tool_use["tools"]:
            alone = f'%llguidance {{}}\nstart: "{CALL_OPEN}" tool\ntool: %json {_laid_out(call_schema(tool))}'
            failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(alone)
            if failed:
                reason = next((line for line in "\n".join(messages).splitlines() if "schema" in line.lower()), "")
                reason = re.sub(r"^\s*(error:\s*)?at \d+\(\d+\):\s*", "", reason)  # where in our grammar: noise
                raise FormatError(
                    f"No call to `{tool['name']}` can be written: its parameters cannot be satisfied"
                    f"{f' ({reason.strip()})' if reason else ''}. Change the tool's schema."
                ) from None
        raise exc


# --- a reply's calls read back ----------------------------------------------------------------------


def _head_possible(text: str) -> bool:
    """Whether `text` (after `<tool_call>`, leading whitespace stripped) may still become the head
    `{"name": "<name>", "arguments": ` of a call written in the grammar's layout."""
    if len(text) <= len(_HEAD_START):
        return _HEAD_START.startswith(text)
    if not text.startswith(_HEAD_START):
        return False
    rest = text[len(_HEAD_START) :]
    name = re.match(r"[a-zA-Z0-9_-]*", rest).group(0)
    if len(name) > 64:
        return False
    return _HEAD_END.startswith(rest[len(name) :])


_HEAD = re.compile(r'\s*\{"name": "([a-zA-Z0-9_-]{1,64})", "arguments": ')


class CallReader:
    """A reply's text read into content and tool calls, as it comes (`feed` each piece, then `end`):
    events in the order OpenAI's stream gives them, ("content", text), ("call", index, id, name),
    ("arguments", index, text). A call in the grammar's layout gives its arguments in pieces as they
    are written (its closing `}` and `</tool_call>` held back until it ends); a call in another
    layout (an external engine's, a free reply's) whole once it closes; a `<tool_call>` that is no
    call stays content. The whole reply read at once gives the same events joined (`read_reply`)."""

    def __init__(self):
        self.pending = ""  # text read and not given out yet
        self.state = "text"  # "text", "head" (after <tool_call>), "arguments" (of the last call), "opaque"
        self.calls: list[dict] = []  # {"id", "name", "arguments"} in order
        self.sent = 0  # characters of the current call's arguments given out
        self.gap = ""  # the whitespace before the last `<tool_call>`, held back

    def feed(self, text: str) -> list[tuple]:
        self.pending += text
        return self._advance(final=False)

    def end(self) -> list[tuple]:
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> list[tuple]:
        events = []
        while True:
            step = getattr(self, f"_read_{self.state}")(events, final)
            if not step:
                return events

    def _content(self, events: list, text: str) -> None:
        if text and (text.strip() or not self.calls):  # whitespace between and after calls is layout
            events.append(("content", text))

    def _read_text(self, events: list, final: bool) -> bool:
        at = self.pending.find(CALL_OPEN)
        if at >= 0:
            before = self.pending[:at].rstrip()  # the newline before a call is layout...
            self._content(events, before)
            self.gap = self.pending[len(before) : at]  # ...given back if no call follows
            self.pending, self.state = self.pending[at + len(CALL_OPEN) :], "head"
            return True
        if final:
            self._content(events, self.pending)
            self.pending = ""
            return False
        # Held back: what may begin `<tool_call>`, and whitespace that may turn out to precede one.
        keep = next((n for n in range(len(CALL_OPEN) - 1, 0, -1) if self.pending.endswith(CALL_OPEN[:n])), 0)
        ready = self.pending[: len(self.pending) - keep].rstrip()
        self._content(events, ready)
        self.pending = self.pending[len(ready) :]
        return False

    def _read_head(self, events: list, final: bool) -> bool:
        matched = _HEAD.match(self.pending)
        if matched:
            call = {"id": new_call_id(), "name": matched.group(1), "arguments": ""}
            self.calls.append(call)
            events.append(("call", len(self.calls) - 1, call["id"], call["name"]))
            self.pending, self.state, self.sent = self.pending[matched.end() :], "arguments", 0
            return True
        if not final and _head_possible(self.pending.lstrip()):
            return False
        self.state = "opaque"
        return True

    def _read_arguments(self, events: list, final: bool) -> bool:
        body, index = self.pending, len(self.calls) - 1
        start = 0
        while (at := body.find(CALL_CLOSE, start)) >= 0:
            written = body[:at].rstrip()
            if written.endswith("}") and _is_json(written[:-1]):
                self._arguments(events, index, written[:-1])
                self.pending, self.state = body[at + len(CALL_CLOSE) :], "text"
                return True
            start = at + 1  # inside a string of the arguments
        if final:  # cut short (the reply's length): what was written of the arguments
            self._arguments(events, index, body)
            self.pending = ""
            return False
        last = body.rfind("}")
        ready = last if last >= 0 and CALL_CLOSE.startswith(body[last + 1 :].strip()) else len(body)
        self._arguments(events, index, body[:ready])
        return False

    def _arguments(self, events: list, index: int, written: str) -> None:
        if len(written) > self.sent:
            events.append(("arguments", index, written[self.sent :]))
            self.calls[index]["arguments"] = written
            self.sent = len(written)

    def _read_opaque(self, events: list, final: bool) -> bool:
        start = 0
        while (at := self.pending.find(CALL_CLOSE, start)) >= 0:
            try:
                call = json.loads(self.pending[:at])
            except ValueError:
                start = at + 1
                continue
            if isinstance(call, dict) and isinstance(call.get("name"), str) and "arguments" in call:
                arguments = call["arguments"]
                written = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
                self.calls.append({"id": new_call_id(), "name": call["name"], "arguments": written})
                index = len(self.calls) - 1
                events += [("call", index, self.calls[index]["id"], call["name"]), ("arguments", index, written)]
            else:
                self._content(events, self.gap + CALL_OPEN + self.pending[: at + len(CALL_CLOSE)])
            self.pending, self.state = self.pending[at + len(CALL_CLOSE) :], "text"
            return True
        if final:
            self._content(events, self.gap + CALL_OPEN + self.pending)
            self.pending = ""
        return False


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def read_reply(text: str) -> tuple[str, list[dict]]:
    """A whole reply's (content, calls in OpenAI's shape: {"id", "type", "function": {"name",
    "arguments"}}): what its stream gives, joined."""
    reader = CallReader()
    events = reader.feed(text) + reader.end()
    content = "".join(event[1] for event in events if event[0] == "content")
    calls = [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
        for call in reader.calls
    ]
    return content, calls
