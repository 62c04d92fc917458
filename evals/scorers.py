"""Scorers: how well an output matches the expected answer, as a number; a case passes a scorer
when its score reaches the scorer's threshold, and passes the evaluation when it passes every
scorer. Django-free: the evaluation runner gives them the embedder and the judge they need.

| type | score | default threshold |
| --- | --- | --- |
| exact_match | 1 when equal after trimming whitespace (`ignore_case` optional), else 0 | 1 |
| json_equal | 1 when both parse as JSON and are equal (whitespace, key order ignored) | 1 |
| contains | 1 when the output contains `text` (default: the expected answer) | 1 |
| regex | 1 when `pattern` matches somewhere in the output (`\\d`, `\\w` ASCII as in output formats) | 1 |
| valid_json | 1 when the output parses as JSON | 1 |
| json_schema | 1 when the output is JSON valid under `schema` (default: the evaluated version's) | 1 |
| semantic_similarity | cosine similarity of all-MiniLM-L6-v2 embeddings, -1 to 1 | 0.8 |
| llm_judge | the judging prompt's verdict: a number 0-1 in its reply, or pass/fail, yes/no | 0.5 |
| tool_call | 1 when the reply calls the expected tools, same names in the same order, with equal arguments (as JSON; `fields`: only those, dotted paths for nested ones), else 0 | 1 |

`tool_call` says why a reply scored 0 (`tool_call_score`: "called get_time, expected get_weather",
"arguments.city: got "Paris", expected "Lyon"", "expected a call to get_weather, the reply is text").
A case whose expected answer is text and whose reply is text is not its business: the scorer does
not apply there (NotApplicable: left out of that case's scores and verdict; a case no scorer applies
to is an error, not a pass). A reply that calls a tool where text was expected scores 0.

`json_equal` and `valid_json` take `"extract": true` to read the first JSON object or array
in the output (inside ``` fences or prose); by default the whole output must be JSON.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

import jsonschema
import regex  # the `regex` package: its matching takes a timeout, so no pattern can hang a worker

from studio.llm import constraints

from .tool_answers import answer_calls

REGEX_TIMEOUT_S = 1.0
MAX_PATTERN_CHARS = 500
DEFAULT_THRESHOLDS = {
    "exact_match": 1.0,
    "json_equal": 1.0,
    "contains": 1.0,
    "regex": 1.0,
    "valid_json": 1.0,
    "json_schema": 1.0,
    "semantic_similarity": 0.8,
    "llm_judge": 0.5,
    "tool_call": 1.0,
}
SCORER_TYPES = tuple(DEFAULT_THRESHOLDS)
LABELS = {
    "exact_match": ("Exact match", "the same text, whitespace at the ends ignored"),
    "json_equal": ("JSON equal", "the same JSON, any spacing or key order"),
    "contains": ("Contains", "the output contains a text"),
    "regex": ("Regular expression", "a pattern matches the output"),
    "valid_json": ("Valid JSON", "the output parses as JSON"),
    "json_schema": ("JSON Schema", "the output is JSON valid under a schema (the version's, by default)"),
    "semantic_similarity": ("Semantic similarity", "meaning, by all-MiniLM-L6-v2 embeddings, -1 to 1"),
    "llm_judge": ("LLM judge", "a prompt of yours judges the answer"),
    "tool_call": ("Tool call", "the reply calls the expected tools with the expected arguments (or `fields` of them)"),
}
MAX_TOOL_CALL_FIELDS = 50


class ScorerError(ValueError):
    """A scorer's settings are wrong; the message says which and how to fix it, `code` which rule."""

    def __init__(self, message: str, code: str = "invalid_scorer"):
        super().__init__(message)
        self.code = code


class NotApplicable(Exception):
    """A scorer that has nothing to judge in this case (tool_call where text was expected and given):
    the message says why; the case is judged by its other scorers."""


class ScoringFailed(Exception):
    """A scorer could not score this output (a pattern that ran out of time on it): a scorer
    error shown on the result, never a silent 0."""


def pattern_problem(pattern: str) -> tuple[str, str] | None:
    """Why `pattern` cannot be a regex scorer's and the error code, judged from its text alone
    (nothing is compiled): output formats' rule of what a pattern may cost (studio.llm.constraints:
    its counted repetitions written out; compiled, `(a{1000}){1000}` kept 124-139 MB of a job
    worker in the pattern cache), and \\d and \\w as ASCII."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
        return f"a regular expression of 1 to {MAX_PATTERN_CHARS} characters", "invalid_scorer"
    problem = constraints.pattern_problem(pattern)
    if problem:
        return problem, constraints.PATTERN_TOO_COMPLEX
    try:
        constraints.ascii_classes(pattern, nested_classes=False)
    except constraints.FormatError as exc:
        return str(exc), "invalid_scorer"
    return None


def clean_scorers(raw, *, check_pattern: Callable[[str], str | None] | None = None) -> list[dict]:
    """Checked scorer settings: [{"type", "threshold", ...params}]. `check_pattern` compiles a regex
    scorer's pattern where it cannot hurt (a bounded child process) and says what is wrong with it."""
    if not isinstance(raw, list) or not raw:
        raise ScorerError('scorers: give at least one, e.g. [{"type": "exact_match"}]')
    if len(raw) > 10:
        raise ScorerError("scorers: at most 10")
    cleaned = []
    for n, spec in enumerate(raw):
        where = f"scorers[{n}]"
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict) or spec.get("type") not in SCORER_TYPES:
            raise ScorerError(f"{where}.type: choose one of {', '.join(SCORER_TYPES)}")
        kind = spec["type"]
        threshold = spec.get("threshold", DEFAULT_THRESHOLDS[kind])
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
            raise ScorerError(f"{where}.threshold: a number from -1 to 1")
        clean = {"type": kind, "threshold": float(threshold)}
        if kind == "regex":
            pattern = spec.get("pattern")
            found = pattern_problem(pattern)
            if found is None and check_pattern is not None and (compile_error := check_pattern(pattern)):
                found = compile_error, "invalid_scorer"
            if found:
                raise ScorerError(f"{where}.pattern: {found[0]}", found[1])
            clean["pattern"] = pattern
        if kind == "contains" and spec.get("text") is not None:
            if not isinstance(spec["text"], str) or not spec["text"]:
                raise ScorerError(f"{where}.text: non-empty text (or leave it out to look for the expected answer)")
            clean["text"] = spec["text"]
        if kind in ("exact_match", "contains"):
            clean["ignore_case"] = bool(spec.get("ignore_case", False))
        if kind in ("json_equal", "valid_json", "json_schema"):
            clean["extract"] = bool(spec.get("extract", False))
        if kind == "json_schema" and spec.get("schema") is not None:
            clean["schema"] = _checked_schema(spec["schema"], f"{where}.schema")
        if kind == "tool_call" and spec.get("fields") is not None:
            fields = spec["fields"]
            if (
                not isinstance(fields, list)
                or not fields
                or len(fields) > MAX_TOOL_CALL_FIELDS
                or not all(isinstance(field, str) and field.strip() and len(field) <= 200 for field in fields)
            ):
                raise ScorerError(
                    f"{where}.fields: a list of 1 to {MAX_TOOL_CALL_FIELDS} argument names (dotted for nested "
                    'ones: "address.city"), or leave it out to compare all the arguments'
                )
            clean["fields"] = [field.strip() for field in fields]
        if kind == "llm_judge":
            prompt, version = spec.get("prompt"), spec.get("version")
            if not isinstance(prompt, str) or not prompt:
                raise ScorerError(f"{where}.prompt: the slug of the judging prompt in the library")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                raise ScorerError(f"{where}.version: a version number (or leave it out for the latest)")
            clean.update(prompt=prompt, version=version)
        cleaned.append(clean)
    return cleaned


def _checked_schema(schema, where: str) -> dict:
    if not isinstance(schema, dict) or len(json.dumps(schema)) > constraints.MAX_SCHEMA_CHARS:
        raise ScorerError(f"{where}: a JSON Schema object of at most {constraints.MAX_SCHEMA_CHARS // 1024} KB")
    problem = constraints.schema_problem(schema)
    if problem:
        raise ScorerError(f"{where}: {problem}")
    return schema


def _norm(text: str, ignore_case: bool) -> str:
    text = text.strip()
    return text.casefold() if ignore_case else text


_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


def parse_json(text: str, *, extract: bool = False):
    """The JSON value of `text`; with `extract`, of the first fenced block or {...}/[...] in it.
    Raises ValueError when there is none."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        if not extract:
            raise ValueError("not JSON") from None
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + _bracketed(text):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise ValueError("no JSON found")


def _bracketed(text: str) -> list[str]:
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return []
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return [text[start : end + 1]] if end > start else []


def score(
    spec: dict,
    output: str,
    expected: str,
    *,
    similarity: Callable[[str, str], float] | None = None,
    judge_score: float | None = None,
) -> float:
    """The score of `output` against `expected` under one scorer (see the table above)."""
    kind = spec["type"]
    if kind == "exact_match":
        return float(_norm(output, spec.get("ignore_case")) == _norm(expected, spec.get("ignore_case")))
    if kind == "json_equal":
        try:
            return float(parse_json(output, extract=spec.get("extract")) == parse_json(expected, extract=True))
        except ValueError:
            return 0.0
    if kind == "valid_json":
        try:
            parse_json(output, extract=spec.get("extract"))
            return 1.0
        except ValueError:
            return 0.0
    if kind == "json_schema":
        if not spec.get("schema"):
            raise ScoringFailed("json_schema: no schema (give one, or evaluate a version whose output format has one)")
        try:
            jsonschema.validate(parse_json(output, extract=spec.get("extract")), spec["schema"])
        except (ValueError, jsonschema.ValidationError):
            return 0.0
        return 1.0
    if kind == "contains":
        needle = spec.get("text") or expected
        return float(_norm(needle, spec.get("ignore_case")) in _norm(output, spec.get("ignore_case")))
    if kind == "regex":
        try:
            return float(compiled_pattern(spec["pattern"]).search(output, timeout=REGEX_TIMEOUT_S) is not None)
        except TimeoutError:
            raise ScoringFailed(
                f"regex: the pattern took longer than {REGEX_TIMEOUT_S:g} s on this output and was "
                "stopped (nested repetitions such as (a+)+ can take exponential time)"
            ) from None
    if kind == "semantic_similarity":
        if similarity is None:
            raise ScorerError("semantic_similarity needs the embedding model")
        return round(similarity(output, expected), 4)
    if kind == "llm_judge":
        return 0.0 if judge_score is None else judge_score
    if kind == "tool_call":
        return tool_call_score(spec, output, expected)[0]
    raise ScorerError(f"unknown scorer {kind!r}")


def tool_call_score(spec: dict, output: str, expected: str) -> tuple[float, str]:
    """(1.0 or 0.0, why: "" when it matches) of a reply's calls against the expected calls: the same
    names in the same order, the arguments equal as JSON (only `fields`, when given). Raises
    NotApplicable where both are text, ScoringFailed where the expected call's arguments are no JSON."""
    _, wanted = answer_calls(expected)
    _, made = answer_calls(output)
    if not wanted:
        if not made:
            raise NotApplicable("tool_call: not applicable, the case expects text and the reply is text")
        return 0.0, f"called {_names(made)}, expected text"
    if not made:
        return 0.0, f"expected a call to {_names(wanted)}, the reply is text"
    if [name for name, _ in made] != [name for name, _ in wanted]:
        return 0.0, f"called {_names(made)}, expected {_names(wanted)}"
    for n, ((name, written), (_, expected_written)) in enumerate(zip(made, wanted)):
        which = f"call {n + 1} ({name}): " if len(wanted) > 1 else ""
        try:
            expected_arguments = json.loads(expected_written)
        except ValueError:
            raise ScoringFailed(f"tool_call: the expected call to {name} has arguments that are not JSON") from None
        try:
            arguments = json.loads(written)
        except ValueError:
            return 0.0, f"{which}the reply's arguments are not valid JSON"
        if not isinstance(arguments, dict):
            return 0.0, f"{which}the reply's arguments are not a JSON object"
        if spec.get("fields"):
            for field in spec["fields"]:
                got, want = _at_path(arguments, field), _at_path(expected_arguments, field)
                difference = _first_difference(got, want, f"arguments.{field}")
                if difference:
                    return 0.0, which + difference
        else:
            difference = _first_difference(arguments, expected_arguments, "arguments")
            if difference:
                return 0.0, which + difference
    return 1.0, ""


_MISSING = object()


def _names(calls: list[tuple[str, str]]) -> str:
    return ", ".join(name for name, _ in calls)


def _at_path(arguments, path: str):
    """The value at a dotted path ("address.city"; a number steps into a list), or _MISSING."""
    value = arguments
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _shown(value) -> str:
    if value is _MISSING:
        return "missing"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"


def _first_difference(got, want, path: str) -> str:
    """Where two JSON values first differ, in words ("" when equal): true is not 1, 1 is 1.0."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in list(want) + [key for key in got if key not in want]:
            difference = _first_difference(got.get(key, _MISSING), want.get(key, _MISSING), f"{path}.{key}")
            if difference:
                return difference
        return ""
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for n, (one, other) in enumerate(zip(got, want)):
            difference = _first_difference(one, other, f"{path}[{n}]")
            if difference:
                return difference
        return ""
    if got is _MISSING and want is _MISSING:
        return ""
    scalars = (int, float, str, bool, type(None))
    if isinstance(got, scalars) and isinstance(want, scalars) and isinstance(got, bool) == isinstance(want, bool):
        if got == want:
            return ""
    return f"{path}: got {_shown(got)}, expected {_shown(want)}"


_VERDICT_WORDS = {
    "pass": 1.0,
    "passed": 1.0,
    "yes": 1.0,
    "correct": 1.0,
    "fail": 0.0,
    "failed": 0.0,
    "no": 0.0,
    "incorrect": 0.0,
    "wrong": 0.0,
}


def judge_verdict(reply: str) -> float | None:
    """A judge's reply as a score: the first number (0-1, or out of 10 or 100), else the first
    verdict word (pass/fail, yes/no, correct/incorrect). None when it says neither."""
    number = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:/\s*(10|100)\b|%)?", reply)
    if number:
        value = float(number.group(1))
        scale = float(number.group(2)) if number.group(2) else (100.0 if reply[number.end() - 1] == "%" else None)
        if scale:
            return max(0.0, min(1.0, value / scale))
        if value <= 1:
            return value
        if value <= 10:
            return value / 10
    for word in re.findall(r"[a-z]+", reply.lower()):
        if word in _VERDICT_WORDS:
            return _VERDICT_WORDS[word]
    return None


@functools.lru_cache(maxsize=32)
def compiled_pattern(pattern: str):
    """A checked pattern compiled once per job worker, outside the regex module's shared cache, as
    the render processes checked it (\\d and \\w ASCII). At most 32 patterns of at most
    constraints.MAX_PATTERN_COST each (about 1.3 MB compiled): a few tens of MB however many
    evaluations run."""
    return regex.compile(constraints.ascii_classes(pattern, nested_classes=False), cache_pattern=False)


def passes(spec: dict, value: float) -> bool:
    return value >= spec["threshold"]
