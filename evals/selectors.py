"""Reads of failure cases and evaluations: who sees what, filters, counts, comparisons."""

from __future__ import annotations

from typing import TypedDict

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Count, Q

from chat.serving import registry as chat_registry
from studio.input_checks import whole_number_or_none
from studio.llm.tools import assistant_text

from . import retrieval_figures, scorers
from .models import CaseSelection, Evaluation, EvaluationResult, FailureCase
from .tool_answers import answer_calls

CASES_PER_PAGE = 50
FILTERS = ("prompt", "version", "tag", "split", "status", "source", "author", "q", "review", "selection")
# What exports, evaluations and fine-tunes take when no status is asked for: open cases, and fixed
# ones (they guard against regressions); "won't fix" cases only when that status is chosen.
USED_STATUSES = (FailureCase.Status.OPEN, FailureCase.Status.FIXED)
USED_STATUSES_NOTE = "open and fixed cases (“won't fix” ones only when you choose that status)"
ANY_STATUS = "any"


def cases_visible_to(user):
    """Shared cases, and the user's own private ones (privacy: staff do not see others' private cases)."""
    if not getattr(user, "is_authenticated", False):
        return FailureCase.objects.none()
    return FailureCase.objects.filter(Q(shared=True) | Q(created_by=user))


def can_see_case(user, case: FailureCase) -> bool:
    return case.shared or case.created_by_id == getattr(user, "pk", None)


def can_edit_case(user, case: FailureCase) -> bool:
    if not can_see_case(user, case):
        return False
    if case.created_by_id == user.pk or (user.is_staff and case.shared):
        return True
    return case.prompt_version_id is not None and case.shared and case.prompt.can_edit(user)


def clean_filters(raw) -> dict:
    """The filter fields that are set, as short strings (a saved selection stores these)."""
    raw = raw or {}
    get = raw.get if hasattr(raw, "get") else dict(raw).get
    return {name: str(get(name))[:200] for name in FILTERS if get(name) not in (None, "")}


def apply_filters(cases, filters: dict, *, user=None):
    if filters.get("selection") and user is not None:
        saved = CaseSelection.objects.filter(owner=user, pk=whole_number_or_none(filters["selection"])).first()
        if saved is not None:
            cases = apply_filters(cases, {k: v for k, v in saved.filters.items() if k != "selection"})
    if filters.get("prompt") == "-":
        cases = cases.filter(prompt_version=None)
    elif filters.get("prompt"):
        cases = cases.filter(prompt_version__prompt__slug=filters["prompt"])
    version_number = whole_number_or_none(filters.get("version"), high=2**31 - 1)  # the column's range
    if version_number:
        cases = cases.filter(prompt_version__number=version_number)
    if filters.get("tag"):
        cases = cases.filter(tags__name=filters["tag"])
    for name in ("split", "status", "source", "review"):
        if filters.get(name) and not (name == "status" and filters[name] == ANY_STATUS):
            cases = cases.filter(**{name: filters[name]})
    if filters.get("author"):
        cases = cases.filter(created_by__username=filters["author"])
    if filters.get("q"):
        words = filters["q"]
        cases = cases.filter(
            Q(input_text__icontains=words)
            | Q(expected__icontains=words)
            | Q(actual__icontains=words)
            | Q(note__icontains=words)
            | Q(input_variables__icontains=words)
        )
    return cases.distinct() if filters.get("tag") else cases


def cases_page(*, user, filters: dict, page=1):
    cases = (
        apply_filters(cases_visible_to(user), filters, user=user)
        .select_related("prompt_version__prompt", "created_by")
        .prefetch_related("tags")
    )
    return Paginator(cases, CASES_PER_PAGE).get_page(page)


def cases_for(*, user, filters: dict):
    """Every case the filters choose among those the user sees (exports, evaluations, training):
    approved ones, and of USED_STATUSES unless the filters (or their saved selection) name a status."""
    cases = apply_filters(cases_visible_to(user), filters, user=user).filter(review=FailureCase.Review.APPROVED)
    if not _names_a_status(filters, user):
        cases = cases.filter(status__in=USED_STATUSES)
    return cases.select_related("prompt_version__prompt").prefetch_related("tags").order_by("id")


def _names_a_status(filters: dict, user) -> bool:
    if filters.get("status"):
        return True
    if filters.get("selection"):
        saved = (
            CaseSelection.objects.filter(owner=user, pk=whole_number_or_none(filters["selection"]))
            .values_list("filters", flat=True)
            .first()
        )
        return bool(saved and saved.get("status"))
    return False


def evaluation_cases(*, user, filters: dict):
    return cases_for(user=user, filters=filters)


def counts(*, user) -> dict:
    """Cases per prompt and split, and progress toward the point where fine-tuning pays off."""
    visible = cases_visible_to(user)
    rows = (
        visible.values("prompt_version__prompt__slug", "prompt_version__prompt__name", "split")
        .annotate(n=Count("id"))
        .order_by("prompt_version__prompt__name")
    )
    per_prompt: dict[str, dict] = {}
    for row in rows:
        slug = row["prompt_version__prompt__slug"] or "-"
        entry = per_prompt.setdefault(
            slug,
            {
                "slug": slug,
                "name": row["prompt_version__prompt__name"] or "Plain chat",
                "train": 0,
                "eval": 0,
                "total": 0,
            },
        )
        entry[row["split"]] += row["n"]
        entry["total"] += row["n"]
    threshold = settings.FAILURE_CASES_FOR_FINE_TUNING
    for entry in per_prompt.values():
        entry["percent"] = min(100, int(100 * entry["train"] / threshold))
        entry["hint"] = next_step_hint(entry, threshold)
    return {
        "per_prompt": list(per_prompt.values()),
        "threshold": threshold,
        "total": visible.count(),
        "open": visible.filter(status=FailureCase.Status.OPEN).count(),
    }


def next_step_hint(entry: dict, threshold: int) -> str:
    train, held_out = entry["train"], entry["eval"]
    if entry["slug"] == "-":
        return "Plain-chat cases: attach them to a prompt (edit, or re-import) to evaluate and train on them."
    if held_out == 0:
        return "Move some cases to the eval split (about 1 in 5): evaluations then measure on cases no training saw."
    if train < threshold // 10:
        return (
            "Keep improving the prompt: add instructions or few-shot examples, then run an evaluation "
            "against the open cases."
        )
    if train < threshold:
        return (
            f"{threshold - train:,} more training cases until fine-tuning usually pays off; meanwhile "
            "measure each prompt change against the cases."
        )
    return "Enough cases to fine-tune: when prompting stops fixing them, launch a LoRA fine-tune on the train split."


def case_history(case: FailureCase):
    """How this case fared in every evaluation: version, model, pass or fail, the output."""
    return (
        EvaluationResult.objects.filter(case=case)
        .select_related("evaluation__prompt_version__prompt")
        .order_by("-evaluation__created_at")
    )


def can_see_evaluation(user, evaluation: Evaluation) -> bool:
    """Its author sees it; others do when it ran on shared cases only (outputs show the inputs)."""
    return evaluation.shared or evaluation.created_by_id == getattr(user, "pk", None)


def evaluations_visible_to(user):
    return Evaluation.objects.filter(Q(created_by=user) | Q(shared=True)).select_related(
        "prompt_version__prompt", "created_by"
    )


RESULTS_PER_PAGE = 50
NEWEST_RESULTS = 10  # what the live fragment shows while an evaluation runs


def _mark_visibility(results, user) -> list[EvaluationResult]:
    """Each result's `case_visible`: a case its author made private after the evaluation ran is
    shown to the others as a private case (its pass or fail counts, its text stays hidden)."""
    results = list(results)
    for result in results:
        result.case_visible = can_see_case(user, result.case)
        result.can_judge = can_edit_case(user, result.case)  # the rule result_verdict checks
    return with_example_links(results, user)


def with_example_links(results: list[EvaluationResult], user) -> list[EvaluationResult]:
    """Each result's `example_links`: the cases chosen as its examples, [{"id", "visible"}] (a case
    the viewer may not see is named "private", unlinked); one query for the whole page."""
    chosen = {pk for result in results for pk in result.example_cases}
    visible = set(cases_visible_to(user).filter(pk__in=chosen).values_list("pk", flat=True)) if chosen else set()
    for result in results:
        result.example_links = [{"id": pk, "visible": pk in visible} for pk in result.example_cases]
    return results


def results_page(*, evaluation: Evaluation, user, page=1):
    """One page of an evaluation's results, in the order they were stored."""
    results = evaluation.results.select_related("case__prompt_version__prompt", "verdict_by").order_by("id")
    paged = Paginator(results, RESULTS_PER_PAGE).get_page(page)
    paged.object_list = _mark_visibility(paged.object_list, user)
    return paged


def results_newest(*, evaluation: Evaluation, user) -> list[EvaluationResult]:
    results = evaluation.results.select_related("case__prompt_version__prompt", "verdict_by").order_by("-id")
    return _mark_visibility(results[:NEWEST_RESULTS], user)


COMPARISON_KINDS = {
    "regressed": "regressed",
    "fixed": "fixed",
    "still_failing": "still failing",
    "still_passing": "still passing",
    "only_one": "in one run only",
    "unanswered": "not answered in a run",
}


def retrieval_figures_of(evaluation: Evaluation) -> dict | None:
    """recall@k, MRR@10 and the share never retrieved over its judged cases (evals.retrieval_figures);
    None when its version retrieves nothing or no case is judged."""
    k = (evaluation.prompt_version.retrieval or {}).get("k")
    if not k:
        return None
    results = evaluation.results.select_related("case").only("retrieved", "case__retrieval_judgment")
    return retrieval_figures.figures(((result.case, result.retrieved) for result in results), k)


class ToolAccuracy(TypedDict):
    """One row of an evaluation's "By tool" table. `tool` None: the cases that expected text and got
    a call (`cases` of them, out of `of` that expected text; no accuracies)."""

    tool: str | None
    cases: int  # answered cases whose expected answer calls `tool`
    name_accuracy: float | None  # share of them whose reply called it
    arguments_accuracy: float | None  # share whose calls to it had the expected arguments (the tool_call rule)
    of: int  # the row of text: cases that expected text (0 on a tool's row)


def by_tool_of(evaluation: Evaluation) -> list[ToolAccuracy]:
    """Per expected tool, over the answered cases whose expected answer calls it: how often the reply
    called it and with the expected arguments (by the evaluation's tool_call scorer's `fields`, else
    all of them), then a row for replies that called a tool where text was expected. [] when no case
    expects a call and no reply made one. A case expecting several tools counts under each."""
    spec = next((s for s in evaluation.scorers if s["type"] == "tool_call"), {"type": "tool_call"})
    answered = evaluation.results.exclude(error_code__gt="", verdict="")  # the model's errors: as the pass rate
    tallies: dict[str, list[int]] = {}  # tool → [cases, name right, arguments right]
    text_cases = called_instead = 0
    for output, expected in answered.values_list("output", "case__expected").order_by("id").iterator():
        wanted = answer_calls(expected)[1]
        made = answer_calls(output)[1]
        if not wanted:
            text_cases += 1
            called_instead += bool(made)
            continue
        for tool in dict.fromkeys(name for name, _ in wanted):
            mine = [call for call in made if call[0] == tool]
            tally = tallies.setdefault(tool, [0, 0, 0])
            tally[0] += 1
            tally[1] += bool(mine)
            if mine:
                expected_calls = [call for call in wanted if call[0] == tool]
                try:
                    value, _ = scorers.tool_call_score(
                        spec, assistant_text("", mine), assistant_text("", expected_calls)
                    )
                except scorers.ScoringFailed:  # the expected arguments are no JSON: not a match
                    value = 0.0
                tally[2] += value == 1.0
    rows: list[ToolAccuracy] = [
        {
            "tool": tool,
            "cases": cases,
            "name_accuracy": round(named / cases, 4),
            "arguments_accuracy": round(argued / cases, 4),
            "of": 0,
        }
        for tool, (cases, named, argued) in sorted(tallies.items())
    ]
    if called_instead or (rows and text_cases):
        rows.append(
            {"tool": None, "cases": called_instead, "name_accuracy": None, "arguments_accuracy": None, "of": text_cases}
        )
    return rows


def comparison(first: Evaluation, second: Evaluation, *, user, page=1) -> dict:
    """Per case both outputs and verdicts, and the counts: fixed, regressed, still failing, still
    passing. The counts cover every case; the rows are one page (regressions first)."""
    # A case the model never answered in a run (an error) is neither fixed nor regressed there.
    unanswered = Q(error_code__gt="", verdict="")
    before_passed = dict(first.results.values_list("case_id", "passed"))
    after_passed = dict(second.results.values_list("case_id", "passed"))
    errors = set(
        EvaluationResult.objects.filter(unanswered, evaluation__in=(first, second)).values_list("case_id", flat=True)
    )
    kinds = {}
    for case_id in set(before_passed) | set(after_passed):
        before, after = before_passed.get(case_id), after_passed.get(case_id)
        if before is None or after is None:
            kinds[case_id] = "only_one"
        elif case_id in errors:
            kinds[case_id] = "unanswered"
        elif after and not before:
            kinds[case_id] = "fixed"
        elif before and not after:
            kinds[case_id] = "regressed"
        else:
            kinds[case_id] = "still_passing" if after else "still_failing"
    counts = {kind: 0 for kind in COMPARISON_KINDS}
    for kind in kinds.values():
        counts[kind] += 1
    order = list(COMPARISON_KINDS)
    paged = Paginator(
        sorted(kinds, key=lambda case_id: (order.index(kinds[case_id]), case_id)), RESULTS_PER_PAGE
    ).get_page(page)
    shown = list(paged.object_list)
    results = {
        (r.evaluation_id, r.case_id): r
        for r in EvaluationResult.objects.filter(evaluation__in=(first, second), case_id__in=shown).select_related(
            "case__prompt_version__prompt"
        )
    }
    rows = []
    k_first, k_second = ((e.prompt_version.retrieval or {}).get("k") for e in (first, second))
    for case_id in shown:
        before, after = results.get((first.pk, case_id)), results.get((second.pk, case_id))
        case = (before or after).case
        moved = (
            retrieval_figures.moved(case, before.retrieved, after.retrieved, k_first or 0, k_second or 0)
            if before is not None and after is not None and (k_first or k_second)
            else ""
        )
        rows.append(
            {
                "case": case,
                "case_visible": can_see_case(user, case),
                "before": before,
                "after": after,
                "kind": kinds[case_id],
                "kind_label": COMPARISON_KINDS[kinds[case_id]],
                "passage_moved": moved,
            }
        )
    return {
        "rows": rows,
        "counts": counts,
        "page": paged,
        "retrieval": [retrieval_figures_of(first), retrieval_figures_of(second)],
        "by_tool": by_tool_side_by_side(first, second),
        "fixed_case_ids": [case_id for case_id, kind in kinds.items() if kind == "fixed"],
    }


def by_tool_side_by_side(first: Evaluation, second: Evaluation) -> list[dict]:
    """The two evaluations' "By tool" rows joined on the tool: [{"tool", "first", "second"}] (a row
    absent from one run is None there); [] when neither has any."""
    joined: dict = {}
    for side, evaluation in (("first", first), ("second", second)):
        for row in by_tool_of(evaluation):
            joined.setdefault(row["tool"], {"tool": row["tool"], "first": None, "second": None})[side] = row
    return sorted(joined.values(), key=lambda row: (row["tool"] is None, row["tool"] or ""))


def available_models() -> list[str]:
    """The models an evaluation can name: the served base model and its fine-tuned adapters."""
    return chat_registry.available_models()
