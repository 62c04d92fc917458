"""Pages of the optimiser: the form ("Optimise" on a version page), the optimisation page with its
progress (htmx polling, as an evaluation's page), its leaderboard and the best candidate's actions."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evals import selectors as case_selectors
from evals.models import CaseSelection
from evals.scorers import DEFAULT_THRESHOLDS, LABELS, SCORER_TYPES
from prompts import selectors as prompt_selectors

from . import selectors, services
from .candidates import CHECKED, MAX_REWRITE_CHARS

FORM_SCORERS = tuple(kind for kind in SCORER_TYPES if kind != "llm_judge")


def _optimisation_or_404(request, optimisation_id):
    optimisation = selectors.optimisation_for(request.user, optimisation_id)
    if optimisation is None:
        raise Http404("No such optimisation.")
    return optimisation


@login_required
@require_http_methods(["GET", "POST"])
def optimisation_new(request):
    source = request.POST if request.method == "POST" else request.GET
    values = {
        name: source.get(name, "")
        for name in ("prompt", "version", "cases_from", "selection", "budget_unit", "budget", "model")
    }
    values["cases_from"] = values["cases_from"] or "train"
    values["budget_unit"] = values["budget_unit"] or "minutes"
    values["budget"] = values["budget"] or "20"
    chosen = source.getlist("scorer") or ["json_equal"]
    prompt = prompt_selectors.prompt_by_slug(values["prompt"]) if values["prompt"] else None
    if prompt is None:
        raise Http404("Choose a prompt's version to optimise (its page has “Optimise”).")
    error = ""
    if request.method == "POST":
        try:
            version = prompt_selectors.version_resolve(prompt, number=values["version"] or None)
            budget = {values["budget_unit"]: values["budget"].strip()}
            optimisation = services.optimisation_create(
                user=request.user,
                version=version,
                scorers=[{"type": kind} for kind in chosen],
                budget=budget,
                split="train" if values["cases_from"] == "train" else None,
                selection=values["selection"] if values["cases_from"] == "selection" else None,
                model=values["model"] or None,
            )
        except prompt_selectors.VersionNotFound as exc:
            error = str(exc)
        except services.OptimisationError as exc:
            error = str(exc)
        else:
            return redirect(optimisation)
    return render(
        request,
        "optimiser/optimisation_new.html",
        {
            "prompt": prompt,
            "values": values,
            "chosen": chosen,
            "error": error,
            "models": case_selectors.available_models(),
            "scorer_choices": [(kind, *LABELS[kind], DEFAULT_THRESHOLDS[kind]) for kind in FORM_SCORERS],
            "selections": CaseSelection.objects.filter(owner=request.user),
        },
        status=400 if error else 200,
    )


def _context(request, optimisation, **extra) -> dict:
    return {
        "optimisation": optimisation,
        "candidates": selectors.leaderboard(optimisation),
        "checked": CHECKED,
        "max_rewrite_chars": MAX_REWRITE_CHARS,
        "can_save": optimisation.prompt_version.prompt.can_edit(request.user),
        **extra,
    }


@login_required
@require_GET
def optimisation_detail(request, optimisation_id):
    optimisation = _optimisation_or_404(request, optimisation_id)
    return render(request, "optimiser/optimisation_detail.html", _context(request, optimisation))


@login_required
@require_GET
def optimisation_progress(request, optimisation_id):
    """Polled every second while it runs: progress and the leaderboard."""
    optimisation = _optimisation_or_404(request, optimisation_id)
    return render(request, "optimiser/_optimisation_live.html", _context(request, optimisation))


@login_required
@require_POST
def optimisation_cancel(request, optimisation_id):
    optimisation = _optimisation_or_404(request, optimisation_id)
    services.optimisation_cancel(optimisation=optimisation, user=request.user)
    return render(request, "optimiser/_optimisation_live.html", _context(request, optimisation))


@login_required
@require_POST
def optimisation_save(request, optimisation_id):
    optimisation = _optimisation_or_404(request, optimisation_id)
    try:
        services.optimisation_save(optimisation=optimisation, user=request.user)
    except services.OptimisationError as exc:
        return render(
            request,
            "optimiser/_optimisation_live.html",
            _context(request, optimisation, error=str(exc)),
            status=exc.status,
        )
    return render(
        request, "optimiser/_optimisation_live.html", _context(request, _optimisation_or_404(request, optimisation_id))
    )


@login_required
@require_POST
def evaluate_held_out(request, optimisation_id):
    optimisation = _optimisation_or_404(request, optimisation_id)
    try:
        services.evaluate_held_out(optimisation=optimisation, user=request.user)
    except services.OptimisationError as exc:
        return render(
            request,
            "optimiser/_optimisation_live.html",
            _context(request, optimisation, error=str(exc)),
            status=exc.status,
        )
    return render(
        request, "optimiser/_optimisation_live.html", _context(request, _optimisation_or_404(request, optimisation_id))
    )
