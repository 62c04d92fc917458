"""The few-shot examples a prompt version answers with, wherever it answers (chat from a version,
the playground, `prompt:<slug>` in the OpenAI API, evaluations, the render API, fine-tuning):
its fixed list, or "examples chosen per input" (`PromptVersion.example_source`): the k cases of
the prompt most like the input being answered, each as its input through the version's template
and its expected answer.

The cases live in evals/, which prompts/ may not import (tests/test_architecture.py: evals sits
above chat and prompts). So the case lookup is a provider that evals registers here when the app
is ready (evals/apps.py → evals/nearest_examples.py); without one (a process without evals) a
version chooses no examples. The rules of the source itself (its shape and ranges) live here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from studio.errors import StudioError

from .rendering import PASSAGES, MissingVariablesError, TemplateError, render_user_turn

DEFAULT_K = 6
MAX_K = 20
SPLITS = ("train",)  # the held-out split is never a pool by itself: a selection can hold it
SHAPE = '{"from": {"selection": <id>} or {"split": "train"}, "k": 1-20, "balance": null or 1-k}'
HELD_OUT_NOTE = (
    "A selection that holds held-out (eval) cases lets them be examples, so an evaluation on the "
    "held-out split would see its neighbours' answers; the train split never does."
)


class ExampleSourceError(StudioError):
    """An example source refused; `field` names what to fix (e.g. examples.k)."""


@dataclass(frozen=True)
class ExampleCase:
    """A case as an example: what the provider hands back."""

    id: int
    input_variables: dict
    input_text: str
    expected: str


class ExampleProvider(Protocol):
    def nearest(self, *, version, user, query: str, exclude_case_ids, pool_case_ids) -> list[ExampleCase]:
        """The chosen cases, least similar first."""

    def cases(self, *, version, user, case_ids: list[int]) -> list[ExampleCase]:
        """Those of `case_ids` still in the version's pool for `user`, in that order."""

    def check_selection(self, *, selection_id: int, prompt, user) -> None:
        """Raise ExampleSourceError when `user` may not choose examples from that selection."""

    def pool_size(self, *, version, user) -> int:
        """How many cases the version's examples are chosen from, for `user`, now."""

    def selections_of(self, *, user) -> list[tuple[int, str]]:
        """The person's saved selections (id, name), for the version form."""


_provider: ExampleProvider | None = None


def register_provider(provider: ExampleProvider) -> None:
    global _provider
    _provider = provider


def input_of(variables: dict | None, text: str = "") -> str:
    """What is embedded and compared for an input: its variables' values joined by newlines in
    sorted-name order (one case's vector serves every version of a template, however many
    variables it has), else its text."""
    if variables:
        return "\n".join(str(variables[name]) for name in sorted(variables))
    return text or ""


def input_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def examples_for(
    version,
    *,
    user,
    variables: dict | None = None,
    text: str = "",
    exclude_case_ids=(),
    pool_case_ids: list[int] | None = None,
) -> tuple[list[dict], list[int]]:
    """The few-shot examples `version` answers this input with ([{"input", "output"}]) and the ids of
    the cases they came from ([] for fixed examples). `exclude_case_ids`: cases that must not be an
    example (the case an evaluation answers); `pool_case_ids`: choose among these cases instead of
    the version's pool (the optimiser). Works on an unsaved version."""
    source = version.example_source or {}
    if not source:
        return list(version.examples), []
    if _provider is None:
        return [], []
    chosen = _provider.nearest(
        version=version,
        user=user,
        query=input_of(variables, text),
        exclude_case_ids=tuple(exclude_case_ids),
        pool_case_ids=pool_case_ids,
    )
    return _as_examples(version, chosen)


def examples_of_cases(version, case_ids: list[int], *, user) -> list[dict]:
    """The examples a reply recorded (Message.example_cases), again: what its model reads when it
    is written, so the reply reads exactly what it says it read. A case made private or deleted
    since drops out."""
    if not (version.example_source or {}):
        return list(version.examples)
    if not case_ids or _provider is None:
        return []
    return _as_examples(version, _provider.cases(version=version, user=user, case_ids=list(case_ids)))[0]


def _as_examples(version, chosen: list[ExampleCase]) -> tuple[list[dict], list[int]]:
    examples, ids = [], []
    for case in chosen:
        shown = example_input(version, case)
        if shown is None:
            continue
        examples.append({"input": shown, "output": case.expected})
        ids.append(case.id)
    return examples, ids


def example_input(version, case: ExampleCase) -> str | None:
    """A case's input as the version's user turn (its variables through the template, as evaluations
    render it), or its text; None when the template cannot take its variables (it is skipped)."""
    if case.input_variables or not case.input_text:
        try:
            return render_user_turn(version.template, {PASSAGES: [], **case.input_variables})
        except (MissingVariablesError, TemplateError):
            return None
    return case.input_text


def clean_example_source(
    raw, *, field: str = "examples", prompt=None, user=None, carried_selections: set[int] = frozenset()
) -> dict:
    """An example source as the prompt API, exports and the form give it, checked (the one owner of
    its ranges). A selection must be the saver's own, or already used by the prompt's versions."""
    if not isinstance(raw, dict) or set(raw) - {"from", "k", "balance"}:
        raise ExampleSourceError(f"must be a list of examples or {SHAPE}", field)
    origin = raw.get("from")
    if not isinstance(origin, dict) or len(origin) != 1:
        raise ExampleSourceError('must be {"selection": <id>} or {"split": "train"}', f"{field}.from")
    if "split" in origin:
        if origin["split"] not in SPLITS:
            raise ExampleSourceError(
                'must be "train" (choose a selection to draw from other cases)', f"{field}.from.split"
            )
        clean_origin = {"split": origin["split"]}
    elif "selection" in origin:
        selection_id = origin["selection"]
        if isinstance(selection_id, str) and selection_id.strip().isdigit():
            selection_id = int(selection_id)
        if not isinstance(selection_id, int) or isinstance(selection_id, bool) or not 0 < selection_id < 2**63:
            raise ExampleSourceError("must be the id of one of your saved selections", f"{field}.from.selection")
        if selection_id not in carried_selections:
            if _provider is None:
                raise ExampleSourceError("cases cannot be chosen here", f"{field}.from.selection")
            _provider.check_selection(selection_id=selection_id, prompt=prompt, user=user)
        clean_origin = {"selection": selection_id}
    else:
        raise ExampleSourceError('must be {"selection": <id>} or {"split": "train"}', f"{field}.from")
    k = _whole(raw.get("k", DEFAULT_K), 1, MAX_K, f"{field}.k", DEFAULT_K)
    balance = raw.get("balance")
    balance = None if balance in (None, "") else _whole(balance, 1, k, f"{field}.balance", None)
    return {"from": clean_origin, "k": k, "balance": balance}


def _whole(value, low: int, high: int, field: str, default):
    if value in (None, ""):
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ExampleSourceError(f"must be a whole number from {low} to {high}", field)
    return value


def source_text(source: dict) -> str:
    """The source in words (diff, version page): “the 6 cases most like the input, from the train
    split, at most 2 with the same expected answer”."""
    if not source:
        return ""
    origin = source["from"]
    where = "the train split" if origin.get("split") else f"selection #{origin['selection']}"
    text = f"the {source['k']} case{'s' if source['k'] != 1 else ''} most like the input, from {where}"
    if source.get("balance"):
        text += f", at most {source['balance']} with the same expected answer"
    return text


def pool_size(version, *, user) -> int | None:
    """How many cases the version chooses from for `user` now (None: fixed examples)."""
    if not (version.example_source or {}) or _provider is None:
        return None
    return _provider.pool_size(version=version, user=user)


def selection_choices(*, user) -> list[tuple[int, str]]:
    return _provider.selections_of(user=user) if _provider is not None and user is not None else []
