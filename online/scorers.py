"""Reference-free scorers: a live reply has no expected answer, so each judges the reply alone. Every
score is 0-1; a scorer that cannot score a reply says why (an error, never a 0). Django-free except
for what evals' scorers share: their JSON Schema, regex and contains implementations are reused.

| type | settings | score |
| --- | --- | --- |
| llm_judge | `rubric`, `model` (optional: a served model; default the served base model) | the judge's 1-5 as (n - 1) / 4: 0, 0.25, 0.5, 0.75, 1 |
| json_schema | `schema` | 1 when the reply is JSON valid under it, else 0 |
| regex | `pattern` (evals' bounds: 500 characters, its repetitions counted, 1 s a reply) | 1 when it matches somewhere |
| length | `min`, `max` (characters; either may be left out) | 1 when the reply's length is within them |
| contains / not_contains | `text`, `ignore_case` | 1 when the reply contains (does not contain) it |

Each scorer has a `name` in its rule (its type by default), under which its scores are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from evals import scorers as evals_scorers
from evals.scorers import ScorerError, ScoringFailed

SCORER_TYPES = ("llm_judge", "json_schema", "regex", "length", "contains", "not_contains")
LABELS = {
    "llm_judge": ("LLM judge", "a served model grades the reply 1-5 against your rubric"),
    "json_schema": ("JSON Schema", "the reply is JSON valid under a schema"),
    "regex": ("Regular expression", "a pattern matches the reply"),
    "length": ("Length", "the reply's characters are within a range"),
    "contains": ("Contains", "the reply contains a text"),
    "not_contains": ("Does not contain", "the reply does not contain a text"),
}
MAX_SCORERS = 10
MAX_RUBRIC_CHARS = 4000
MAX_TEXT_CHARS = 1000
MAX_LENGTH = 1_000_000
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

JUDGE_MAX_NEW_TOKENS = 8
JUDGE_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 5}  # the judge's answer, enforced while it decodes
JUDGE_INSTRUCTIONS = (
    "You grade an assistant's answer against a rubric. Reply with one whole number from 1 to 5 and "
    "nothing else: 1 means the answer fails the rubric, 5 that it meets it fully."
)
JUDGE_TURN = "Rubric: {rubric}\n\nQuestion:\n{question}\n\nAnswer:\n{answer}\n\nScore (1-5):"
_JUDGE_SCORE = re.compile(r"(?<![\d.])([1-5])(?!\d|\.\d)")  # a whole 1-5: not 15, 4.5 or 0.3


def clean_scorers(raw, *, check_pattern: Callable[[str], str | None] | None = None) -> list[dict]:
    """Checked scorer settings: [{"type", "name", ...}]. Refusals name the place
    (`scorers[1].pattern: ...`). `check_pattern` compiles a regex where it cannot hurt (evals')."""
    if not isinstance(raw, list) or not raw:
        raise ScorerError('scorers: give at least one, e.g. [{"type": "length", "max": 2000}]')
    if len(raw) > MAX_SCORERS:
        raise ScorerError(f"scorers: at most {MAX_SCORERS}")
    cleaned, names = [], set()
    for n, spec in enumerate(raw):
        where = f"scorers[{n}]"
        if not isinstance(spec, dict) or spec.get("type") not in SCORER_TYPES:
            raise ScorerError(f"{where}.type: choose one of {', '.join(SCORER_TYPES)}")
        kind = spec["type"]
        name = spec.get("name", kind)
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ScorerError(f"{where}.name: lower-case letters, digits, - and _ (40 at most)")
        if name in names:
            raise ScorerError(f'{where}.name: two scorers are named “{name}”; give each its own "name"')
        names.add(name)
        cleaned.append({"type": kind, "name": name, **_settings(kind, spec, where, check_pattern)})
    return cleaned


def _settings(kind: str, spec: dict, where: str, check_pattern) -> dict:
    if kind == "llm_judge":
        rubric, model = spec.get("rubric"), spec.get("model", "")
        if not isinstance(rubric, str) or not rubric.strip() or len(rubric) > MAX_RUBRIC_CHARS:
            raise ScorerError(f"{where}.rubric: what a good reply does, 1 to {MAX_RUBRIC_CHARS} characters")
        if not isinstance(model, str) or len(model) > 200:
            raise ScorerError(f"{where}.model: the name of a served model (or leave it out for the base model)")
        return {"rubric": rubric.strip(), "model": model}
    if kind == "length":
        low, high = spec.get("min"), spec.get("max")
        for field, value in (("min", low), ("max", high)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LENGTH
            ):
                raise ScorerError(f"{where}.{field}: a whole number of characters from 0 to {MAX_LENGTH:,}")
        if low is None and high is None:
            raise ScorerError(f"{where}: give min, max or both (characters)")
        if low is not None and high is not None and low > high:
            raise ScorerError(f"{where}.min: at most max ({high})")
        return {"min": low, "max": high}
    if kind in ("contains", "not_contains"):
        text = spec.get("text")
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS:
            raise ScorerError(f"{where}.text: the text to look for, 1 to {MAX_TEXT_CHARS} characters")
        return {"text": text, "ignore_case": bool(spec.get("ignore_case", False))}
    # regex and json_schema: evals' own checks (the pattern's cost, the schema's bounds)
    if kind == "json_schema" and spec.get("schema") is None:
        raise ScorerError(f"{where}.schema: the JSON Schema the reply must be valid under")
    own = {key: spec[key] for key in ("pattern", "schema") if key in spec}
    try:
        checked = evals_scorers.clean_scorers([{"type": kind, **own}], check_pattern=check_pattern)[0]
    except ScorerError as exc:
        raise ScorerError(str(exc).replace("scorers[0]", where, 1), exc.code) from None
    return {"pattern": checked["pattern"]} if kind == "regex" else {"schema": checked["schema"]}


def score(spec: dict, output: str) -> float:
    """The score of a reply under one scorer other than the judge; ScoringFailed when it cannot say
    (a pattern that ran out of time on this reply)."""
    kind = spec["type"]
    if kind == "length":
        low, high = spec.get("min"), spec.get("max")
        return float((low is None or len(output) >= low) and (high is None or len(output) <= high))
    if kind in ("contains", "not_contains"):
        found = evals_scorers.score({**spec, "type": "contains"}, output, "")
        return found if kind == "contains" else 1.0 - found
    if kind in ("regex", "json_schema"):
        return evals_scorers.score(spec, output, "")
    raise ScorerError(f"unknown scorer {kind!r}")


def judge_messages(spec: dict, question: str, answer: str) -> list[dict]:
    """What the judge model reads: the rubric, the question the reply answered and the reply."""
    turn = JUDGE_TURN.format(
        rubric=spec["rubric"], question=question.strip() or "(empty)", answer=answer.strip() or "(empty)"
    )
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS}, {"role": "user", "content": turn}]


def judge_score(reply: str) -> float:
    """The judge's reply as a score: its first whole number 1-5, as (n - 1) / 4. ScoringFailed when
    it holds none (a judge that does not answer the question is an error, not a low score)."""
    found = _JUDGE_SCORE.search(reply)
    if found is None:
        shown = " ".join(reply.split())[:80]
        raise ScoringFailed(f"the judge's reply holds no score from 1 to 5: “{shown}”")
    return (int(found.group(1)) - 1) / 4


__all__ = ["ScorerError", "ScoringFailed", "clean_scorers", "judge_messages", "judge_score", "score"]
