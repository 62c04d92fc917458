"""What the optimiser tries: the candidate versions (each a change to the base version), the split
of the cases it was given, the fixed example sets chosen for coverage, and the instruction
rewrites a model is asked for. Plain functions over cases and versions; the runner scores them.

The order is chosen, not arbitrary: on a 135M model answering in exact JSON, examples that
resemble the input matter most (so the nearest-examples candidates come right after the base,
before a budget can run out, with the output format, free instead of the version's schema, tried
after the first two), balanced nearest examples and fixed sets, then rewrites by a model (a
small model's rarely help, but they are tried and shown), and last the best instructions with the
best examples.
"""

from __future__ import annotations

import random
import re

import numpy as np

from evals.nearest_examples import pool_matrix
from evals.prompting import user_turn
from prompts.models import PromptVersion
from prompts.rendering import MissingVariablesError, TemplateError, assembled_messages

# Examples chosen per input: how many (the search tries each, in this order), and at most this many
# with the same expected answer where answers repeat (labels), so one common answer cannot fill
# every slot. On SmolLM2-135M and a JSON triage task (30 cases to search on), k = 4 passed 16/30,
# 2: 15, 8: 14, 6: 13, the version itself 0; each candidate took 1-3 s a case on 2 busy cores, so
# a 20-minute budget over 130 cases measures only the first few: the likeliest come first.
NEAREST_K = (4, 2, 6, 8)
BALANCED_K = (4, 6, 8)
BALANCE = 2
FIXED_K = (4, 8)
REWRITES = 2
MAX_FAILURES_SHOWN = 5  # to the rewriting model
MAX_REWRITE_CHARS = 4_000
REWRITE_MAX_NEW_TOKENS = 400
CHECKED = 3  # the best this many by search score are scored on the check part
SEARCH_SHARE = 2 / 3
# Cases a candidate is scored on: a fixed sample of each part (the parts are shuffled), so a budget of
# 20 minutes on a 2-core CPU measures a dozen candidates rather than four; every search case stays in
# the pool nearest examples are chosen from. 48 cases tell a 20-point gap from chance (±7 points).
SCORED_SEARCH_CASES = 48
SCORED_CHECK_CASES = 60


def split_cases(case_ids: list[int], seed: int) -> tuple[list[int], list[int]]:
    """Shuffled with a fixed seed, 2/3 to search on and 1/3 to check the best on (at least one to
    check once there are two cases): a candidate is chosen on cases it was not picked on."""
    shuffled = sorted(case_ids)
    random.Random(seed).shuffle(shuffled)
    check = len(shuffled) - round(len(shuffled) * SEARCH_SHARE)
    if len(shuffled) >= 2:
        check = max(check, 1)
    return shuffled[check:], shuffled[:check]


def answers_repeat(cases) -> bool:
    answers = [case.expected.strip() for case in cases]
    return len(set(answers)) < len(answers)


def planned(base: PromptVersion, search_cases, *, rewrite_model: str) -> list[dict]:
    """The candidates in the order they are tried: {"kind", "description", "changes"} (changes
    left empty are filled when the candidate is reached: fixed sets need the base's failures,
    rewrites a model's answer, the last two the best of the others)."""
    size = len(search_cases)
    plan = [{"kind": "base", "description": "the version as it is", "changes": {}}]
    # A case never sees itself (leave-one-out), so k examples need k + 1 cases to search on.
    nearest = [k for k in NEAREST_K if k < size]
    has_format = base.answer_format["type"] != "text"
    for n, k in enumerate(nearest):
        plan.append(
            {
                "kind": "nearest",
                "description": f"nearest {k} examples",
                "changes": {"examples": {"k": k, "balance": None}},
            }
        )
        if has_format and n == min(1, len(nearest) - 1):
            plan.append(_free_output())
    if has_format and not nearest:
        plan.append(_free_output())  # too few cases for nearest examples: with the version's own
    if answers_repeat(search_cases):
        for k in BALANCED_K:
            if k < size:
                plan.append(
                    {
                        "kind": "nearest",
                        "description": f"nearest {k} examples, at most {BALANCE} per answer",
                        "changes": {"examples": {"k": k, "balance": BALANCE}},
                    }
                )
    for k in FIXED_K:
        if k < size:
            plan.append(
                {"kind": "fixed", "description": f"{k} fixed examples chosen for coverage", "k": k, "changes": {}}
            )
    for n in range(1, REWRITES + 1):
        plan.append(
            {"kind": "rewrite", "description": f"instructions rewritten by {rewrite_model} ({n})", "changes": {}}
        )
    plan.append({"kind": "combined", "description": "the best instructions with the best examples", "changes": {}})
    return plan


def _free_output() -> dict:
    # After the first two nearest-examples candidates, not last: on a 135M model the format is the
    # other large lever (constrained JSON kept answers valid but scored below free text with
    # examples), and a budget in minutes must not end before it is measured.
    return {"kind": "format", "description": "free output (no format) with the best examples", "changes": {}}


def candidate_version(base: PromptVersion, changes: dict, source: dict) -> PromptVersion:
    """An unsaved version: the base with `changes` (instructions; examples: a list, or {"k",
    "balance"} for examples chosen per input from `source`; output_format)."""
    fields = {
        field.attname: getattr(base, field.attname)
        for field in PromptVersion._meta.concrete_fields
        if field.attname != "id"
    }
    version = PromptVersion(**fields)
    if "instructions" in changes:
        version.instructions = changes["instructions"]
    if "examples" in changes:
        examples = changes["examples"]
        if isinstance(examples, dict):
            version.examples, version.example_source = [], {"from": dict(source), **examples}
        else:
            version.examples, version.example_source = list(examples), {}
    if "output_format" in changes:
        version.output_format = changes["output_format"]
    return version


def saved_fields(base: PromptVersion, changes: dict, source: dict) -> dict:
    """The fields prompts.services.version_create takes for the base with `changes`."""
    version = candidate_version(base, changes, source)
    fields = base.editable_fields()
    fields.update(
        instructions=version.instructions,
        output_format=version.answer_format,
        examples=version.example_source
        or [
            {key: value for key, value in example.items() if key in ("input", "output", "variables")}
            for example in version.examples
        ],
    )
    return fields


def as_example(case, base: PromptVersion) -> dict | None:
    """A case as a fixed example of `base` (its input through the template, its expected answer);
    None when the template cannot render it."""
    try:
        example = {"input": user_turn(case, base), "output": case.expected, "case": case.pk}
    except (MissingVariablesError, TemplateError):
        return None
    if case.input_variables:  # kept as variables: a saved version renders them again on save
        example["variables"] = dict(case.input_variables)
    return example


def coverage_set(base: PromptVersion, search_cases, failed_ids: set[int], k: int, *, user) -> list[dict]:
    """k cases of the search part as fixed examples, chosen to cover: one per distinct expected
    answer first (where answers repeat), then the base's failures, then the rest, each step
    farthest-first by embedding (the next is the case least like those already chosen)."""
    by_id = {case.pk: case for case in search_cases}
    pool = pool_matrix(base, user=user, pool_case_ids=list(by_id))
    vectors = {case_id: pool.vectors[row] for row, case_id in enumerate(pool.ids)}
    ids = [case_id for case_id in by_id if case_id in vectors]
    chosen: list[int] = []

    def farthest(candidates: list[int]) -> int:
        if not chosen:  # the first: the most typical (nearest the centre) of its group
            centre = np.mean([vectors[c] for c in candidates], axis=0)
            return max(candidates, key=lambda c: float(vectors[c] @ centre))
        picked = np.stack([vectors[c] for c in chosen])
        return min(candidates, key=lambda c: float(np.max(picked @ vectors[c])))

    groups: list[list[int]] = []
    if answers_repeat(search_cases):
        answers: dict[str, list[int]] = {}
        for case_id in ids:
            answers.setdefault(by_id[case_id].expected.strip(), []).append(case_id)
        groups = list(answers.values())
    while groups and len(chosen) < k:  # one per answer, most distinct answers first
        group = groups.pop(0)
        chosen.append(farthest(group))
    for rest in ([c for c in ids if c in failed_ids], ids):
        while len(chosen) < k:
            left = [c for c in rest if c not in chosen]
            if not left:
                break
            chosen.append(farthest(left))
    examples = [as_example(by_id[case_id], base) for case_id in chosen]
    return [example for example in examples if example is not None]


def rewrite_request(base: PromptVersion, failures: list[tuple[str, str, str]], angle: int) -> list[dict]:
    """What the rewriting model reads: the instructions, up to MAX_FAILURES_SHOWN failures (input,
    expected, what the model answered), and one of two asks (so the two rewrites differ)."""
    shown = "\n\n".join(
        f"Input:\n{given}\nExpected answer:\n{expected}\nThe model answered:\n{actual or '(nothing)'}"
        for given, expected, actual in failures[:MAX_FAILURES_SHOWN]
    )
    ask = (
        "Rewrite the instructions so that the model gives exactly the expected answers."
        if angle == 1
        else "Rewrite the instructions: describe the exact shape of the expected answers (their fields and allowed "
        "values) and the rules that decide them, briefly."
    )
    return assembled_messages(
        system="You improve the instructions (system prompt) of a language model. Reply with the new instructions "
        "only, no preamble.",
        turns=[
            {
                "role": "user",
                "content": f"The instructions:\n{base.instructions or '(none)'}\n\n"
                f"With them the model got these wrong:\n\n{shown or '(no failures)'}\n\n"
                f"{ask}",
            }
        ],
    )


_FENCED = re.compile(r"^```[a-z]*\n(.*?)\n?```$", re.DOTALL)


def rewritten_instructions(reply: str) -> tuple[str, str]:
    """(instructions, "") from the model's reply, or ("", the reason it is refused)."""
    text = reply.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = re.sub(r"^(?:new |improved |rewritten )?instructions:\s*", "", text, flags=re.IGNORECASE).strip()
    if not text:
        return "", "the model wrote empty instructions"
    if len(text) > MAX_REWRITE_CHARS:
        return "", f"the rewrite is {len(text):,} characters long (at most {MAX_REWRITE_CHARS:,})"
    return text, ""
