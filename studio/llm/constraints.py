"""Output formats enforced while decoding: a reply that must be JSON, match a JSON Schema or a
regular expression, or be one of a list of choices gets a token mask of its own at every step,
so it cannot answer outside the format, while free replies share the batch unchanged.

llguidance does the grammar work (chosen by measurement: `python -m benchmarks.grammar_choice`).
It compiles lazily (a schema in a few milliseconds, whatever its size against the vocabulary),
computes a mask in ~15 µs a token here (a decode step takes ~35 ms), needs no other package, and
takes JSON Schema, regular expressions and Lark grammars alike.

An output format is a small dict, the one shape every layer stores and passes on:
  {"type": "text"} (free, the default), {"type": "json"} (any JSON object),
  {"type": "json_schema", "schema": {...}}, {"type": "regex", "pattern": "..."},
  {"type": "choice", "choices": ["...", ...]}.

What a format may cost is bounded twice. Before anything compiles it (`clean_format`, in the web
process): its patterns' counted repetitions written out (`pattern_cost`, the rule regex scorers
share) and `$ref` loops no finite answer satisfies. While a reply decodes: llguidance's own limits
(`GRAMMAR_LIMITS`), and a matcher compiled for each reply, so whatever its lexer builds is freed
when the reply ends; a reply whose matcher reaches a limit fails with `FORMAT_FAILED`, never
passes for a whole answer.

Django-free: the model worker builds a constraint per reply in its preparing thread; the sandbox
processes (`studio/sandbox.py`) check formats when a version is saved (`check_format`).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from typing import Literal, TypedDict

import jsonschema
from jsonschema.exceptions import best_match

FORMAT_TYPES = ("text", "json", "json_schema", "regex", "choice")
MAX_SCHEMA_CHARS = 64 * 1024
MAX_ENUM_MEMBERS = 1_000
MAX_SCHEMA_DEPTH = 32
MAX_PATTERN_CHARS = 1_000
MAX_CHOICES = 200
MAX_CHOICE_CHARS = 500
# Whitespace and separators the model writes: one space after ',' and ':', like json.dumps.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# llguidance's limits for every grammar compiled here, the save-time check's included. Measured on
# the hostile formats of issue #25 (`(a{1000}){1000}` in a schema's pattern took 215 MB a reply
# under the defaults): building the lexer's expressions (`initial_lexer_fuel`, default 1,000,000)
# stops at ~15 MB, its states (`max_lexer_states`, default 250,000, ~0.5 KB each) at ~10 MB. Every
# format of the tests and the bench stays far below both.
GRAMMAR_LIMITS = {"initial_lexer_fuel": 100_000, "max_lexer_states": 20_000}

# Error codes (for programs; the message is for people).
FORMAT_INVALID = "invalid_output_format"  # it cannot be enforced as written
FORMAT_TOO_COMPLEX = "output_format_too_complex"  # it would cost more than a worker may spend on it
FORMAT_FAILED = "output_format_failed"  # a reply's matcher could not go on (a limit reached while decoding)
PATTERN_TOO_COMPLEX = "pattern_too_complex"  # a regex scorer's pattern over MAX_PATTERN_COST
NO_TOKEN_ALLOWED = (
    "The output format allows no token at this point (the schema or pattern cannot be satisfied); "
    "change the version's output format."
)


class OutputFormat(TypedDict, total=False):
    """An output format as every layer stores and passes it (PromptVersion.output_format, an API
    request's or an evaluation's `parameters["output_format"]`, EngineRequest.output_format): `type`
    always, and the one field its type reads."""

    type: Literal["text", "json", "json_schema", "regex", "choice"]  # "text" is free; "json" any object
    schema: dict  # json_schema: a JSON Schema (at most MAX_SCHEMA_CHARS written out)
    pattern: str  # regex: what the whole answer must match
    choices: list[str]  # choice: the answer is one of these (at most MAX_ENUM_MEMBERS)


class FormatError(ValueError):
    """An output format that cannot be enforced; the message says what to change, `code` which rule."""

    def __init__(self, message: str, code: str = FORMAT_INVALID):
        super().__init__(message)
        self.code = code


def is_free(output_format: OutputFormat | None) -> bool:
    return not output_format or output_format.get("type", "text") == "text"


def grammar_of(output_format: OutputFormat) -> str:
    """The llguidance grammar of a (checked) output format."""
    # llguidance loads only where a format compiles (sandbox processes, model worker), never in the web process
    import llguidance  # noqa: PLC0415

    kind = output_format["type"]
    if kind == "json":
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps({"type": "object"}), defaults=JSON_LAYOUT)
    if kind == "json_schema":
        schema = in_written_order(output_format["schema"])
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
    if kind == "regex":
        # llguidance reads a schema's `pattern` as JSON Schema says (\d and \w ASCII), a regex as Rust does
        # (Unicode): written ASCII here, a pattern means the same in both places.
        return llguidance.LLMatcher.grammar_from_regex(ascii_classes(output_format["pattern"], nested_classes=True))
    if kind == "choice":
        alternatives = " | ".join(json.dumps(choice) for choice in output_format["choices"])
        return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
    raise FormatError(f"type: choose one of {', '.join(FORMAT_TYPES)}")


def in_written_order(schema):
    """The schema with each object's properties in the order of its `required` list, the rest after.

    The model writes properties in the order `properties` lists them, and PostgreSQL's jsonb
    stores object keys sorted, while lists keep their order: `required` (in field order from
    Pydantic, and as people write it) keeps the answer's order the same in every database.
    """
    if isinstance(schema, list):
        return [in_written_order(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ordered = {key: in_written_order(value) for key, value in schema.items()}
    properties, required = ordered.get("properties"), ordered.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        first = [name for name in dict.fromkeys(required) if isinstance(name, str) and name in properties]
        ordered["properties"] = {name: properties[name] for name in [*first, *properties] if name in properties}
    return ordered


def clean_format(raw) -> OutputFormat:
    """The output format as stored, checked before anything compiles it: its shape and sizes, a
    schema against JSON Schema's meta-schema, what its patterns cost, `$ref` loops with no end;
    raises FormatError. The grammar itself is checked by `check_format` (in a bounded process)."""
    if raw in (None, "", {}):
        return {"type": "text"}
    if not isinstance(raw, dict) or raw.get("type") not in FORMAT_TYPES:
        raise FormatError(f"type: choose one of {', '.join(FORMAT_TYPES)}")
    kind = raw["type"]
    if kind in ("text", "json"):
        return {"type": kind}
    if kind == "json_schema":
        schema = raw.get("schema")
        if isinstance(schema, str):  # as written in a form
            try:
                schema = json.loads(schema)
            except (ValueError, RecursionError) as exc:
                raise FormatError(f"schema: not JSON ({exc})") from None
        if not isinstance(schema, dict):
            raise FormatError('schema: a JSON Schema object, e.g. {"type": "object", "properties": {...}}')
        if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
            raise FormatError(f"schema: at most {MAX_SCHEMA_CHARS // 1024} KB", FORMAT_TOO_COMPLEX)
        _check_schema_size(schema)
        problem = schema_problem(schema)
        if problem:
            raise FormatError(f"schema: {problem}")
        _check_schema_patterns(schema)
        _check_schema_ends(schema)
        return {"type": kind, "schema": schema}
    if kind == "regex":
        pattern = raw.get("pattern")
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise FormatError(f"pattern: a regular expression of 1 to {MAX_PATTERN_CHARS:,} characters")
        problem = pattern_problem(pattern)
        if problem:
            raise FormatError(f"pattern: {problem}", FORMAT_TOO_COMPLEX)
        try:
            ascii_classes(pattern, nested_classes=True)  # refuses \D and \W inside [...]
        except FormatError as exc:
            raise FormatError(f"pattern: {exc}") from None
        return {"type": kind, "pattern": pattern}
    choices = raw.get("choices")
    if (
        not isinstance(choices, list)
        or not 1 <= len(choices) <= MAX_CHOICES
        or not all(isinstance(c, str) and 0 < len(c) <= MAX_CHOICE_CHARS for c in choices)
    ):
        raise FormatError(f"choices: 1 to {MAX_CHOICES} answers of 1 to {MAX_CHOICE_CHARS} characters")
    return {"type": kind, "choices": list(dict.fromkeys(choices))}


def _check_schema_size(schema, depth: int = 0) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise FormatError(f"schema: nested deeper than {MAX_SCHEMA_DEPTH} levels", FORMAT_TOO_COMPLEX)
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list) and len(schema["enum"]) > MAX_ENUM_MEMBERS:
            raise FormatError(
                f"schema: an enum of {len(schema['enum']):,} members; at most {MAX_ENUM_MEMBERS:,}", FORMAT_TOO_COMPLEX
            )
        for value in schema.values():
            _check_schema_size(value, depth + 1)
    elif isinstance(schema, list):
        for value in schema:
            _check_schema_size(value, depth + 1)


# --- a JSON Schema's problems, named where they are ------------------------------------------------

JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
_VALUES_NOT_SCHEMAS = ("enum", "const", "default", "examples")  # JSON values: a "pattern" in them is data


def in_words(path) -> str:
    """A place in a schema as a person reads it: properties → priority → type (items of a list by number)."""
    return " → ".join(f"item {part + 1}" if isinstance(part, int) else str(part) for part in path)


def schema_problem(schema: dict) -> str | None:
    """Why `schema` is not a valid JSON Schema, naming the place in it (None when it is valid)."""
    dialect = jsonschema.validators.validator_for(schema)
    meta = jsonschema.validators.validator_for(dialect.META_SCHEMA, default=dialect)(dialect.META_SCHEMA)
    error = best_match(meta.iter_errors(schema))
    if error is None:
        return None
    path = list(error.absolute_path)
    naming_a_type = path and (path[-1] == "type" or len(path) > 1 and path[-2] == "type" and isinstance(path[-1], int))
    if naming_a_type and isinstance(error.instance, str):
        guess = difflib.get_close_matches(error.instance, JSON_TYPES, n=1)
        what = f"{error.instance[:40]!r} is not one of the JSON Schema types ({', '.join(JSON_TYPES)})" + (
            f"; did you mean {guess[0]!r}?" if guess else ""
        )
    else:
        what = error.message if len(error.message) <= 300 else error.message[:300] + "…"
    return f"not a valid JSON Schema at {in_words(path) or 'its top level'}: {what}"


def _schema_patterns(node, path=()):
    """(place, pattern) for each regular expression in a schema: `pattern`, `patternProperties` keys."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield (*path, "pattern"), node["pattern"]
        if isinstance(node.get("patternProperties"), dict):
            for key in node["patternProperties"]:
                yield (*path, "patternProperties", key), key
        for key, value in node.items():
            if key not in _VALUES_NOT_SCHEMAS:
                yield from _schema_patterns(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_patterns(value, (*path, index))


def _check_schema_patterns(schema: dict) -> None:
    total = 0
    for place, pattern in _schema_patterns(schema):
        problem = pattern_problem(pattern)
        if problem:
            raise FormatError(f"schema: {in_words(place)}: {problem}", FORMAT_TOO_COMPLEX)
        total += pattern_cost(pattern)
        if total > MAX_SCHEMA_PATTERN_COST:
            raise FormatError(
                f"schema: its patterns written out come to more than {MAX_SCHEMA_PATTERN_COST:,} "
                f"characters together (at {in_words(place)}); use fewer or smaller repetitions",
                FORMAT_TOO_COMPLEX,
            )


def _resolve(schema: dict, ref: str):
    """The part of `schema` a local `$ref` ("#", "#/$defs/node") points at, or None."""
    if ref == "#":
        return schema
    if not ref.startswith("#/"):
        return None  # another document, an anchor: llguidance says whether it can follow it
    node = schema
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


_MAX_END_CHECKS = 200_000  # schema parts looked at while finding $ref loops (a 64 KB schema needs far fewer)


def _check_schema_ends(schema: dict) -> None:
    """Refuse a `$ref` whose target no finite answer satisfies: it requires itself again (through
    required properties, non-empty arrays, allOf or every alternative of an anyOf) with no way to stop.
    Its grammar has no end: llguidance's parser piles up items until a limit, then the reply stopped
    at `{"` and passed for a whole answer. Only recursion is judged here; what else cannot be
    satisfied is llguidance's to say."""
    refs = {}
    for node in _schema_nodes(schema):
        if isinstance(node.get("$ref"), str) and node["$ref"] not in refs:
            target = _resolve(schema, node["$ref"])
            if isinstance(target, (dict, bool)):
                refs[node["$ref"]] = target
    if not refs:
        return
    ends = dict.fromkeys(refs, False)  # grows to the least fixed point: True once a finite answer is known
    readers: dict[str, set[str]] = {ref: set() for ref in refs}  # ref → the refs whose targets read it
    checks = [0]

    def finite(node, reading: str) -> bool:
        checks[0] += 1
        if checks[0] > _MAX_END_CHECKS:
            raise FormatError("schema: its $ref links are too many to check; simplify them", FORMAT_TOO_COMPLEX)
        if not isinstance(node, dict):
            return True
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in ends:
            readers[ref].add(reading)
            if not ends[ref]:
                return False
        if isinstance(node.get("allOf"), list) and not all(finite(part, reading) for part in node["allOf"]):
            return False
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key] and not any(finite(part, reading) for part in node[key]):
                return False
        kinds = node.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
        if kinds is None or any(kind not in ("object", "array") for kind in kinds):
            return True  # a string, a number, null... ends at once
        return any(finite_object(node, reading) if kind == "object" else finite_array(node, reading) for kind in kinds)

    def finite_object(node, reading: str) -> bool:
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = node.get("required") if isinstance(node.get("required"), list) else []
        return all(
            finite(properties[name], reading) for name in required if isinstance(name, str) and name in properties
        )

    def finite_array(node, reading: str) -> bool:
        least = node.get("minItems", 0)
        if not isinstance(least, int) or isinstance(least, bool) or least <= 0:
            return True
        first = (
            node.get("prefixItems")
            if isinstance(node.get("prefixItems"), list)
            else (node["items"] if isinstance(node.get("items"), list) else [])
        )
        rest = node.get("items") if isinstance(node.get("items"), (dict, bool)) else node.get("additionalItems")
        return all(finite(item, reading) for item in first[:least]) and (least <= len(first) or finite(rest, reading))

    waiting = list(refs)
    while waiting:
        ref = waiting.pop()
        if not ends[ref] and finite(refs[ref], ref):
            ends[ref] = True
            waiting.extend(reader for reader in readers[ref] if not ends[reader])
    endless = [ref for ref, finite_answer in ends.items() if not finite_answer]
    if endless:
        place = (
            "the schema itself"
            if endless[0] == "#"
            else in_words(part.replace("~1", "/").replace("~0", "~") for part in endless[0][2:].split("/"))
        )
        raise FormatError(
            f"schema: {place} ($ref {endless[0]}) has no finite answer: it requires itself again with "
            "no way to stop; make the property that leads back optional (leave it out of required), "
            "or let the array be empty (minItems 0)"
        )


def _schema_nodes(node):
    """Every object in a schema (its subschemas and definitions), values of enum/const left out."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(value for key, value in node.items() if key not in _VALUES_NOT_SCHEMAS)
        elif isinstance(node, list):
            stack.extend(node)


def check_format(output_format: OutputFormat) -> list[str]:
    """Compile the (cleaned) format's grammar as the worker will, under the same limits: its
    warnings, or FormatError with llguidance's reason."""
    # llguidance loads only where a format compiles (sandbox processes, model worker), never in the web process
    import llguidance  # noqa: PLC0415

    if is_free(output_format):
        return []
    try:
        grammar = grammar_of(output_format)
    except (ValueError, TypeError) as exc:
        raise FormatError(str(exc)) from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, limits=llguidance.LLParserLimits(**GRAMMAR_LIMITS)
    )
    if failed:
        reason = "; ".join(messages) or "the format does not compile"
        if output_format["type"] == "regex":
            # llguidance's parser echoes the grammar around the error; the person needs the error.
            errors = [line.removeprefix("error:").strip() for line in reason.splitlines() if line.startswith("error:")]
            raise FormatError(f"pattern: not a valid regular expression: {errors[0] if errors else reason}")
        raise FormatError(reason)
    return list(messages)


def sample_of(schema, depth: int = 0):
    """An instance of a JSON Schema to show beside it (the first choice of everything)."""
    if depth > 8 or not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combinator), list) and schema[combinator]:
            return sample_of(schema[combinator][0], depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {name: sample_of(properties.get(name, {}), depth + 1) for name in required}
    if kind == "array":
        return [sample_of(schema.get("items") or {}, depth + 1)]
    return {
        "string": "text",
        "integer": schema.get("minimum", 0),
        "number": schema.get("minimum", 0.5),
        "boolean": True,
        "null": None,
    }.get(kind, "text")


# --- patterns: what a regular expression costs, and what \d and \w mean ---------------------------
# One rule for every pattern people give: output formats (a regex, a JSON Schema's `pattern` and
# `patternProperties`) and regex scorers (evals/scorers.py) alike.

# A counted repetition is written out when a pattern is compiled (the `regex` module's program, the
# lexer's states of llguidance): `(a{1000}){1000}` is a million characters, and took 124-215 MB of
# a worker's memory for good. A pattern may come to this many characters with every counted
# repetition written out (repetitions inside repetitions multiply); + and * cost nothing extra.
MAX_PATTERN_COST = 10_000
# ...and the patterns of one JSON Schema together.
MAX_SCHEMA_PATTERN_COST = 5 * MAX_PATTERN_COST
_COST_CAP = 10**15  # costs saturate here (a{99999999999999999999} is refused all the same)
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:(,)\s*(\d*)\s*)?\}")
_VERBOSE_FLAG = re.compile(r"\(\?[a-zA-Z-]*x")
# What may follow "(" before a group's pattern: (?:, (?P<name>, (?<=, (?i: ...; (?i) and (?#...) are whole.
_GROUP_PREFIX = re.compile(
    r"\?(?:(?P<comment>#[^)]*\)?)|(?P<backreference>P=\w+\))|(?P<flags>[a-zA-Z-]*\))"
    r"|P?<(?![=!])\w*>|'\w*'|<[=!]|[=!:>|]|[a-zA-Z-]*:)"
)
# \d and \w mean ASCII, as in JSON Schema and JavaScript (llguidance reads a schema's patterns so):
# a person who writes \d means 0-9, not 🯸 or ٣. \s stays Unicode (as in JSON Schema); \p{N} and
# \p{L} say "any digit" and "any letter".
ASCII_CLASSES = {"d": "0-9", "w": "0-9A-Za-z_"}


def _escape_end(pattern: str, i: int) -> int:
    """The end of the escape at `pattern[i]` (a backslash): \\x41, \\x{1F600}, \\p{Greek}, \\pL, \\n..."""
    if i + 1 >= len(pattern):
        return i + 1
    letter = pattern[i + 1]
    if letter in "pPxuUN" and i + 2 < len(pattern) and pattern[i + 2] == "{":
        close = pattern.find("}", i + 3)
        return len(pattern) if close < 0 else close + 1
    if letter in "pP":
        return min(i + 3, len(pattern))
    return i + 2


def _scan(pattern: str, *, nested_classes: bool, verbose: bool):
    """The pattern's pieces in order: ("atom", text, in_class), ("class", text) for a whole character
    class, ("open", text), ("close", ")"), ("alt", "|"), ("repeat", times), ("skip", text).
    `nested_classes`: a [ inside a class opens another (Rust's regex, llguidance) or is a
    character (Python's). `verbose`: whitespace and # comments outside classes are ignored."""
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            end = _escape_end(pattern, i)
            yield "atom", pattern[i:end], False
            i = end
        elif char == "[":
            start, i, depth = i, i + 1, 1
            pieces = []
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":  # a ] first in a class is a character
                i += 1
            while i < n and depth:
                if pattern[i] == "\\":
                    end = _escape_end(pattern, i)
                    pieces.append((i, end))
                    i = end
                elif pattern.startswith("[:", i) and pattern.find(":]", i + 2) > 0:
                    i = pattern.find(":]", i + 2) + 2
                elif pattern[i] == "[" and nested_classes:
                    depth, i = depth + 1, i + 1
                    if i < n and pattern[i] == "^":
                        i += 1
                elif pattern[i] == "]":
                    depth, i = depth - 1, i + 1
                else:
                    i += 1
            yield "class", pattern[start:i], pieces, start
        elif char == "(":
            prefix = _GROUP_PREFIX.match(pattern, i + 1)
            end = prefix.end() if prefix else i + 1
            if prefix and (prefix.group("comment") is not None or prefix.group("flags") is not None):
                yield "skip", pattern[i:end]  # (?# a comment), (?i): nothing to match
            elif prefix and prefix.group("backreference") is not None:
                yield "atom", pattern[i:end], False
            else:
                yield "open", pattern[i:end]
            i = end
        elif char == ")":
            yield "close", ")"
            i += 1
        elif char == "|":
            yield "alt", "|"
            i += 1
        elif char == "{" and (match := _QUANTIFIER.match(pattern, i)) and (match.group(1) or match.group(3)):
            low, high = int(match.group(1) or 0), int(match.group(3) or 0)
            yield "repeat", max(low, high if match.group(2) else low, 1), match.group(0)
            i = match.end()
        elif verbose and char == "#":
            close = pattern.find("\n", i)
            end = n if close < 0 else close + 1
            yield "skip", pattern[i:end]
            i = end
        elif verbose and char.isspace():
            yield "skip", char
            i += 1
        else:
            yield "atom", char, False
            i += 1


def _cost_of(pieces) -> int:
    """Characters once counted repetitions are written out (alternatives add up; a group's
    repetition multiplies everything in it)."""
    frames = [[0, 0, 0]]  # per open group: [alternatives so far, this alternative, its last piece]
    for piece in pieces:
        kind, frame = piece[0], frames[-1]
        if kind in ("atom", "class"):
            frame[1], frame[2] = min(frame[1] + 1, _COST_CAP), 1
        elif kind == "open":
            frames.append([0, 0, 0])
        elif kind == "close" and len(frames) > 1:
            done = frames.pop()
            group = min(done[0] + done[1], _COST_CAP)
            frames[-1][1], frames[-1][2] = min(frames[-1][1] + group, _COST_CAP), group
        elif kind == "close":  # unbalanced: a character to us, an error to the engine
            frame[1], frame[2] = min(frame[1] + 1, _COST_CAP), 1
        elif kind == "alt":
            frame[0], frame[1], frame[2] = min(frame[0] + frame[1], _COST_CAP), 0, 0
        elif kind == "repeat":
            times = piece[1]
            frame[1] = min(frame[1] + frame[2] * (times - 1), _COST_CAP)
            frame[2] = min(frame[2] * times, _COST_CAP)
    while len(frames) > 1:  # unclosed groups
        done = frames.pop()
        frames[-1][1] = min(frames[-1][1] + done[0] + done[1], _COST_CAP)
    return min(frames[0][0] + frames[0][1], _COST_CAP)


def pattern_cost(pattern: str) -> int:
    """The characters `pattern` comes to with every counted repetition written out: `x{3}` 3,
    `(ab){2}` 4, `(a{1000}){1000}` 1,000,000. Read the way each engine might read it (a [ inside a
    class, verbose mode), the largest: no spelling makes a pattern look cheaper than it is."""
    return max(
        _cost_of(_scan(pattern, nested_classes=nested, verbose=verbose))
        for nested in (False, True)
        for verbose in (False, True)
    )


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is refused before anything compiles it (its cost, above), or None."""
    cost = pattern_cost(pattern)
    if cost > MAX_PATTERN_COST:
        return (
            f"its repetitions written out come to {_count(cost)} characters, more than {MAX_PATTERN_COST:,} "
            f"(repetitions inside repetitions multiply); use + or * for any number, or smaller counts"
        )
    return None


def _count(cost: int) -> str:
    return f"{cost:,}" if cost < _COST_CAP else "more than 10¹⁵"


def ascii_classes(pattern: str, *, nested_classes: bool) -> str:
    """`pattern` with \\d and \\w (and \\D, \\W) as ASCII classes ([0-9], [0-9A-Za-z_]), for an engine
    that reads them as Unicode (llguidance's regular expressions, the `regex` module). Raises
    FormatError for \\D or \\W inside a class, which no ASCII range can say there."""
    verbose = bool(_VERBOSE_FLAG.search(pattern))
    out = []
    for piece in _scan(pattern, nested_classes=nested_classes, verbose=verbose):
        kind, text = piece[0], piece[1]
        if kind == "atom" and len(text) == 2 and text[0] == "\\" and text[1].lower() in ASCII_CLASSES:
            members = ASCII_CLASSES[text[1].lower()]
            out.append(f"[{members}]" if text[1].islower() else f"[^{members}]")
        elif kind == "class":
            text, escapes, start = piece[1], piece[2], piece[3]
            written, at = [], start
            for begin, end in escapes:
                escape = pattern[begin:end]
                written.append(pattern[at:begin])
                if len(escape) == 2 and escape[1].lower() in ASCII_CLASSES:
                    if escape[1].isupper():
                        raise FormatError(
                            f"inside [...], {escape} cannot be made ASCII: write the characters "
                            f"it should allow instead (e.g. [^0-9] for \\D, [A-Za-z0-9] for [^\\W_])"
                        )
                    escape = ASCII_CLASSES[escape[1]]
                written.append(escape)
                at = end
            written.append(pattern[at : start + len(text)])
            out.append("".join(written))
        elif kind == "repeat":
            out.append(piece[2])
        else:
            out.append(text)
    return "".join(out)


# --- while decoding (the model worker) ------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _tokenizer(hf_tokenizer):
    # llguidance loads only where a format compiles (sandbox processes, model worker), never in the web process
    import llguidance.hf  # noqa: PLC0415

    return llguidance.hf.from_tokenizer(hf_tokenizer)


def compile_format(hf_tokenizer, output_format: OutputFormat):
    """A matcher of its own for one reply, under GRAMMAR_LIMITS (a few ms, in the preparing thread).

    Not cached: copies of one matcher share its lexer, and what a reply makes it build stayed for
    as long as the cached matcher (215 MB a reply for a hostile pattern, 256 formats kept). Compiled
    for each reply, whatever its lexer builds is freed with the reply."""
    return compile_grammar(hf_tokenizer, grammar_of(output_format))


def compile_grammar(hf_tokenizer, grammar: str, subject: str = "The output format"):
    """A matcher of its own for one reply's llguidance grammar (an output format's, or the calls of
    its tools: studio/llm/tools.py), under GRAMMAR_LIMITS; FormatError says why `subject` cannot be
    enforced."""
    # llguidance loads only where a format compiles (sandbox processes, model worker), never in the web process
    import llguidance  # noqa: PLC0415

    matcher = llguidance.LLMatcher(
        _tokenizer(hf_tokenizer), grammar, log_level=0, limits=llguidance.LLParserLimits(**GRAMMAR_LIMITS)
    )
    if matcher.is_error():
        raise FormatError(f"{subject} cannot be enforced: {_first_line(matcher.get_error())}")
    return matcher


def _first_line(error: str) -> str:
    return error.strip().splitlines()[0] if error.strip() else "the matcher failed"


class ReplyConstraint:
    """One reply's matcher: the mask of the tokens its format allows next, and its progress. Built
    from an output format, or from a grammar of its own (`grammar`, what `subject` names in errors:
    a reply's tool calls)."""

    def __init__(
        self,
        hf_tokenizer,
        output_format: OutputFormat | None = None,
        *,
        grammar: str | None = None,
        subject: str = "The output format",
    ):
        # llguidance loads only where a format compiles (sandbox processes, model worker), never in the web process
        import llguidance.torch as llt  # noqa: PLC0415

        self.llt = llt
        self.hf_tokenizer = hf_tokenizer
        self.tokenizer = _tokenizer(hf_tokenizer)
        if grammar is not None:
            self.matcher = compile_grammar(hf_tokenizer, grammar, subject)
        else:
            self.matcher = compile_format(hf_tokenizer, output_format)
        self.subject = subject
        self.bitmask = llt.allocate_token_bitmask(1, self.tokenizer.vocab_size)
        self.broken = ""  # why the format cannot go on, once it cannot (the reply then fails with FORMAT_FAILED)
        # Near its token limit, a reply that closes before it (tool calls: a cut call is no call) prefers
        # the allowed tokens that close what is open (closing_window; the engine asks with `closing`).
        self.closes_at_limit = False

    def restrict(self, logits, *, closing: bool = False) -> bool:
        """Forbid (in place, -inf) the tokens the format does not allow next; False when it allows none
        or its matcher failed (`broken` says why). `closing`: of the allowed tokens, only those that
        close a string, an object, an array or the answer (where any is allowed), so that a reply near
        its limit ends whole instead of being cut (a 135M model at temperature 1 may write a string
        for 500 tokens)."""
        self.llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        if self.matcher.is_error():  # a limit reached: its mask allows only the end, which is no answer
            self.broken = self._failure()
            return False
        if not self.bitmask.any():
            self.broken = (
                NO_TOKEN_ALLOWED
                if self.subject == "The output format"
                else f"{self.subject} allow no token at this point (no call can satisfy them); change them."
            )
            return False
        vocabulary = self.tokenizer.vocab_size
        view = logits[:vocabulary].unsqueeze(0)
        self.llt.apply_token_bitmask_inplace(view, self.bitmask.to(logits.device))
        if logits.shape[0] > vocabulary:  # the model's padded rows of the vocabulary
            logits[vocabulary:] = -float("inf")
        if closing:
            allowed = logits[:vocabulary].isfinite()
            # The first kind of closer allowed here: the end; a quote (closes a string, or opens an
            # empty one where a value must come); a bracket; the newline and tag that end a call.
            for closers in _closing_tokens(self.hf_tokenizer, vocabulary):
                closers = closers.to(logits.device)
                if (allowed & closers).any():
                    import torch  # noqa: PLC0415  (loaded already: the logits are its tensor)

                    with torch.inference_mode():  # the logits are an inference tensor of the forward pass
                        logits[:vocabulary].masked_fill_(~closers, -float("inf"))
                    break
        return True

    def advance(self, token: int) -> bool:
        """The format takes `token`; False when its matcher failed on it (`broken` says why)."""
        if self.matcher.consume_token(token) and not self.matcher.is_error():
            return True
        self.broken = self._failure()
        return False

    def advance_through(self, text: str) -> None:
        """Start past `text`, the beginning of an answer already written in this format (a reply cut
        at its maximum tokens and continued). The grammar reads bytes, so the text's own tokens
        serve, whichever tokens first wrote it. FormatError when the format does not allow it."""
        tokens = self.hf_tokenizer.encode(text, add_special_tokens=False)
        if self.matcher.try_consume_tokens(tokens) < len(tokens) or self.matcher.is_error():
            raise FormatError(
                "The reply's text so far does not follow its output format, so it cannot be "
                "continued in that format. Regenerate it instead."
            )

    def _failure(self) -> str:
        return (
            f"{self.subject} could not be followed to its end: {_first_line(self.matcher.get_error())}. "
            "Simplify its patterns or its recursion."
        )

    @property
    def complete(self) -> bool:
        """The format is matched and allows nothing more: the reply ends here (never when it failed:
        a failed matcher says it is stopped too)."""
        return self.matcher.is_stopped() and not self.matcher.is_error()


def closed_objects(schema, depth: int = 0):
    """`schema` with `additionalProperties: false` on every object that does not set it (OpenAI's
    strict mode: `response_format`'s and a tool's)."""
    if depth > 40:
        return schema
    if isinstance(schema, list):
        return [closed_objects(item, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: closed_objects(value, depth + 1) for key, value in schema.items()}
    if (schema.get("type") == "object" or "properties" in schema) and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


# Tokens that close, in the order preferred (see ReplyConstraint.restrict): (what it begins with,
# whether it holds nothing else but closing characters). `", "` closes a string but opens another.
CLOSERS = (('"', True), ("}]", True), ("\n<", False))
CLOSING_CHARACTERS = frozenset('"}] \n')


def closing_window(max_new_tokens: int) -> int:
    """The last tokens of a reply's budget in which a reply that closes at its limit prefers closing
    tokens: a quarter of the budget, 8 to 32 tokens (enough to close a few nested objects)."""
    return max(8, min(32, max_new_tokens // 4))


_closing_masks: dict[tuple[int, int], object] = {}


def _closing_tokens(hf_tokenizer, vocabulary: int) -> list:
    """Bool tensors over the vocabulary, most preferred first: the ends of text, then the tokens
    whose text begins with each kind of CLOSERS."""
    key = (id(hf_tokenizer), vocabulary)
    if key not in _closing_masks:
        import torch  # noqa: PLC0415

        masks = [torch.zeros(vocabulary, dtype=torch.bool) for _ in range(len(CLOSERS) + 1)]
        for token in (hf_tokenizer.eos_token_id, *(getattr(hf_tokenizer, "all_special_ids", None) or ())):
            if token is not None and token < vocabulary:
                masks[0][token] = True
        for token in range(min(vocabulary, len(hf_tokenizer))):
            text = hf_tokenizer.decode([token])
            for kind, (starts, only_closing) in enumerate(CLOSERS, start=1):
                if text[:1] and text[0] in starts and (not only_closing or set(text) <= CLOSING_CHARACTERS):
                    masks[kind][token] = True
                    break
        _closing_masks[key] = masks
    return _closing_masks[key]
