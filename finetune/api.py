"""`POST /api/fine-tunes/` and `GET /api/fine-tunes/<id>/`, for pipelines: a staff member's token.

Checked in this order: no valid token 401, not staff 403, an incomplete job 400 naming the
missing fields; then 202 `{"id"}`."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.throttle import ApiRefusal, api_user
from studio.input_checks import InputError, parse_json
from studio.jobs import fail_jobs_of_lost_workers

from . import services
from .models import FineTunedModel, FineTuneJob
from .tasks import dispatch_waiting


def _error(status, message):
    return JsonResponse({"error": message}, status=status)


def _staff(request):
    user = api_user(request)
    if not user.is_staff:
        raise ApiRefusal(403, "Fine-tuning is for staff: this token's user is not staff.")
    return user


def job_json(job: FineTuneJob) -> dict:
    model = FineTunedModel.objects.filter(job=job).values_list("name", flat=True).first()
    return {"id": job.pk, "name": job.name, "status": job.status, "step": job.done, "total_steps": job.total,
            "epoch": job.epoch, "losses": [{k: m[k] for k in ("step", "loss", "eval_loss") if k in m}
                                           for m in job.losses],
            "model": model, "base_model": job.base_model, "prompt": job.prompt.slug, "examples": job.example_count,
            "tokens_seen": job.tokens_seen, "tokens_per_s": job.tokens_per_s, "queue_position":
                services.queue_position(job), "elapsed_s": job.progress_dict()["elapsed_s"],
            "remaining_s": job.progress_dict()["remaining_s"], "error": job.error}


@csrf_exempt
@require_POST
def fine_tunes(request):
    try:
        user = _staff(request)
        body = parse_json(request.body or b"null")
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    except InputError as exc:
        return _error(400, str(exc))
    if not isinstance(body, dict):
        return _error(400, 'Send a JSON object, at least {"prompt": "slug"}.')
    missing = [name for name in ("prompt",) if not body.get(name)]
    if missing:
        return _error(400, f"Missing: {', '.join(missing)} (the prompt whose failure cases the job trains on).")
    filters = {name: str(body[name]) for name in ("split", "tag", "selection") if body.get(name) is not None}
    hyperparameters = body.get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        return _error(400, "hyperparameters: an object, e.g. {\"epochs\": 3, \"seed\": 1}.")
    unknown = sorted(set(hyperparameters) - set(services.DEFAULTS) - {"seed"})
    if unknown:
        return _error(400, f"hyperparameters.{str(unknown[0])[:40]}: not a hyperparameter; use "
                           f"{', '.join([*services.DEFAULTS, 'seed'])}.")
    try:
        job = services.job_create(user=user, name=str(body.get("name") or ""), prompt_slug=body["prompt"],
                                  filters=filters, objective=str(body.get("objective") or "sft"),
                                  method=str(body.get("method") or "lora"), hyperparameters=hyperparameters)
    except services.FineTuneError as exc:
        return _error(404 if exc.field == "prompt" and "no prompt" in exc.message else 400, str(exc))
    return JsonResponse({"id": job.pk}, status=202)


@require_GET
def fine_tune(request, job_id):
    try:
        _staff(request)
    except ApiRefusal as refusal:
        return _error(refusal.status, str(refusal))
    dispatch_waiting()
    fail_jobs_of_lost_workers(FineTuneJob)
    job = FineTuneJob.objects.select_related("prompt").filter(pk=job_id).first()
    if job is None:
        return _error(404, f"There is no fine-tune job {job_id}.")
    return JsonResponse(job_json(job))
