"""Fine-tuning pages: staff only, checked in every view (others get a plain 403, no hint of jobs)."""

import zipfile
from functools import wraps
from io import BytesIO
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evals import selectors as case_selectors
from evals import services as eval_services
from evals.models import CaseSelection
from evals.scorers import LABELS
from knowledge import selectors as knowledge_selectors
from prompts import selectors as prompt_selectors
from prompts.models import Prompt
from studio.errors import NotFound, StudioError
from studio.input_checks import whole_number_or_none
from studio.jobs import JobStatus

from . import embedder_services, services
from .embedder_services import HYPERPARAMETERS as EMBEDDER_HYPERPARAMETERS
from .merging import merged_zip
from .models import FineTunedModel, FineTuneJob
from .runner import RAW_LOG, job_folder
from .tasks import merge_model_task

TOOL_CALL = "tool_call"  # the scorer of calls (evals.scorers): the default where the version has tools


def staff_only(view):
    @login_required
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("You do not have access to this page.")
        return view(request, *args, **kwargs)

    return checked


def _form_values(source) -> dict:
    values = {
        name: source.get(name, "")
        for name in (
            "name",
            "prompt",
            "selection",
            "split",
            "tag",
            "objective",
            "method",
            "seed",
            "version",
            *services.DEFAULTS,
        )
    }
    values["version"] = values["version"].strip().lower().removeprefix("v")
    values["objective"] = values["objective"] or "sft"
    values["method"] = values["method"] or "lora"
    return values


def _filters(values) -> dict:
    return {name: values[name] for name in ("selection", "split", "tag") if values.get(name)}


@staff_only
@require_GET
def job_list(request):
    jobs = list(FineTuneJob.objects.select_related("prompt", "created_by")[:100])
    for job in jobs:
        job.position = services.queue_position(job)
    return render(
        request,
        "finetune/job_list.html",
        {
            "jobs": jobs,
            "models": FineTunedModel.objects.select_related("job__prompt"),
            "disk_use": services.registry_disk_use(),
            "embedder_jobs": embedder_services.embedder_fine_tunes_for(user=request.user)[:100],
            "tuned_embedders": embedder_services.tuned_embedders_for(user=request.user),
            "base_scorers": [
                (kind, LABELS[kind][0])
                for kind in ("exact_match", "json_equal", "contains", "valid_json", "semantic_similarity", TOOL_CALL)
                if kind in LABELS
            ],
        },
    )


@staff_only
@require_http_methods(["GET", "POST"])
def job_new(request):
    source = request.POST if request.method == "POST" else request.GET
    values = _form_values(source)
    error = None
    if request.method == "POST":
        try:
            job = services.job_create(
                user=request.user,
                name=values["name"],
                prompt_slug=values["prompt"],
                filters=_filters(values),
                objective=values["objective"],
                method=values["method"],
                hyperparameters={k: values[k] for k in (*services.DEFAULTS, "seed")},
                version=values["version"],
            )
        except services.FineTuneError as exc:
            error = exc
        else:
            return redirect(job)
    return render(
        request,
        "finetune/job_new.html",
        {
            "values": values,
            "error": error,
            "prompts": Prompt.objects.order_by("name"),
            "selections": CaseSelection.objects.filter(owner=request.user),
            "hyperparameters": services.hyperparameter_fields(values),
            "objectives": FineTuneJob.Objective.choices,
            "methods": FineTuneJob.Method.choices,
            "used_statuses_note": case_selectors.USED_STATUSES_NOTE,
        },
        status=400 if error else 200,
    )


@staff_only
@require_POST
def job_plan(request):
    """The launch form's live panel: examples, tokens, estimate, warnings, the first examples as the model sees them."""
    values = _form_values(request.POST)
    prompt = prompt_selectors.prompt_by_slug(values["prompt"]) if values["prompt"] else None
    if prompt is None:
        return render(request, "finetune/_plan.html", {"message": "Choose the prompt whose failure cases to train on."})
    try:
        planned = services.job_plan(
            user=request.user,
            prompt=prompt,
            filters=_filters(values),
            objective=values["objective"],
            method=values["method"],
            hyperparameters={k: values[k] for k in (*services.DEFAULTS, "seed")},
            version=values["version"],
        )
    except services.FineTuneError as exc:
        return render(request, "finetune/_plan.html", {"message": str(exc), "is_error": True})
    return render(request, "finetune/_plan.html", {"plan": planned, "prompt": prompt})


def _job_context(job) -> dict:
    return {
        "job": job,
        "position": services.queue_position(job),
        "chart": loss_chart(job.metrics),
        "model": FineTunedModel.objects.filter(job=job).first(),
    }


@staff_only
@require_GET
def job_detail(request, job_id):
    job = get_object_or_404(FineTuneJob.objects.select_related("prompt", "prompt_version", "created_by"), pk=job_id)
    return render(request, "finetune/job_detail.html", _job_context(job))


@staff_only
@require_GET
def job_progress(request, job_id):
    job = get_object_or_404(FineTuneJob.objects.select_related("prompt"), pk=job_id)
    return render(request, "finetune/_job_live.html", _job_context(job))


@staff_only
@require_POST
def job_cancel(request, job_id):
    job = get_object_or_404(FineTuneJob, pk=job_id)
    services.job_cancel_by(job=job, user=request.user)
    return render(request, "finetune/_job_live.html", _job_context(job))


@staff_only
@require_GET
def job_raw_log(request, job_id):
    """Everything the training process printed (progress bars, library warnings), as text."""
    job = get_object_or_404(FineTuneJob, pk=job_id)
    path = job_folder(job) / RAW_LOG
    if not path.exists():
        raise Http404("This job has no log yet.")
    response = FileResponse(open(path, "rb"), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{job.name}-training.log"'
    return response


@staff_only
@require_POST
def model_evaluate(request, model_id):
    """One click: the base model and the fine-tuned one on the prompt's eval split, then the comparison."""
    model = get_object_or_404(FineTunedModel.objects.select_related("job__prompt"), pk=model_id)
    if model.job is None:
        raise Http404("The job that made this model is gone; evaluate it from the evaluations page.")
    version = model.job.prompt_version or prompt_selectors.served_version(model.job.prompt)  # the one it trained for
    # Several scorers may be ticked (a case passes when it passes them all); none ticked: exact
    # match, or for a version with tools whether the reply makes the expected calls.
    scorers = [
        {"type": kind}
        for kind in dict.fromkeys(request.POST.getlist("scorer"))
        if (kind in LABELS or kind == TOOL_CALL) and kind not in ("llm_judge", "regex")
    ] or [{"type": TOOL_CALL if version is not None and version.tool_use else "exact_match"}]
    try:
        base = eval_services.evaluation_create(
            user=request.user, version=version, model_name=model.base_model, filters={"split": "eval"}, scorers=scorers
        )
        tuned = eval_services.evaluation_create(
            user=request.user, version=version, model_name=model.name, filters={"split": "eval"}, scorers=scorers
        )
    except eval_services.CaseError as exc:
        return render(request, "error.html", {"status": 400, "message": str(exc)}, status=400)
    return redirect(reverse("evals:compare") + f"?a={base.pk}&b={tuned.pk}")


@staff_only
@require_GET
def model_download(request, model_id):
    """The adapter's files as a zip (peft loads it with PeftModel.from_pretrained on the base model)."""
    model = get_object_or_404(FineTunedModel, pk=model_id)
    folder = Path(settings.STUDIO_ADAPTERS_DIR) / model.name
    if not folder.exists():
        raise Http404("The adapter's files are missing.")
    buffer = BytesIO()  # adapters are small (a few MB): built in memory
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, f"{model.name}/{file.relative_to(folder)}")
    response = HttpResponse(buffer.getvalue(), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{model.name}-adapter.zip"'
    return response


@staff_only
@require_http_methods(["GET", "POST"])
def model_merged(request, model_id):
    """POST: merge the adapter into the base (a job); GET: download the merged model when ready."""
    model = get_object_or_404(FineTunedModel, pk=model_id)
    if request.method == "POST":
        FineTunedModel.objects.filter(pk=model.pk).update(merge_state="merging", merge_error="")
        merge_model_task.apply_async((model.pk,), retry=True)  # a merge is no JobRecord: sent as it is
        return redirect("finetune:list")
    archive = merged_zip(model)
    if model.merge_state != "ready" or not archive.exists():
        raise Http404("The merged model is not ready.")
    return FileResponse(open(archive, "rb"), as_attachment=True, filename=archive.name)


@staff_only
@require_POST
def model_delete(request, model_id):
    model = get_object_or_404(FineTunedModel, pk=model_id)
    services.model_delete(model=model, user=request.user)
    return redirect("finetune:list")


@login_required
@require_GET
def training_notice(request):
    """For every user's chat page: a plain notice while training shares this CPU (no details of any job)."""
    busy = FineTuneJob.objects.filter(status=JobStatus.RUNNING, device="cpu").exists()
    if not busy:
        return HttpResponse("")
    return HttpResponse(
        '<p class="training-notice" role="status">This machine is also training a model. '
        "Training pauses while replies are written, so chat keeps its speed; other pages may be "
        "slower.</p>"
    )


def loss_chart(metrics: list[dict], width: int = 640, height: int = 220) -> dict | None:
    """The losses as SVG polylines (server-drawn: no chart library, works under the CSP)."""
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m and m.get("step") is not None]
    evaluation = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m and m.get("step") is not None]
    points = train + evaluation
    if not points:
        return None
    pad = 36
    max_step = max(step for step, _ in points) or 1
    low, high = min(v for _, v in points), max(v for _, v in points)
    span = (high - low) or 1.0

    def line(series):
        return " ".join(
            f"{pad + (width - 2 * pad) * step / max_step:.1f},"
            f"{height - pad - (height - 2 * pad) * (value - low) / span:.1f}"
            for step, value in series
        )

    return {
        "width": width,
        "height": height,
        "pad": pad,
        "train": line(train),
        "eval": line(evaluation),
        "low": low,
        "high": high,
        "max_step": max_step,
        "last_loss": train[-1][1] if train else None,
        "last_eval": evaluation[-1][1] if evaluation else None,
        "bottom": height - pad,
        "right": width - pad,
    }


# --- embedder fine-tunes ---------------------------------------------------------------------------


def _embedder_form(source) -> dict:
    values = {
        name: source.get(name, "")
        for name in ("knowledge_base", "retrieval_test", "held_out", "model", "chunks", *EMBEDDER_HYPERPARAMETERS)
    }
    values["generate"] = bool(source.get("generate"))
    return values


@staff_only
@require_http_methods(["GET", "POST"])
def embedder_new(request):
    """The form of an embedder fine-tune for one knowledge base (reached from the base's page)."""
    source = request.POST if request.method == "POST" else request.GET
    values = _embedder_form(source)
    knowledge_base = _or_404(
        knowledge_selectors.knowledge_base_for,
        user=request.user,
        knowledge_base_id=whole_number_or_none(values["knowledge_base"]) or 0,
    )
    error = None
    if request.method == "POST":
        try:
            job = embedder_services.embedder_fine_tune_create(
                user=request.user,
                knowledge_base_id=knowledge_base.pk,
                retrieval_test=values["retrieval_test"],
                held_out=values["held_out"],
                generate_questions={"model": values["model"], "chunks": values["chunks"]}
                if values["generate"]
                else None,
                hyperparameters={name: values[name] for name in EMBEDDER_HYPERPARAMETERS},
            )
        except StudioError as exc:
            error = exc
        else:
            return redirect(job)
    return render(
        request,
        "finetune/embedder_new.html",
        {
            "knowledge_base": knowledge_base,
            "tests": knowledge_base.retrieval_tests.all(),
            "models": case_selectors.available_models(),
            "values": values,
            "error": error,
            "defaults": embedder_services.form_defaults(),
        },
        status=400 if error else 200,
    )


def _or_404(read, **kwargs):
    """What `read` finds, or the 404 page (a base, a job or an embedder of a base the person cannot see)."""
    try:
        return read(**kwargs)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _embedder_context(job) -> dict:
    return {"job": job, "tuned": getattr(job, "result", None)}


@staff_only
@require_GET
def embedder_job(request, job_id):
    job = _or_404(embedder_services.embedder_fine_tune_for, user=request.user, job_id=job_id)
    return render(request, "finetune/embedder_job.html", _embedder_context(job))


@staff_only
@require_GET
def embedder_progress(request, job_id):
    job = _or_404(embedder_services.embedder_fine_tune_for, user=request.user, job_id=job_id)
    return render(request, "finetune/_embedder_live.html", _embedder_context(job))


@staff_only
@require_POST
def embedder_cancel(request, job_id):
    job = _or_404(embedder_services.embedder_fine_tune_for, user=request.user, job_id=job_id)
    embedder_services.embedder_fine_tune_cancel(user=request.user, job=job)
    return render(request, "finetune/_embedder_live.html", _embedder_context(job))


@staff_only
@require_POST
def tuned_embedder_use(request, tuned_id):
    """ "Use this embedder for <base>": the base rebuilt with it; its page shows the rebuild."""
    tuned = _or_404(embedder_services.tuned_embedder_for, user=request.user, tuned_id=tuned_id)
    try:
        embedder_services.embedder_use(user=request.user, tuned=tuned)
    except StudioError as exc:
        return render(request, "error.html", {"status": exc.status, "message": exc.message}, status=exc.status)
    return redirect("knowledge:detail", knowledge_base_id=tuned.knowledge_base_id)


@staff_only
@require_POST
def tuned_embedder_delete(request, tuned_id):
    tuned = _or_404(embedder_services.tuned_embedder_for, user=request.user, tuned_id=tuned_id)
    try:
        embedder_services.tuned_embedder_delete(user=request.user, tuned=tuned)
    except StudioError as exc:
        return render(request, "error.html", {"status": exc.status, "message": exc.message}, status=exc.status)
    return redirect("finetune:list")
