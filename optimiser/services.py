"""Writes to optimisations: start one (its input checked), cancel it, save its best candidate as
a new version, start the evaluation of that version on the held-out split."""

from __future__ import annotations

import random

from django.conf import settings
from django.db import transaction

from accounts.services import person_lock
from evals import selectors as case_selectors
from evals import services as eval_services
from evals.models import CaseSelection, Evaluation, FailureCase
from evals.runner import job_withdraw_cases
from evals.scorers import ScorerError, clean_scorers
from prompts import services as prompt_services
from prompts.rendering import pattern_error
from studio import jobs
from studio.errors import LimitReached, StudioError
from studio.jobs import job_cancel

from . import candidates as planning
from .models import Candidate, Optimisation
from .runner import job_key

MAX_BUDGET_CASES = 20_000
MAX_BUDGET_MINUTES = 240
BUDGET_SHAPE = 'must be {"cases": 1-20000} or {"minutes": 1-240}'


class OptimisationError(StudioError):
    """A request the optimiser refuses; `field` names what to fix."""


class OptimisationPermissionError(OptimisationError):
    status = 403


class OptimisationLimitReached(OptimisationError, LimitReached):
    status = 429


def clean_budget(raw) -> dict:
    if not isinstance(raw, dict) or len(raw) != 1 or not set(raw) <= {"cases", "minutes"}:
        raise OptimisationError(BUDGET_SHAPE, "budget")
    ((unit, value),) = raw.items()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OptimisationError(f"{unit} must be a whole number", f"budget.{unit}")
    high = MAX_BUDGET_CASES if unit == "cases" else MAX_BUDGET_MINUTES
    if not 1 <= value <= high:
        raise OptimisationError(
            f"must be from 1 to {high:,} (the optimiser stops starting candidates past it)", f"budget.{unit}"
        )
    return {unit: value}


def _clean_source(raw_split, raw_selection, *, user) -> tuple[dict, dict]:
    """({"split": "train"} or {"selection": id}, the case filters it stands for)."""
    if (raw_split is None) == (raw_selection is None):
        raise OptimisationError(
            'give "split": "train" or "selection": <id of your saved selection>, one of them', "split"
        )
    if raw_split is not None:
        if raw_split != FailureCase.Split.TRAIN:
            raise OptimisationError(
                'must be "train": the held-out split is never searched on (choose a selection '
                "to search on other cases)",
                "split",
            )
        return {"split": "train"}, {"split": "train"}
    selection_id = int(raw_selection) if isinstance(raw_selection, str) and raw_selection.isdigit() else raw_selection
    if (
        not isinstance(selection_id, int)
        or isinstance(selection_id, bool)
        or not CaseSelection.objects.filter(pk=selection_id, owner=user).exists()
    ):
        raise OptimisationError("there is no such saved selection of yours", "selection")
    return {"selection": selection_id}, {"selection": str(selection_id)}


def _clean_scorers(raw, version) -> list[dict]:
    try:
        clean = clean_scorers(raw, check_pattern=pattern_error)
    except ScorerError as exc:
        raise OptimisationError(str(exc), "scorers", code=exc.code) from None
    for spec in clean:
        if spec["type"] == "llm_judge":  # every candidate's every case would be judged by a second model call
            raise OptimisationError(
                "llm_judge cannot score an optimisation (it would double every candidate's "
                "cost); choose a scorer that reads the answer, e.g. json_equal",
                "scorers",
            )
        if spec["type"] == "json_schema" and not spec.get("schema") and version.answer_format["type"] != "json_schema":
            raise OptimisationError(
                "json_schema: give a schema, or optimise a version whose output format is a "
                "JSON Schema (its schema is the default)",
                "scorers",
            )
    return clean


def _model(raw, field: str) -> str:
    available = case_selectors.available_models()
    if raw in (None, ""):
        return available[0]
    if not isinstance(raw, str) or raw not in available:
        shown = raw[:100] if isinstance(raw, str) else "?"
        raise OptimisationError(f"“{shown}” is not a model served to you; choose one of {', '.join(available)}", field)
    return raw


def optimisation_create(*, user, version, split=None, selection=None, scorers, budget, model=None) -> Optimisation:
    """Queue an optimisation of `version` on the prompt's train cases (or a saved selection's) that
    `user` may see, scored by `scorers`, within `budget`; `model` proposes instruction rewrites
    (the served model by default). Refused with the reason for any bad input."""
    source, filters = _clean_source(split, selection, user=user)
    clean = _clean_scorers(scorers, version)
    budget = clean_budget(budget)
    rewrite_model = _model(model, "model")
    available = case_selectors.available_models()
    model_name = version.model_name if version.model_name in available else available[0]
    cases = case_selectors.cases_for(user=user, filters={**filters, "prompt": version.prompt.slug}).exclude(expected="")
    if "split" in source:  # a saved selection of held-out cases is the person's choice; the train split is not
        cases = cases.filter(split=FailureCase.Split.TRAIN)
    case_ids = list(cases.values_list("id", flat=True))
    if len(case_ids) < 2:
        where = "the train split" if "split" in source else "the selection"
        raise OptimisationError(
            f"{where} holds {len(case_ids)} approved case{'s' if len(case_ids) != 1 else ''} of "
            "this prompt with an expected answer that you can see; the optimiser needs at least "
            "2 (one to search on, one to check)",
            "selection" if "selection" in source else "split",
        )
    seed = random.Random(version.pk).randrange(2**31)
    search, check = planning.split_cases(case_ids, seed)
    one_pass = min(len(search), planning.SCORED_SEARCH_CASES) + min(len(check), planning.SCORED_CHECK_CASES)
    if budget.get("cases", one_pass) < one_pass:
        raise OptimisationError(
            f"{budget['cases']} cases cannot measure even the version itself: one pass over the "
            f"search and check parts takes {one_pass}",
            "budget.cases",
        )
    with transaction.atomic():
        person_lock(user)  # counted and created under the person's lock: simultaneous requests take turns
        running = Optimisation.objects.filter(created_by=user, status__in=jobs.ACTIVE).count()
        if running >= settings.OPTIMISER_MAX_QUEUED_PER_USER:
            raise OptimisationLimitReached(
                f"you already have {running} optimisation{'s' if running != 1 else ''} queued or running (at most "
                f"{settings.OPTIMISER_MAX_QUEUED_PER_USER}); wait for it to finish or cancel it",
                "queue",
            )
        optimisation = Optimisation.objects.create(
            prompt_version=version,
            source=source,
            case_ids=case_ids,
            search_case_ids=search,
            check_case_ids=check,
            seed=seed,
            scorers=clean,
            budget=budget,
            model_name=model_name,
            rewrite_model=rewrite_model,
            created_by=user,
        )
        transaction.on_commit(lambda: jobs.dispatch(Optimisation, optimisation.pk))
    return optimisation


def optimisation_cancel(*, optimisation: Optimisation, user) -> None:
    if optimisation.created_by_id != user.pk:
        raise OptimisationPermissionError("Only who started an optimisation can cancel it.")
    job_cancel(optimisation)


def commit_message(optimisation: Optimisation, candidate: Candidate) -> str:
    check = f"{candidate.check_score:.0%}" if candidate.check_score is not None else "not checked"
    search = f"{candidate.search_score:.0%}" if candidate.search_score is not None else "not measured"
    message = f"Optimised (optimisation #{optimisation.pk}): {candidate.description}; search {search}, check {check}"
    return message[:500]


def optimisation_save(*, optimisation: Optimisation, user):
    """The best candidate as a normal new version of the prompt (its commit message says how it was
    found); saving again returns the version saved the first time."""
    with transaction.atomic():
        # Two clicks at once would save two versions: the optimisation row is locked.
        optimisation = (
            Optimisation.objects.select_for_update()
            .select_related("prompt_version__prompt", "best", "saved_version")
            .get(pk=optimisation.pk)
        )
        if optimisation.saved_version is not None:
            return optimisation.saved_version
        candidate = optimisation.best
        if optimisation.active or candidate is None:
            raise OptimisationError("there is no best candidate yet: wait until the optimisation ends", "best")
        if candidate.kind == Candidate.Kind.BASE:
            raise OptimisationError(
                f"the best candidate is version {optimisation.prompt_version.number} as it is: "
                "there is nothing new to save",
                "best",
            )
        base = optimisation.prompt_version
        fields = planning.saved_fields(base, candidate.changes, optimisation.source)
        fields["commit_message"] = commit_message(optimisation, candidate)
        try:
            version = prompt_services.version_create(prompt=base.prompt, author=user, fields=fields)
        except prompt_services.PromptPermissionError as exc:
            raise OptimisationPermissionError(str(exc)) from None
        except prompt_services.PromptError as exc:
            raise OptimisationError(f"the best candidate cannot be saved: {exc}", "best") from None
        Optimisation.objects.filter(pk=optimisation.pk).update(saved_version=version)
    return version


def evaluate_held_out(*, optimisation: Optimisation, user) -> Evaluation:
    """A normal evaluation of the saved version on the held-out (eval) split, with the same scorers."""
    if optimisation.saved_version_id is None:
        raise OptimisationError("save the best candidate as a new version first", "version")
    try:
        evaluation = eval_services.evaluation_create(
            user=user,
            version=optimisation.saved_version,
            model_name=optimisation.model_name,
            filters={"split": FailureCase.Split.EVAL},
            scorers=optimisation.scorers,
        )
    except eval_services.CaseError as exc:
        raise OptimisationError(str(exc), exc.field, status=exc.status) from None
    Optimisation.objects.filter(pk=optimisation.pk).update(held_out_evaluation=evaluation)
    optimisation.held_out_evaluation = evaluation
    return evaluation


def jobs_sweep() -> None:
    """The sweeper's part for optimisations (studio.sweeping): undelivered ones sent again, those of a
    dead job worker failed (what they measured is kept); their replies still waiting are withdrawn."""
    for optimisation_id in jobs.jobs_sweep(Optimisation):
        job_withdraw_cases(job_key(optimisation_id))
