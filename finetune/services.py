"""Fine-tune jobs and the registry: launching (staff only), previews and estimates, cancel, delete, export."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from chat import selectors as chat_selectors
from evals import selectors as case_selectors
from evals.models import FailureCase
from prompts import selectors as prompt_selectors
from studio import jobs
from studio.errors import StudioError
from studio.jobs import JobStatus, job_cancel
from studio.llm.training import TrainingConfig

from .models import FineTunedModel, FineTuneJob
from .training_data import base_model_folder, rendered_text, rows_hash, training_rows

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
# Shown and explained on the form; what a LoRA run on a small model usually wants.
DEFAULTS = {"epochs": 3.0, "learning_rate": 2e-4, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05,
            "target_modules": "all-linear", "max_length": 512, "batch_size": 4, "gradient_accumulation": 1}
EXPLAINED = {
    "epochs": "Passes over the training cases. More fits them better, until it memorises them (watch the eval loss).",
    "learning_rate": "Step size. LoRA trains few weights, so it takes a larger rate than full fine-tuning (1e-4 to 3e-4).",
    "lora_rank": "Size of the low-rank update: 8-16 for style and format, 32-64 for new knowledge. More rank, more memory.",
    "lora_alpha": "Scale of the update; alpha / rank multiplies it. Usually twice the rank.",
    "lora_dropout": "Dropout on the adapter's path, against overfitting a small data set (0 to 0.1).",
    "target_modules": "Which layers get adapters: all-linear, or names such as q_proj,v_proj (fewer: smaller, weaker).",
    "max_length": "Tokens per example; longer examples are cut. Memory grows with it.",
    "batch_size": "Examples per step. Lower it when memory runs out.",
    "gradient_accumulation": "Steps summed before each update: batch size x this is the effective batch.",
}


LABELS = {"epochs": "Epochs", "learning_rate": "Learning rate", "lora_rank": "LoRA rank", "lora_alpha": "LoRA alpha",
          "lora_dropout": "LoRA dropout", "target_modules": "Target modules", "max_length": "Max length",
          "batch_size": "Batch size", "gradient_accumulation": "Gradient accumulation"}


def hyperparameter_fields(values: dict) -> list[dict]:
    """The form's hyperparameter fields: name, label, default, what it does, the value given."""
    return [{"name": name, "label": LABELS[name], "default": default, "help": EXPLAINED[name],
             "value": values.get(name, "")} for name, default in DEFAULTS.items()]


class FineTuneError(StudioError):
    pass


class NotStaff(FineTuneError):
    status = 403


class PromptNotFound(FineTuneError):
    status = 404


def require_staff(user) -> None:
    if not (getattr(user, "is_authenticated", False) and user.is_staff):
        raise NotStaff("Fine-tuning is for staff.")


def cases_for_job(*, user, prompt, filters: dict):
    """The cases a job trains on: those of `prompt` the launching staff member may see, by the
    filters (a saved selection of theirs, a tag, a split). Held-out (`eval`) cases are never
    trained on unless the filters ask for that split: without a split, the `train` split."""
    from evals.models import CaseSelection

    filters = {**case_selectors.clean_filters(filters), "prompt": prompt.slug}
    saved = {}
    if filters.get("selection"):
        selection = CaseSelection.objects.filter(owner=user, pk=_whole(filters["selection"])).first()
        if selection is None:
            raise FineTuneError(f"there is no saved selection “{filters['selection'][:40]}” of yours", "selection")
        saved = selection.filters
    if not filters.get("split") and not saved.get("split"):
        filters["split"] = FailureCase.Split.TRAIN
    return case_selectors.cases_for(user=user, filters=filters), filters


def _whole(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def job_plan(*, user, prompt, filters: dict, objective: str, hyperparameters: dict, method: str) -> dict:
    """What launching would do: examples, tokens, the first examples as the model sees them, an
    estimate of memory and time, and warnings. Raises FineTuneError for what cannot run."""
    cases, filters = cases_for_job(user=user, prompt=prompt, filters=filters)
    rows = training_rows(cases, objective)
    counter = prompt_selectors.prompt_counter()
    token_count = 0
    preview = []
    if counter is not None:
        for n, row in enumerate(rows):
            text = rendered_text(row, counter)
            token_count += counter.count_text(text)
            if n < 3:
                preview.append(text)
    config = clean_hyperparameters(hyperparameters, method=method, objective=objective)
    warnings = []
    threshold = settings.FAILURE_CASES_FOR_FINE_TUNING
    if len(rows) < threshold // 4:
        warnings.append(f"Only {len(rows)} training example{'s' if len(rows) != 1 else ''}: fine-tuning usually pays "
                        f"off from about {threshold:,} good cases. With this few, few-shot examples in the prompt "
                        "are often as good; the job may memorise them.")
    if objective == FineTuneJob.Objective.DPO:
        from evals.exporting import describe_left_out, dpo_left_out

        left_out = describe_left_out(dpo_left_out(cases))
        if left_out:
            warnings.append(left_out + ".")
    return {"cases": list(cases.values_list("id", flat=True)), "filters": filters, "rows": rows,
            "example_count": len(rows), "token_count": token_count, "preview": preview, "config": config,
            "estimate": job_estimate(token_count=token_count, config=config, examples=len(rows)), "warnings": warnings}


MAX_SEED = 2**32 - 1  # numpy, which trl seeds with the rest, takes no more


def clean_hyperparameters(raw: dict, *, method: str, objective: str) -> dict:
    """Checked hyperparameters: each refused with its name when it is not what it must be (a whole
    number is never rounded from 2.9, a seed is from 0 to 2**32 - 1)."""
    values = {**DEFAULTS}
    for name, default in DEFAULTS.items():
        given = raw.get(name)
        if given in (None, ""):
            continue
        if name == "target_modules":
            modules = [m.strip() for m in str(given).split(",") if m.strip()]
            if not modules or any(not re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", m) for m in modules):
                raise FineTuneError("layer names separated by commas", name)
            values[name] = "all-linear" if modules == ["all-linear"] else modules
        elif isinstance(default, int):
            values[name] = _whole_number(given, name)
        else:
            values[name] = _number(given, name)
    seed = _whole_number(raw.get("seed") if raw.get("seed") not in (None, "") else 0, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise FineTuneError(f"must be a whole number from 0 to {MAX_SEED:,}", "seed")
    device = "cuda" if _cuda_available() else "cpu"
    try:
        config = TrainingConfig(base_model_folder="-", objective=objective, method=method, seed=seed, device=device,
                                **values)
    except ValueError as exc:
        message = str(exc)
        field = message.split("=")[0] if "=" in message.split(" ")[0] else "method"
        raise FineTuneError(message, field) from None
    return {k: v for k, v in config.__dict__.items() if k != "base_model_folder"}


def _whole_number(given, name: str) -> int:
    """An int, an integral float (2.0) or the digits of one ("4", from a form); never a rounded 2.9."""
    if isinstance(given, bool):
        raise FineTuneError("must be a whole number", name)
    if isinstance(given, float) and given.is_integer():
        return int(given)
    if isinstance(given, int):
        return given
    if isinstance(given, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", given):
        return int(given)
    raise FineTuneError("must be a whole number", name)


def _number(given, name: str) -> float:
    if isinstance(given, bool):
        raise FineTuneError("must be a number", name)
    try:
        number = float(given)
    except (TypeError, ValueError):
        raise FineTuneError("must be a number", name) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FineTuneError("must be a finite number", name)
    return number


def _cuda_available() -> bool:
    if settings.LLM_DEVICE == "cpu":
        return False
    import shutil as _shutil

    return _shutil.which("nvidia-smi") is not None and settings.LLM_DEVICE in ("auto", "cuda")


# LoRA training of a 135M model on 2 CPU cores, float32, measured by `make bench` (75 tokens/s
# there); scaled by parameters and cores when nothing has run on this machine yet.
RULE_OF_THUMB_TOKENS_PER_S = 75.0


def job_estimate(*, token_count: int, config: dict, examples: int) -> dict:
    """Memory and time on the device that will run it, and how sure the time is.

    Memory: the base weights (their file size on the CPU in float32; half in bf16; about a
    quarter of that with QLoRA) plus the adapter's weights, gradients and AdamW state (rank x
    the layers: small) plus activations (batch x length x hidden size x layers x ~34 bytes).
    Time: tokens x epochs at the speed of the last finished jobs on this base model and device
    (their spread is the range), else a rule of thumb (a wide range); on a CPU, slowed by the
    share of the last hour in which chat replies were being written (training pauses for them)."""
    import os

    folder = base_model_folder(convert=False)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder else 0
    hidden, layers = 576, 30
    if folder and (folder / "config.json").exists():
        model_config = json.loads((folder / "config.json").read_text())
        hidden = model_config.get("hidden_size", hidden)
        layers = model_config.get("num_hidden_layers", layers)
    scale = {"cpu": 1.0, "cuda": 0.5}[config["device"]] * (0.3 if config["method"] == "qlora" else 1.0)
    activations = config["batch_size"] * config["max_length"] * hidden * layers * 34
    adapter = 2 * config["lora_rank"] * hidden * layers * 7 * 4 * 4  # weights + grads + 2 AdamW moments, fp32
    memory = int(weights * scale + activations + adapter)
    measured = list(FineTuneJob.objects.filter(status=JobStatus.FINISHED, base_model=chat_selectors.base_model_name(),
                                               device__startswith=config["device"], tokens_per_s__isnull=False)
                    .order_by("-finished_at").values_list("tokens_per_s", flat=True)[:5])
    if measured:
        speed, slowest, fastest = sorted(measured)[len(measured) // 2], min(measured), max(measured)
        basis = (f"measured on the last {len(measured)} job{'s' if len(measured) != 1 else ''} here: "
                 f"{slowest:.0f}–{fastest:.0f} tokens/s")
    else:
        params_m = max(weights / 4 / 1e6, 1.0)  # float32 file: 4 bytes a parameter
        cores = max(os.cpu_count() or 2, 1)
        speed = min(RULE_OF_THUMB_TOKENS_PER_S * 135 / params_m * cores / 2, 3000.0) * (
            20 if config["device"] == "cuda" else 1)
        slowest, fastest = speed / 3, speed * 1.5
        basis = "a rule of thumb: no job has finished on this machine yet (the first one refines it)"
    chat_share = recent_chat_share() if config["device"] == "cpu" else 0.0
    paced = 1 - min(chat_share, 0.9)
    seconds = token_count * config["epochs"] / (speed * paced) if token_count else None
    return {"memory_bytes": memory, "seconds": seconds, "tokens_per_s": speed, "measured": bool(measured),
            "device": config["device"], "basis": basis, "chat_share": chat_share,
            "seconds_low": token_count * config["epochs"] / (fastest * paced) if token_count else None,
            "seconds_high": token_count * config["epochs"] / (slowest * paced) if token_count else None}


def recent_chat_share() -> float:
    """The share of the last hour in which a chat, playground or API reply was being written
    (training pauses between steps for those on a CPU): overlapping replies counted once."""
    from datetime import timedelta

    from django.utils import timezone

    from chat.models import Conversation, Message

    now = timezone.now()
    start = now - timedelta(hours=1)
    spans = sorted((max(created, start), finished or now) for created, finished in Message.objects.filter(
        role=Message.Role.ASSISTANT, created_at__lt=now).exclude(conversation__kind=Conversation.Kind.EVALUATION)
        .exclude(finished_at__lt=start).values_list("created_at", "finished_at")[:5000])
    busy, covered_to = 0.0, start
    for begin, end in spans:
        begin = max(begin, covered_to)
        if end > begin:
            busy += (end - begin).total_seconds()
            covered_to = end
    return busy / 3600


# --- jobs ------------------------------------------------------------------------------------------


def job_create(*, user, name: str, prompt_slug: str, filters: dict, objective: str = "sft", method: str = "lora",
               hyperparameters: dict | None = None) -> FineTuneJob:
    require_staff(user)
    missing = [field for field, value in (("prompt", prompt_slug),) if not value]
    if missing:
        raise FineTuneError("is required: the prompt whose failure cases it trains on", missing[0])
    prompt = prompt_selectors.prompt_by_slug(prompt_slug) if isinstance(prompt_slug, str) else None
    if prompt is None:
        raise PromptNotFound(f"there is no prompt “{str(prompt_slug)[:100]}”", "prompt")
    if objective not in FineTuneJob.Objective.values:
        raise FineTuneError("must be sft or dpo", "objective")
    if method not in FineTuneJob.Method.values:
        raise FineTuneError("must be lora or qlora", "method")
    name = (name or "").strip().lower() or _next_name(prompt.slug)
    if not NAME_PATTERN.match(name):
        raise FineTuneError("use lower-case letters, digits, '.', '-' and '_' (80 at most)", "name")
    if name in chat_selectors.available_models() or FineTuneJob.objects.filter(name=name).exists():
        raise FineTuneError(f"a model or job named “{name}” exists already", "name")
    planned = job_plan(user=user, prompt=prompt, filters=filters, objective=objective,
                   hyperparameters=hyperparameters or {}, method=method)
    if not planned["rows"]:
        raise FineTuneError("no training examples: this prompt has no matching failure cases you can see "
                            "(with an expected answer; for DPO also the model's actual answer)", "cases")
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            name=name, base_model=chat_selectors.base_model_name(), prompt=prompt, case_filters=planned["filters"],
            case_ids=planned["cases"], data_hash=rows_hash(planned["rows"]), example_count=planned["example_count"],
            token_count=planned["token_count"], objective=objective, method=method,
            hyperparameters=planned["config"], created_by=user)
        transaction.on_commit(lambda: jobs.dispatch(FineTuneJob, job.pk))
    return job


def _next_name(slug: str) -> str:
    taken = set(FineTuneJob.objects.filter(name__startswith=f"{slug}-ft").values_list("name", flat=True))
    number = 1
    while f"{slug}-ft{number}" in taken:
        number += 1
    return f"{slug}-ft{number}"[:80]


def queue_position(job: FineTuneJob) -> int | None:
    """1 for the next to run; None unless queued. One training job runs at a time per worker."""
    if job.status != JobStatus.QUEUED:
        return None
    return FineTuneJob.objects.filter(status=JobStatus.QUEUED, created_at__lt=job.created_at).count() + 1


def job_cancel_by(*, job: FineTuneJob, user) -> None:
    require_staff(user)
    job_cancel(job)


def model_delete(*, model: FineTunedModel, user) -> None:
    """Remove the adapter's files and its registry row; replies and evaluations keep its name as text."""
    require_staff(user)
    folder = Path(settings.STUDIO_ADAPTERS_DIR) / model.name
    shutil.rmtree(folder, ignore_errors=True)
    model.delete()


def registry_disk_use() -> int:
    root = Path(settings.STUDIO_ADAPTERS_DIR)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.exists() else 0


def jobs_sweep() -> None:
    """The sweeper's part for fine-tunes (studio.sweeping): undelivered jobs sent again, those of
    a dead job worker failed (what they trained so far stays in the job's folder)."""
    jobs.jobs_sweep(FineTuneJob)
