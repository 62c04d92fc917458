"""`POST /api/fine-tunes/` and `GET /api/fine-tunes/<id>/`, for pipelines: a staff member's token.

Checked in this order: no valid token 401, not staff 403, an incomplete job 400 naming the
missing fields; then 202 `{"id"}`."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from studio.errors import NotFound, StudioError

from . import services
from .models import FineTunedModel, FineTuneJob


def job_json(job: FineTuneJob) -> dict:
    model = FineTunedModel.objects.filter(job=job).values_list("name", flat=True).first()
    return {
        "id": job.pk,
        "name": job.name,
        "status": job.status,
        "step": job.done,
        "total_steps": job.total,
        "epoch": job.epoch,
        "losses": [{k: m[k] for k in ("step", "loss", "eval_loss") if k in m} for m in job.losses],
        "model": model,
        "base_model": job.base_model,
        "prompt": job.prompt.slug,
        "version": job.prompt_version.number if job.prompt_version else services.OWN_VERSION,
        "examples": job.example_count,
        "tokens_seen": job.tokens_seen,
        "tokens_per_s": job.tokens_per_s,
        "queue_position": services.queue_position(job),
        "elapsed_s": job.progress_dict()["elapsed_s"],
        "remaining_s": job.progress_dict()["remaining_s"],
        "error": job.error,
    }


@api_endpoint("POST", json_body=True, staff=True)
def fine_tunes(request, user, body):
    if not isinstance(body, dict):
        raise StudioError('Send a JSON object, at least {"prompt": "slug"}.')
    if not body.get("prompt"):
        raise StudioError("Missing: prompt (the prompt whose failure cases the job trains on).")
    filters = {name: str(body[name]) for name in ("split", "tag", "selection") if body.get(name) is not None}
    hyperparameters = body.get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise StudioError('an object, e.g. {"epochs": 3, "seed": 1}', "hyperparameters")
    unknown = sorted(set(hyperparameters) - set(services.DEFAULTS) - {"seed"})
    if unknown:
        raise StudioError(
            f"not a hyperparameter; use {', '.join([*services.DEFAULTS, 'seed'])}",
            f"hyperparameters.{str(unknown[0])[:40]}",
        )
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
        raise StudioError(f'a version number, or "{services.OWN_VERSION}" (each case\'s own version)', "version")
    job = services.job_create(
        user=user,
        name=str(body.get("name") or ""),
        prompt_slug=body["prompt"],
        filters=filters,
        objective=str(body.get("objective") or "sft"),
        method=str(body.get("method") or "lora"),
        hyperparameters=hyperparameters,
        version=version,
    )
    return JsonResponse({"id": job.pk}, status=202)


@api_endpoint("GET", staff=True)
def fine_tune(request, user, job_id):
    job = FineTuneJob.objects.select_related("prompt", "prompt_version").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"There is no fine-tune job {job_id}.")
    return JsonResponse(job_json(job))
