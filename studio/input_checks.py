"""Checks on what people send, shared by every entry point (forms, API bodies, imports, frames).

Two kinds of input break storage rather than logic: NUL bytes (PostgreSQL refuses them in
text and JSON) and lone surrogates (not encodable as UTF-8). SQLite would keep them and
PostgreSQL would answer with a 500; both refuse them here, with a message, before any write.
Deeply nested JSON is refused before it reaches code that recurses over it.
"""

from __future__ import annotations

import json
import math
import re

MAX_JSON_DEPTH = 32
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class InputError(ValueError):
    """Input refused before any work; the message says what to change."""


_WHOLE_NUMBER_TEXT = re.compile(r"[+-]?\d{1,30}")
_NUMBER_TEXT_CHARS = 40  # longer text is no number a person meant


def parsed_number(value, *, whole: bool = False) -> int | float:
    """A number from a JSON value or a form's text, for every entry point that reads one: booleans,
    NaN and infinities are refused, and with `whole` a fraction (2.9 is never rounded; 2.0 and "4"
    are taken). Raises InputError("must be a whole number" or "must be a number"); the caller says
    which field, and checks the range."""
    wanted = "must be a whole number" if whole else "must be a number"
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _NUMBER_TEXT_CHARS:
            raise InputError(wanted)
        if whole:
            if not _WHOLE_NUMBER_TEXT.fullmatch(text):
                raise InputError(wanted)
            return int(text)
        try:
            value = float(text)
        except ValueError:
            raise InputError(wanted) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(wanted)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(wanted)
    if whole:
        if isinstance(value, float) and not value.is_integer():
            raise InputError(wanted)
        return int(value)
    return value


def number_in_range(value, *, low, high, whole: bool = False) -> int | float:
    """parsed_number, then its range: raises InputError saying both ("must be a whole number from
    1 to 50", "must be a number from -1 to 1000"), so every refusal tells the allowed range."""
    wanted = f"must be {'a whole number' if whole else 'a number'} from {low:g} to {high:g}"
    try:
        number = parsed_number(value, whole=whole)
    except InputError:
        raise InputError(wanted) from None
    if not low <= number <= high:
        raise InputError(wanted)
    return number


ROW_ID_MAX = 2**63 - 1  # a bigint's top: a larger id would make the database driver raise OverflowError


def whole_number_or_none(value, *, low: int = 1, high: int = ROW_ID_MAX) -> int | None:
    """A whole number from `low` to `high` where anything else means none was given (None): a
    query string's or hidden field's id, version number or page, whose absence the view handles
    (a 404, the first page). Ids by default, so an id past a bigint never reaches a query."""
    try:
        number = parsed_number(value, whole=True)
    except InputError:
        return None
    return number if low <= number <= high else None


def unstorable_reason(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return "contains a NUL character (\\x00), which cannot be stored; remove it"
    return "contains a lone surrogate (an invalid Unicode character), which cannot be stored; remove it"


def find_unstorable(value, path: str = "") -> tuple[str, str] | None:
    """The first (JSON path, reason) of a string (or key) that cannot be stored, or None."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            reason = unstorable_reason(item)
            if reason:
                return where or "(value)", reason
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                key_reason = unstorable_reason(key) if isinstance(key, str) else None
                if key_reason:
                    return f"{where}.{key!r}" if where else repr(key), "the name " + key_reason
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{n}]") for n, child in reversed(list(enumerate(item))))
    return None


def json_depth_exceeds(value, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_json(raw: str | bytes, *, max_depth: int = MAX_JSON_DEPTH):
    """Parsed JSON, or InputError: malformed, nested deeper than `max_depth`, or holding text
    that cannot be stored."""
    try:
        value = json.loads(raw)
    except RecursionError:  # the decoder's own guard against very deep nesting
        raise InputError(f"The JSON is nested too deeply (at most {max_depth} levels).") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"Malformed JSON: {exc}") from None
    if json_depth_exceeds(value, max_depth):
        raise InputError(f"The JSON is nested too deeply (at most {max_depth} levels).")
    unstorable = find_unstorable(value)
    if unstorable:
        raise InputError(f"{unstorable[0]}: {unstorable[1]}")
    return value
