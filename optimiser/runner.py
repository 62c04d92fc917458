"""Running an optimisation in a job worker of the evaluations lane: each candidate (optimiser/
candidates.py) answered by the model workers and scored exactly as an evaluation is
(evals.runner.answers_from_model_workers and reply_scores), on the search part; then the best
few by search score on the check part; the best by check score is proposed.

Only the cases the optimisation was given are ever answered: with the train split, no held-out
case is scored (nor is one an example: the nearest examples are chosen among the search part).
Progress counts every candidate's cases; cancel keeps what was measured; the budget stops the
search from starting a candidate that would pass it (the check part's cost is kept aside).
"""

from __future__ import annotations

import logging
import time

from chat.models import Message
from evals.models import FailureCase
from evals.prompting import case_examples, case_messages, case_retrieval, read_by_model
from evals.runner import (
    Cancelled,
    NoModelWorker,
    answers_from_model_workers,
    decoding_parameters,
    reply_scores,
    similarity_for,
)
from evals.selectors import cases_visible_to
from prompts.rendering import MissingVariablesError, TemplateError
from studio.jobs import JobStatus, job_claim, job_end, job_progress

from . import candidates as planning
from .models import Candidate, Optimisation

log = logging.getLogger("optimiser")


class BudgetSpent(Exception):
    pass


def job_key(optimisation_id: int) -> str:
    return f"optimisation:{optimisation_id}"


def run_optimisation(optimisation_id: int) -> None:
    optimisation = (
        Optimisation.objects.select_related("prompt_version__prompt", "created_by").filter(pk=optimisation_id).first()
    )
    if optimisation is None or not job_claim(optimisation):
        return  # cancelled while queued, or delivered twice
    try:
        Search(optimisation).run()
    except Cancelled:
        _choose_best(optimisation)
        job_end(optimisation, JobStatus.CANCELLED)
    except Exception as exc:
        log.exception("optimisation %s failed", optimisation_id)
        _choose_best(optimisation)
        job_end(optimisation, JobStatus.FAILED, error=_describe(exc))
    else:
        job_end(optimisation, JobStatus.FINISHED)


def _describe(exc: Exception) -> str:
    if isinstance(exc, NoModelWorker):
        text = f"No model worker could answer: {exc}"
    else:
        text = str(exc) or exc.__class__.__name__
    text = text if text.endswith(".") else text + "."
    return text + " The candidates measured so far are kept."


class Search:
    def __init__(self, optimisation: Optimisation):
        self.optimisation = optimisation
        self.base = optimisation.prompt_version
        self.user = optimisation.created_by
        self.source = optimisation.source
        self.done = 0
        self.started = time.monotonic()
        self.pace = 0.0  # seconds a case took in the last candidate measured
        self.retrieval: dict[int, dict | None] = {}  # case id → what the version's retrieval finds

    # --- the cases -----------------------------------------------------------------------------

    def usable(self, case_ids: list[int]) -> list[FailureCase]:
        """Those of `case_ids` the person may still use (a case made private meanwhile, deleted or
        sent back to review stops being used, as in evaluations), in that order."""
        found = {
            case.pk: case
            for case in cases_visible_to(self.user)
            .filter(pk__in=case_ids, review=FailureCase.Review.APPROVED)
            .exclude(expected="")
            .select_related("prompt_version__prompt")
        }
        return [found[pk] for pk in case_ids if pk in found]

    # --- the search ------------------------------------------------------------------------------

    def run(self) -> None:
        optimisation = self.optimisation
        search = self.usable(optimisation.search_case_ids)
        plan = planning.planned(self.base, search, rewrite_model=optimisation.rewrite_model)
        check_size = min(len(optimisation.check_case_ids), planning.SCORED_CHECK_CASES)
        # One check is kept aside while searching (the best by search score is always checked);
        # the next best are checked only while the budget allows: keeping three checks aside left
        # a 15-minute budget on a loaded 2-core CPU to measure nothing but the version itself.
        self.reserve = check_size
        candidates = Candidate.objects.bulk_create(
            [
                Candidate(
                    optimisation=optimisation,
                    position=n,
                    kind=step["kind"],
                    description=step["description"],
                    changes=step["changes"],
                )
                for n, step in enumerate(plan, start=1)
            ]
        )
        fixed_k = {candidate.pk: step.get("k") for candidate, step in zip(candidates, plan)}
        scored_size = min(len(search), planning.SCORED_SEARCH_CASES)
        job_progress(optimisation, done=0, total=len(plan) * scored_size + self.reserve, note="")
        for candidate in candidates:
            search = self.usable(optimisation.search_case_ids)  # cases made private since drop out
            scored = search[: planning.SCORED_SEARCH_CASES]  # a sample: the parts are shuffled
            if candidate.kind != Candidate.Kind.BASE and not self.fits(len(scored)):  # before a rewrite is asked for
                self.skip(candidate, "the budget ran out before it")
                continue
            if not self.prepare(candidate, search, fixed_k.get(candidate.pk), candidates):
                continue
            self.score(candidate, "search", scored, pool=[case.pk for case in search])
        self.check(candidates)
        _choose_best(optimisation)

    def prepare(self, candidate: Candidate, search: list[FailureCase], k: int | None, candidates) -> bool:
        """Fill in what a candidate changes when it is reached; False when it is refused or skipped."""
        scored = [c for c in candidates if c.status == Candidate.Status.SCORED]
        base = next((c for c in scored if c.kind == Candidate.Kind.BASE), None)
        if candidate.kind == Candidate.Kind.FIXED:
            failed = {int(pk) for pk, passed in (base.outcomes.get("search", {}) if base else {}).items() if not passed}
            examples = planning.coverage_set(self.base, search, failed, k, user=self.user)
            if len(examples) < 1:
                self.skip(candidate, "no case of the search part can be an example of this template")
                return False
            candidate.changes = {"examples": examples}
        elif candidate.kind == Candidate.Kind.REWRITE:
            instructions, reason = self.rewrite(candidate, base, search)
            if reason:
                self.refuse(candidate, reason)
                return False
            candidate.changes = {"instructions": instructions}
        elif candidate.kind == Candidate.Kind.FORMAT:
            best_examples = _best_by_search(
                c for c in scored if c.kind in (Candidate.Kind.NEAREST, Candidate.Kind.FIXED)
            )
            changes = dict(best_examples.changes) if best_examples else {}
            candidate.changes = {**changes, "output_format": {"type": "text"}}
            candidate.description = (
                "free output (no format)" + (f" with {best_examples.description}" if best_examples else "")
            )[:300]
        elif candidate.kind == Candidate.Kind.COMBINED:
            examples = _best_by_search(
                c for c in scored if c.kind in (Candidate.Kind.NEAREST, Candidate.Kind.FIXED, Candidate.Kind.FORMAT)
            )
            instructions = _best_by_search(c for c in scored if c.kind == Candidate.Kind.REWRITE)
            if instructions is None or base is None or _key(instructions) <= _key(base):
                self.skip(candidate, "no rewrite scored above the version's own instructions")
                return False
            if examples is None:
                self.skip(candidate, "no examples candidate was measured")
                return False
            candidate.changes = {**examples.changes, "instructions": instructions.changes["instructions"]}
            candidate.description = f"{instructions.description} with {examples.description}"[:300]
        candidate.save(update_fields=["changes", "description"])
        return True

    def rewrite(self, candidate: Candidate, base: Candidate | None, search: list[FailureCase]) -> tuple[str, str]:
        """New instructions from the rewriting model, shown the base's failures; ("", reason) when refused."""
        by_id = {case.pk: case for case in search}
        failed = [
            int(pk)
            for pk, passed in (base.outcomes.get("search", {}) if base else {}).items()
            if not passed and int(pk) in by_id
        ]
        answers = base.outcomes.get("answers", {}) if base else {}
        failures = [
            (planning.user_turn(by_id[pk], self.base), by_id[pk].expected, answers.get(str(pk), ""))
            for pk in failed[: planning.MAX_FAILURES_SHOWN]
        ]
        angle = 1 + (candidate.position - 1) % planning.REWRITES
        job_progress(self.optimisation, note=self.note(candidate, "asking for a rewrite"))
        parameters = {
            "max_new_tokens": planning.REWRITE_MAX_NEW_TOKENS,
            "temperature": 0.0,
            "top_p": 1.0,
            "stop": [],
            "seed": 0,
            "min_new_tokens": 1,
        }
        reply = list(
            self.answers(
                [planning.rewrite_request(self.base, failures, angle)],
                parameters,
                model_name=self.optimisation.rewrite_model,
            )
        )[0][1]
        if reply.status == Message.Status.FAILED:
            return "", f"the rewriting model gave no answer: {reply.error or 'it failed'}"
        return planning.rewritten_instructions(reply.content)

    def fits(self, size: int) -> bool:
        """Whether one more candidate over `size` cases stays within the budget, what is kept aside
        (`reserve`, one check while searching) included."""
        budget = self.optimisation.budget
        if "cases" in budget:
            return self.done + size + self.reserve <= budget["cases"]
        elapsed = time.monotonic() - self.started
        # Seconds a case of the last candidate measured, not the average so far: the version alone
        # (no examples) answers faster than a candidate with eight.
        return elapsed + self.pace * (size + self.reserve) <= budget["minutes"] * 60

    def check(self, candidates) -> None:
        """The best CHECKED by search score, each scored on the check part."""
        scored = [c for c in candidates if c.status == Candidate.Status.SCORED and c.search_scored]
        best = sorted(scored, key=_key, reverse=True)[: planning.CHECKED]
        check = self.usable(self.optimisation.check_case_ids)[: planning.SCORED_CHECK_CASES]
        self.reserve = 0
        self._total(len(best) * len(check) - len(check))  # the one check kept aside is counted already
        pool = [case.pk for case in self.usable(self.optimisation.search_case_ids)]
        for n, candidate in enumerate(best):
            if n and not self.fits(len(check)):  # the best by search is always checked
                self._total(-len(check) * (len(best) - n))
                for unchecked in best[n:]:
                    unchecked.reason = "not checked: the budget ran out"
                    unchecked.save(update_fields=["reason"])
                break
            self.score(candidate, "check", check, pool=pool)

    # --- scoring -------------------------------------------------------------------------------

    def score(self, candidate: Candidate, part: str, cases: list[FailureCase], *, pool: list[int]) -> None:
        """Every case of `part` answered with the candidate and scored; counts stored as they come."""
        version = planning.candidate_version(self.base, candidate.changes, self.source)
        fixed = candidate.changes.get("examples") if isinstance(candidate.changes.get("examples"), list) else None
        conversations, runnable = [], []
        for case in cases:
            if case.pk not in self.retrieval:
                self.retrieval[case.pk] = case_retrieval(case, self.base, user=self.user)
            if fixed is not None:  # leave-one-out: a case never sees itself as an example
                examples = [e for e in fixed if e.get("case") != case.pk]
            else:
                examples = case_examples(case, version, user=self.user, pool_case_ids=pool)[0]
            try:
                conversations.append(
                    case_messages(
                        case, version, examples=examples, retrieval=read_by_model(self.retrieval[case.pk], version)
                    )
                )
                runnable.append(case)
            except (MissingVariablesError, TemplateError):  # a case the template cannot take: a fail, as in evaluations
                self._count(candidate, part, case, passed=False, reply=None)
        candidate.status = Candidate.Status.RUNNING
        if part == "check":
            candidate.checked = True
        candidate.save(update_fields=["status", "checked"])
        position = f"{candidate.position} of {self.optimisation.candidates.count()}"
        note = (
            f"candidate {position}: {candidate.description}"
            if part == "search"
            else f"checking candidate {position}: {candidate.description}"
        )
        job_progress(self.optimisation, note=note)
        similarity = similarity_for(self.optimisation.scorers)
        started = time.monotonic()
        for index, reply in self.answers(
            conversations, decoding_parameters(version), model_name=self.optimisation.model_name
        ):
            case = runnable[index]
            if reply.status == Message.Status.FAILED:
                self._count(candidate, part, case, passed=None, reply=reply)
                continue
            # A json_schema scorer without a schema judges by the base version's, whatever format a
            # candidate decodes with (free output must meet the schema it drops).
            _, passed, _ = reply_scores(
                self.optimisation.scorers, self.base, reply.content, case.expected, similarity=similarity
            )
            self._count(candidate, part, case, passed=passed, reply=reply)
        candidate.status = Candidate.Status.SCORED
        candidate.save(update_fields=["status"])
        if runnable:
            self.pace = (time.monotonic() - started) / len(runnable)

    def _count(self, candidate: Candidate, part: str, case: FailureCase, *, passed: bool | None, reply) -> None:
        outcomes = candidate.outcomes.setdefault(part, {})
        if passed is not None:  # None: the model never answered (an error, left out of the score)
            outcomes[str(case.pk)] = passed
            setattr(candidate, f"{part}_scored", getattr(candidate, f"{part}_scored") + 1)
            setattr(candidate, f"{part}_passed", getattr(candidate, f"{part}_passed") + passed)
        if reply is not None and part == "search":
            candidate.tokens += (reply.prompt_tokens or 0) + (reply.completion_tokens or 0)
            if candidate.kind == Candidate.Kind.BASE and not passed:  # what the rewriting model is shown
                candidate.outcomes.setdefault("answers", {})[str(case.pk)] = reply.content[:2_000]
        candidate.save(update_fields=["outcomes", f"{part}_scored", f"{part}_passed", "tokens"])
        self.done += 1
        if job_progress(self.optimisation, done=self.done):
            raise Cancelled

    def answers(self, conversations: list[list[dict]], parameters: dict, *, model_name: str):
        optimisation = self.optimisation

        def count_retry():
            pass  # a lost reply asked again is the model's failure, not the candidate's: not counted

        return answers_from_model_workers(
            optimisation,
            conversations,
            parameters,
            owner=self.user,
            model_name=model_name,
            key=job_key(optimisation.pk),
            title=f"Optimisation {optimisation.pk}",
            count_retry=count_retry,
        )

    # --- bookkeeping ---------------------------------------------------------------------------

    def note(self, candidate: Candidate, doing: str) -> str:
        return f"candidate {candidate.position} of {self.optimisation.candidates.count()}: {doing}"

    def skip(self, candidate: Candidate, reason: str) -> None:
        self._end(candidate, Candidate.Status.SKIPPED, reason)

    def refuse(self, candidate: Candidate, reason: str) -> None:
        self._end(candidate, Candidate.Status.REFUSED, reason)

    def _end(self, candidate: Candidate, status: str, reason: str) -> None:
        candidate.status, candidate.reason = status, reason
        candidate.save(update_fields=["status", "reason"])
        self._total(-len(self.optimisation.search_case_ids))  # its cases will not be answered

    def _total(self, change: int) -> None:
        if change:
            Optimisation.objects.filter(pk=self.optimisation.pk).update(
                total=max(self.optimisation_total() + change, self.done)
            )

    def optimisation_total(self) -> int:
        return Optimisation.objects.filter(pk=self.optimisation.pk).values_list("total", flat=True).first() or 0


def _key(candidate: Candidate) -> tuple:
    """Higher is better: search score, then fewer tokens."""
    return (candidate.search_score or 0.0, -candidate.tokens)


def _best_by_search(candidates) -> Candidate | None:
    measured = [c for c in candidates if c.search_scored]
    return max(measured, key=_key) if measured else None


def _choose_best(optimisation: Optimisation) -> None:
    """The best by check score among those checked (ties: search score, then fewer tokens); before
    any check (cancelled, failed), the best by search score."""
    measured = list(optimisation.candidates.filter(search_scored__gt=0))
    checked = [c for c in measured if c.checked and c.check_scored]
    if checked:
        best = max(checked, key=lambda c: (c.check_score or 0.0, *_key(c)))
    else:
        best = max(measured, key=_key) if measured else None
    Optimisation.objects.filter(pk=optimisation.pk).update(best=best)
    optimisation.best = best
