"""`POST /api/fine-tunes/` and `GET /api/fine-tunes/<id>/`, for pipelines: a staff member's token;
and the embedder fine-tunes of a knowledge base (`POST /api/knowledge/<id>/embedder-fine-tunes/`,
`GET /api/embedder-fine-tunes/<id>/`, its cancel and its use).

Checked in this order: no valid token 401, not staff 403, an incomplete job 400 naming the
missing fields; then 202 `{"id"}`."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from studio.errors import NotFound, StudioError

from . import embedder_services, services
from .models import EmbedderFineTune, FineTunedModel, FineTuneJob


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


# --- embedder fine-tunes ---------------------------------------------------------------------------


def embedder_job_json(job: EmbedderFineTune) -> dict:
    tuned = getattr(job, "result", None)
    return {
        "id": job.pk,
        "status": job.status,
        "progress": {"done": job.done, "total": job.total, "note": job.note},
        "knowledge_base": job.knowledge_base_id,
        "retrieval_test": job.retrieval_test_id,
        "held_out_questions": len(job.held_out),
        "start_embedder": job.start_embedder,
        "recall_before": job.recall_before,
        "recall_after": job.recall_after,
        "mrr_before": job.mrr_before,
        "mrr_after": job.mrr_after,
        "pairs": job.pairs,
        "hyperparameters": job.hyperparameters,
        "generate_questions": job.generate or None,
        "embedder": tuned.pinned_name if tuned is not None else None,
        "elapsed_s": job.progress_dict()["elapsed_s"],
        "error": job.error,
    }


@api_endpoint("POST", json_body=True, staff=True, body_hint=embedder_services.SHAPE)
def embedder_fine_tunes(request, user, body, knowledge_base_id):
    if not isinstance(body, dict):
        raise StudioError(embedder_services.SHAPE)
    unknown = sorted(
        set(body) - {"retrieval_test", "held_out", "generate_questions", *embedder_services.HYPERPARAMETERS}
    )
    if unknown:
        raise StudioError(f"not a setting of an embedder fine-tune. {embedder_services.SHAPE}", str(unknown[0])[:40])
    job = embedder_services.embedder_fine_tune_create(
        user=user,
        knowledge_base_id=knowledge_base_id,
        retrieval_test=body.get("retrieval_test"),
        held_out=body.get("held_out"),
        generate_questions=body.get("generate_questions"),
        hyperparameters={name: body.get(name) for name in embedder_services.HYPERPARAMETERS},
    )
    return JsonResponse({"id": job.pk}, status=201)


@api_endpoint("GET", staff=True)
def embedder_fine_tune(request, user, job_id):
    return JsonResponse(embedder_job_json(embedder_services.embedder_fine_tune_for(user=user, job_id=job_id)))


@api_endpoint("POST", staff=True)
def embedder_fine_tune_cancel(request, user, job_id):
    job = embedder_services.embedder_fine_tune_for(user=user, job_id=job_id)
    embedder_services.embedder_fine_tune_cancel(user=user, job=job)
    return JsonResponse(embedder_job_json(job))


@api_endpoint("POST", staff=True)
def embedder_fine_tune_use(request, user, job_id):
    """The tuned embedder pinned by its base, through a rebuild: 202 with the documents queued."""
    job = embedder_services.embedder_fine_tune_for(user=user, job_id=job_id)
    tuned = getattr(job, "result", None)
    if tuned is None:
        raise StudioError("This fine-tune has no tuned embedder (it has not finished).", "status", status=409)
    queued = embedder_services.embedder_use(user=user, tuned=tuned)
    return JsonResponse(
        {"knowledge_base": job.knowledge_base_id, "embedding_model": tuned.pinned_name, "documents": queued},
        status=202,
    )
