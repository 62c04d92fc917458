"""HTTP API for failure cases and evaluations (Bearer tokens, JSON), so that a team's CI can
run its regression suite. Routes and answers are in README.md."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.throttle import ApiRefusal, api_user
from prompts import selectors as prompt_selectors
from studio.input_checks import InputError, parse_json

from . import exporting, selectors, services
from .models import Evaluation, FailureCase
from .tasks import dispatch_waiting
from .views import export_response


def _error(status, message):
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="studio"'
    return response


def _user_and_body(request, *, body=True):
    """(user, parsed body) or raises ApiRefusal / InputError."""
    user = api_user(request)
    return user, (parse_json(request.body or b"null") if body else None)


@csrf_exempt
@require_POST
def failure_cases(request):
    try:
        user, payload = _user_and_body(request)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    except InputError as exc:
        return _error(400, str(exc))
    rows = payload if isinstance(payload, list) else [payload]
    try:
        cases = services.cases_create(user=user, rows=rows, source=FailureCase.Source.API)
    except services.CaseError as exc:
        message = str(exc) if isinstance(payload, list) else str(exc).removeprefix("[0].")
        return _error(400, message)
    return JsonResponse({"ids": [case.pk for case in cases]}, status=201)


@require_GET
def failure_cases_export(request):
    try:
        user, _ = _user_and_body(request, body=False)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    export_format = request.GET.get("format", "sft")
    if export_format not in exporting.FORMATS:
        return _error(400, '"format" must be sft, dpo or csv.')
    filters = {k: v for k, v in selectors.clean_filters(request.GET).items() if k in ("prompt", "split", "tag")}
    return export_response(selectors.cases_for(user=user, filters=filters), export_format, filters)


def evaluation_json(evaluation: Evaluation, *, user) -> dict:
    """The evaluation and its results; a case its author made private since is a result without
    its output (`"private": true`) for everyone else."""
    results = evaluation.results.order_by("id").values("case_id", "output", "passed", "scores", "error",
                                                       "case__shared", "case__created_by_id")

    def result_json(r):
        if not (r["case__shared"] or r["case__created_by_id"] == user.pk):
            return {"case": r["case_id"], "passed": r["passed"], "private": True}
        return {"case": r["case_id"], "output": r["output"], "passed": r["passed"], "scores": r["scores"],
                **({"error": r["error"]} if r["error"] else {})}

    return {"id": evaluation.pk, "prompt": evaluation.prompt_version.prompt.slug,
            "version": evaluation.prompt_version.number, "model": evaluation.model_name,
            **evaluation.progress_dict(), "passed": evaluation.passed,
            "pass_rate": None if evaluation.pass_rate is None else round(evaluation.pass_rate, 4),
            "results": [result_json(r) for r in results]}


@csrf_exempt
@require_POST
def evaluations(request):
    try:
        user, body = _user_and_body(request)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    except InputError as exc:
        return _error(400, str(exc))
    if not isinstance(body, dict):
        return _error(400, 'Send a JSON object: {"prompt": "slug", "version": 2, "split": "eval", '
                           '"scorers": [{"type": "exact_match"}]}.')
    prompt = prompt_selectors.prompt_by_slug(body.get("prompt")) if isinstance(body.get("prompt"), str) else None
    if prompt is None:
        return _error(404 if isinstance(body.get("prompt"), str) else 400,
                      f"There is no prompt “{str(body.get('prompt'))[:100]}”." if body.get("prompt")
                      else '"prompt" (a slug) is required.')
    label, number = body.get("label"), body.get("version")
    if label is not None and not isinstance(label, str) or isinstance(number, (bool, list, dict, float)):
        return _error(400, '"version" must be a number and "label" text.')
    try:
        version = prompt_selectors.version_resolve(prompt, number=number, label=label)
    except prompt_selectors.VersionNotFound as exc:
        return _error(404, str(exc))
    model = body.get("model") or ""
    filters = {name: body[name] for name in ("split", "tag", "status") if isinstance(body.get(name), str)}
    try:
        evaluation = services.evaluation_create(user=user, version=version, model_name=model if isinstance(
            model, str) else "?", filters=filters, scorers=body.get("scorers", [{"type": "exact_match"}]))
    except services.EvaluationError as exc:
        return _error(429 if exc.field == "queue" else 400, str(exc))
    return JsonResponse({"id": evaluation.pk}, status=202)


def _evaluation(request, evaluation_id):
    user = api_user(request)
    evaluation = Evaluation.objects.select_related("prompt_version__prompt").filter(pk=evaluation_id).first()
    if evaluation is None or not selectors.can_see_evaluation(user, evaluation):
        return user, None
    return user, evaluation


@require_GET
def evaluation_detail(request, evaluation_id):
    try:
        user, evaluation = _evaluation(request, evaluation_id)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    if evaluation is None:
        return _error(404, f"There is no evaluation {evaluation_id}.")
    dispatch_waiting()
    selectors.evaluations_visible_to(evaluation.created_by)  # fails it if its worker died
    evaluation.refresh_from_db()
    return JsonResponse(evaluation_json(evaluation, user=user))


@csrf_exempt
@require_POST
def evaluation_cancel(request, evaluation_id):
    try:
        user, evaluation = _evaluation(request, evaluation_id)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    if evaluation is None:
        return _error(404, f"There is no evaluation {evaluation_id}.")
    try:
        services.evaluation_cancel(evaluation=evaluation, user=user)
    except services.CasePermissionError as exc:
        return _error(403, str(exc))
    return JsonResponse({"id": evaluation.pk, "status": evaluation.status})
