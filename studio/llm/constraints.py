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

Django-free: the model worker builds a constraint per reply in its preparing thread; the render
processes check formats when a version is saved (`check_format`).
"""

from __future__ import annotations

import functools
import json

FORMAT_TYPES = ("text", "json", "json_schema", "regex", "choice")
MAX_SCHEMA_CHARS = 64 * 1024
MAX_ENUM_MEMBERS = 1_000
MAX_SCHEMA_DEPTH = 32
MAX_PATTERN_CHARS = 1_000
MAX_CHOICES = 200
MAX_CHOICE_CHARS = 500
# Whitespace and separators the model writes: one space after ',' and ':', like json.dumps.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class FormatError(ValueError):
    """An output format that cannot be enforced; the message says what to change."""


def is_free(output_format: dict | None) -> bool:
    return not output_format or output_format.get("type", "text") == "text"


def grammar_of(output_format: dict) -> str:
    """The llguidance grammar of a (checked) output format."""
    import llguidance

    kind = output_format["type"]
    if kind == "json":
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps({"type": "object"}), defaults=JSON_LAYOUT)
    if kind == "json_schema":
        schema = in_written_order(output_format["schema"])
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(output_format["pattern"])
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


def clean_format(raw) -> dict:
    """The output format as stored, its shape checked (sizes, types); raises FormatError. The
    grammar itself is checked by `check_format` (in a bounded process: it compiles it)."""
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
            except ValueError as exc:
                raise FormatError(f"schema: not JSON ({exc})") from None
        if not isinstance(schema, dict):
            raise FormatError("schema: a JSON Schema object, e.g. {\"type\": \"object\", \"properties\": {...}}")
        if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
            raise FormatError(f"schema: at most {MAX_SCHEMA_CHARS // 1024} KB")
        _check_schema_size(schema)
        return {"type": kind, "schema": schema}
    if kind == "regex":
        pattern = raw.get("pattern")
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise FormatError(f"pattern: a regular expression of 1 to {MAX_PATTERN_CHARS:,} characters")
        return {"type": kind, "pattern": pattern}
    choices = raw.get("choices")
    if not isinstance(choices, list) or not 1 <= len(choices) <= MAX_CHOICES or not all(
            isinstance(c, str) and 0 < len(c) <= MAX_CHOICE_CHARS for c in choices):
        raise FormatError(f"choices: 1 to {MAX_CHOICES} answers of 1 to {MAX_CHOICE_CHARS} characters")
    return {"type": kind, "choices": list(dict.fromkeys(choices))}


def _check_schema_size(schema, depth: int = 0) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise FormatError(f"schema: nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list) and len(schema["enum"]) > MAX_ENUM_MEMBERS:
            raise FormatError(f"schema: an enum of {len(schema['enum']):,} members; at most {MAX_ENUM_MEMBERS:,}")
        for value in schema.values():
            _check_schema_size(value, depth + 1)
    elif isinstance(schema, list):
        for value in schema:
            _check_schema_size(value, depth + 1)


def check_format(output_format: dict) -> list[str]:
    """Compile the (cleaned) format's grammar as the worker will: its warnings, or FormatError
    with llguidance's reason. A JSON Schema is first checked against its meta-schema."""
    import llguidance

    if is_free(output_format):
        return []
    if output_format["type"] == "json_schema":
        import jsonschema

        try:
            jsonschema.validators.validator_for(output_format["schema"]).check_schema(output_format["schema"])
        except jsonschema.SchemaError as exc:
            raise FormatError(f"schema: not a valid JSON Schema: {exc.message}") from None
    try:
        grammar = grammar_of(output_format)
    except (ValueError, TypeError) as exc:
        raise FormatError(str(exc)) from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
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
    return {"string": "text", "integer": schema.get("minimum", 0), "number": schema.get("minimum", 0.5),
            "boolean": True, "null": None}.get(kind, "text")


# --- while decoding (the model worker) ------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _tokenizer(hf_tokenizer):
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer)


@functools.lru_cache(maxsize=256)
def compiled_format(hf_tokenizer, format_json: str):
    """The format compiled against the tokenizer, never advanced: each reply decodes with a copy.
    Cached by format, so a schema that every evaluation case shares compiles once."""
    import llguidance

    matcher = llguidance.LLMatcher(_tokenizer(hf_tokenizer), grammar_of(json.loads(format_json)))
    if matcher.is_error():
        raise FormatError(f"The output format cannot be enforced: {matcher.get_error()}")
    return matcher


class ReplyConstraint:
    """One reply's matcher: the mask of the tokens its format allows next, and its progress."""

    def __init__(self, hf_tokenizer, output_format: dict):
        import llguidance.torch as llt

        self.llt = llt
        self.hf_tokenizer = hf_tokenizer
        self.tokenizer = _tokenizer(hf_tokenizer)
        self.matcher = compiled_format(hf_tokenizer, json.dumps(output_format)).deep_copy()
        self.bitmask = llt.allocate_token_bitmask(1, self.tokenizer.vocab_size)

    def restrict(self, logits) -> bool:
        """Forbid (in place, -inf) the tokens the format does not allow next; False when it allows none."""
        self.llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        if not self.bitmask.any():
            return False
        vocabulary = self.tokenizer.vocab_size
        view = logits[:vocabulary].unsqueeze(0)
        self.llt.apply_token_bitmask_inplace(view, self.bitmask.to(logits.device))
        if logits.shape[0] > vocabulary:  # the model's padded rows of the vocabulary
            logits[vocabulary:] = -float("inf")
        return True

    def advance(self, token: int) -> None:
        self.matcher.consume_token(token)

    def advance_through(self, text: str) -> None:
        """Start past `text`, the beginning of an answer already written in this format (a reply cut
        at its maximum tokens and continued). The grammar reads bytes, so the text's own tokens
        serve, whichever tokens first wrote it. FormatError when the format does not allow it."""
        tokens = self.hf_tokenizer.encode(text, add_special_tokens=False)
        if self.matcher.try_consume_tokens(tokens) < len(tokens):
            raise FormatError("The reply's text so far does not follow its output format, so it cannot be "
                              "continued in that format. Regenerate it instead.")

    @property
    def complete(self) -> bool:
        """The format is matched and allows nothing more: the reply ends here."""
        return self.matcher.is_stopped()
