"""HTTP API for failure cases and evaluations (Bearer tokens, JSON), so that a team's CI can
run its regression suite. Routes and answers are in README.md."""

from django.core.paginator import EmptyPage, Paginator
from django.http import JsonResponse

from accounts.api import api_endpoint
from prompts import selectors as prompt_selectors
from studio.errors import NotFound, StudioError

from . import exporting, selectors, services
from .models import Evaluation, FailureCase
from .views import export_response

EVALUATION_SHAPE = (
    'Send a JSON object: {"prompt": "slug", "version": 2, "split": "eval", "scorers": [{"type": "exact_match"}]}.'
)


@api_endpoint("POST", json_body=True)
def failure_cases(request, user, payload):
    rows = payload if isinstance(payload, list) else [payload]
    try:
        # Private unless a row says "shared": true (the one default of every new case).
        cases = services.cases_create(
            user=user, rows=rows, source=FailureCase.Source.API, shared=None, numbered=isinstance(payload, list)
        )  # one case: its field alone
    except services.CaseError as exc:
        raise StudioError(exc.message, exc.field, code=exc.code) from None
    return JsonResponse({"ids": [case.pk for case in cases]}, status=201)


@api_endpoint("GET")
def failure_cases_export(request, user):
    export_format = request.GET.get("format", "sft")
    if export_format not in exporting.FORMATS:
        raise StudioError('"format" must be sft, dpo or csv.')
    filters = {k: v for k, v in selectors.clean_filters(request.GET).items() if k in ("prompt", "split", "tag")}
    return export_response(selectors.cases_for(user=user, filters=filters), export_format, filters)


def evaluation_json(evaluation: Evaluation, *, user, page: int = 1, page_url=None) -> dict:
    """The evaluation, its counts, and one page of its results (selectors.RESULTS_PER_PAGE, in the
    order they were stored; `page_url(n)` links the next and previous pages). A case its author made
    private since is a result without its output (`"private": true`) for everyone else."""
    results = evaluation.results.order_by("id").values(
        "case_id",
        "output",
        "passed",
        "scores",
        "reasons",
        "error",
        "error_code",
        "verdict",
        "case__shared",
        "case__created_by_id",
        "example_cases",
    )
    paginator = Paginator(results, selectors.RESULTS_PER_PAGE)
    try:
        shown = paginator.page(page)
    except EmptyPage:
        raise NotFound(f"There is no page {page} of results: there are {paginator.num_pages}.") from None

    def result_json(r):
        if not (r["case__shared"] or r["case__created_by_id"] == user.pk):
            return {"case": r["case_id"], "passed": r["passed"], "private": True}
        return {
            "case": r["case_id"],
            "output": r["output"],
            "passed": r["passed"],
            "scores": r["scores"],
            **({"reasons": r["reasons"]} if r["reasons"] else {}),
            "example_cases": r["example_cases"],
            **({"error": r["error"]} if r["error"] else {}),
            **({"error_code": r["error_code"]} if r["error_code"] and not r["verdict"] else {}),
        }

    link = page_url or (lambda number: None)
    return {
        "id": evaluation.pk,
        "prompt": evaluation.prompt_version.prompt.slug,
        "version": evaluation.prompt_version.number,
        "model": evaluation.model_name,
        **evaluation.progress_dict(),
        "passed": evaluation.passed,
        "errored": evaluation.errored,
        "retried": evaluation.retried,
        "model_errors_note": evaluation.model_errors_note,
        "pass_rate": None if evaluation.pass_rate is None else round(evaluation.pass_rate, 4),
        "retrieval": selectors.retrieval_figures_of(evaluation),
        "by_tool": selectors.by_tool_of(evaluation),
        "results_count": paginator.count,
        "page": shown.number,
        "pages": paginator.num_pages,
        "next": link(shown.number + 1) if shown.has_next() else None,
        "previous": link(shown.number - 1) if shown.has_previous() else None,
        "results": [result_json(r) for r in shown.object_list],
    }


@api_endpoint("POST", json_body=True)
def evaluations(request, user, body):
    if not isinstance(body, dict):
        raise StudioError(EVALUATION_SHAPE)
    slug = body.get("prompt")
    if not isinstance(slug, str) or not slug:
        raise StudioError('"prompt" (a slug) is required.')
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug[:100]}”.")
    label, number = body.get("label"), body.get("version")
    if label is not None and not isinstance(label, str) or isinstance(number, (bool, list, dict, float)):
        raise StudioError('"version" must be a number and "label" text.')
    try:
        version = prompt_selectors.version_resolve(prompt, number=number, label=label)
    except prompt_selectors.VersionNotFound as exc:
        raise NotFound(str(exc)) from None
    model = body.get("model") or ""
    filters = {name: body[name] for name in ("split", "tag", "status") if isinstance(body.get(name), str)}
    evaluation = services.evaluation_create(
        user=user,
        version=version,
        model_name=model if isinstance(model, str) else "?",
        filters=filters,
        scorers=body.get("scorers", [{"type": "exact_match"}]),
    )
    return JsonResponse({"id": evaluation.pk}, status=202)


def _evaluation_or_404(user, evaluation_id) -> Evaluation:
    evaluation = Evaluation.objects.select_related("prompt_version__prompt").filter(pk=evaluation_id).first()
    if evaluation is None or not selectors.can_see_evaluation(user, evaluation):
        raise NotFound(f"There is no evaluation {evaluation_id}.")
    return evaluation


@api_endpoint("GET")
def evaluation_detail(request, user, evaluation_id):
    """One page of results a request (`?page=N`, 50 a page): 10,000 results were 1.5 MB in one answer."""
    page = request.GET.get("page", "1")
    if not page.isdigit() or int(page) < 1:
        raise StudioError('"page" must be a whole number from 1.', "page")
    evaluation = _evaluation_or_404(user, evaluation_id)
    return JsonResponse(
        evaluation_json(
            evaluation, user=user, page=int(page), page_url=lambda number: request.build_absolute_uri(f"?page={number}")
        )
    )


@api_endpoint("POST")
def evaluation_cancel(request, user, evaluation_id):
    evaluation = _evaluation_or_404(user, evaluation_id)
    services.evaluation_cancel(evaluation=evaluation, user=user)
    return JsonResponse({"id": evaluation.pk, "status": evaluation.status})
