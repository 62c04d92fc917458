"""Reads of optimisations: who sees one (the person who started it: its candidates show the
inputs of their private cases too), and its leaderboard."""

from __future__ import annotations

from .models import Candidate, Optimisation


def optimisation_for(user, optimisation_id) -> Optimisation | None:
    """The optimisation if `user` started it; None otherwise (someone else's looks like none)."""
    return (
        Optimisation.objects.select_related(
            "prompt_version__prompt", "best", "saved_version", "created_by", "held_out_evaluation"
        )
        .filter(pk=optimisation_id, created_by_id=getattr(user, "pk", None))
        .first()
    )


def optimisations_of(user, *, prompt=None):
    found = Optimisation.objects.filter(created_by=user).select_related("prompt_version__prompt", "best")
    return found.filter(prompt_version__prompt=prompt) if prompt is not None else found


def leaderboard(optimisation: Optimisation) -> list[Candidate]:
    """Its candidates in the order they were tried (the page marks the best)."""
    return list(optimisation.candidates.defer("outcomes"))


def candidate_json(candidate: Candidate) -> dict:
    return {
        "id": candidate.pk,
        "position": candidate.position,
        "kind": candidate.kind,
        "description": candidate.description,
        "status": candidate.status,
        "reason": candidate.reason,
        "search_score": _rounded(candidate.search_score),
        "check_score": _rounded(candidate.check_score),
        "search_cases": candidate.search_scored,
        "check_cases": candidate.check_scored,
        "tokens": candidate.tokens,
    }


def optimisation_json(optimisation: Optimisation) -> dict:
    """The API's answer (README, "The optimiser"): progress, the leaderboard, the best."""
    return {
        "id": optimisation.pk,
        "prompt": optimisation.prompt_version.prompt.slug,
        "version": optimisation.prompt_version.number,
        **optimisation.progress_dict(),
        "source": optimisation.source,
        "budget": optimisation.budget,
        "model": optimisation.model_name,
        "rewrite_model": optimisation.rewrite_model,
        "search_cases": len(optimisation.search_case_ids),
        "check_cases": len(optimisation.check_case_ids),
        "candidates": [candidate_json(candidate) for candidate in leaderboard(optimisation)],
        "best": {
            "candidate": optimisation.best_id,
            "version": optimisation.saved_version.number if optimisation.saved_version_id else None,
        },
        "held_out_evaluation": optimisation.held_out_evaluation_id,
    }


def _rounded(value):
    return None if value is None else round(value, 4)
