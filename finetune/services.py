"""Fine-tune jobs and the registry: launching (staff only), previews and estimates, cancel, delete, export."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import Conversation, Message
from chat.serving import registry as chat_registry
from evals import selectors as case_selectors
from evals.models import CaseSelection, FailureCase
from evals.selectors import USED_STATUSES, apply_filters
from prompts import selectors as prompt_selectors
from studio import jobs
from studio.errors import StudioError
from studio.input_checks import InputError, parsed_number, whole_number_or_none
from studio.jobs import JobStatus, job_cancel
from studio.llm.training import TrainingConfig, TrainingConfigError

from .models import FineTunedModel, FineTuneJob
from .training_data import base_model_folder, describe_left_out, rendered_text, rows_hash, training_data

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
# Shown and explained on the form; what a LoRA run on a small model usually wants.
DEFAULTS = {
    "epochs": 3.0,
    "learning_rate": 2e-4,
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "max_length": 512,
    "batch_size": 4,
    "gradient_accumulation": 1,
}
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


LABELS = {
    "epochs": "Epochs",
    "learning_rate": "Learning rate",
    "lora_rank": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "target_modules": "Target modules",
    "max_length": "Max length",
    "batch_size": "Batch size",
    "gradient_accumulation": "Gradient accumulation",
}


def hyperparameter_fields(values: dict) -> list[dict]:
    """The form's hyperparameter fields: name, label, default, what it does, the value given."""
    return [
        {
            "name": name,
            "label": LABELS[name],
            "default": default,
            "help": EXPLAINED[name],
            "value": values.get(name, ""),
        }
        for name, default in DEFAULTS.items()
    ]


class FineTuneError(StudioError):
    pass


class NotStaff(FineTuneError):
    status = 403


class PromptNotFound(FineTuneError):
    status = 404


def require_staff(user) -> None:
    if not (getattr(user, "is_authenticated", False) and user.is_staff):
        raise NotStaff("Fine-tuning is for staff.")


def _saved_selection(*, user, filters: dict) -> dict:
    """The filters of the saved selection `filters` names (one of `user`'s own), else {}."""
    if not filters.get("selection"):
        return {}
    selection = CaseSelection.objects.filter(owner=user, pk=whole_number_or_none(filters["selection"])).first()
    if selection is None:
        raise FineTuneError(f"there is no saved selection “{filters['selection'][:40]}” of yours", "selection")
    return {name: value for name, value in selection.filters.items() if name != "selection"}


def cases_for_job(*, user, prompt, filters: dict):
    """The cases a job trains on: those of `prompt` the launching staff member may see, by the
    filters (a saved selection of theirs, a tag, a split). Held-out (`eval`) cases are never
    trained on unless the filters ask for that split: without a split, the `train` split."""
    filters = {**case_selectors.clean_filters(filters), "prompt": prompt.slug}
    saved = _saved_selection(user=user, filters=filters)
    if not filters.get("split") and not saved.get("split"):
        filters["split"] = FailureCase.Split.TRAIN
    return case_selectors.cases_for(user=user, filters=filters), filters


def cases_funnel(*, user, prompt, filters: dict) -> list[dict]:
    """Why cases of `prompt` are not trained on: the same filters as cases_for_job, one at a time,
    each with the number of cases it left out: [{"filter", "removed", "left", "why", "text"}] (the
    first entry, filter "prompt", counts every case of the prompt, visible or not). A count only:
    nothing of a case another person keeps private is shown."""
    saved = _saved_selection(user=user, filters=filters)
    given = {
        name: value
        for name, value in case_selectors.clean_filters(filters).items()
        if name not in ("prompt", "selection")
    }
    if not given.get("split") and not saved.get("split"):
        given["split"] = FailureCase.Split.TRAIN  # as cases_for_job: held-out cases only when asked
    split = given.get("split") or saved.get("split")
    cases = FailureCase.objects.filter(prompt_version__prompt=prompt)
    funnel = [{"filter": "prompt", "removed": 0, "left": cases.count(), "why": f"cases of “{prompt.name}”"}]

    def step(name: str, narrowed, why: str) -> None:
        nonlocal cases
        left = narrowed.count()
        removed = funnel[-1]["left"] - left
        funnel.append(
            {
                "filter": name,
                "removed": removed,
                "left": left,
                "why": why,
                "text": f"{removed} {_agreeing(why, removed)}",
            }
        )
        cases = narrowed

    def both(narrowed, *names):
        """`narrowed` by the selection's and the form's values of `names` (cases_for applies both)."""
        for source in (saved, given):
            chosen = {name: source[name] for name in names if source.get(name)}
            narrowed = apply_filters(narrowed, chosen) if chosen else narrowed
        return narrowed

    step("visibility", cases.filter(Q(shared=True) | Q(created_by=user)), "are private to another person")
    others = ", ".join(v for v in FailureCase.Split.values if v != split)
    step(
        "split",
        both(cases, "split"),
        f"are in the {others} split, not {split} (choose their split to train on "
        "them: held-out cases are trained on only when asked)",
    )
    step(
        "review",
        both(cases.filter(review=FailureCase.Review.APPROVED), "review"),
        "are not approved by a reviewer (waiting or rejected)",
    )
    status = given.get("status") or saved.get("status")
    if status:
        step("status", both(cases, "status"), f"are not “{status}”")
    else:
        step(
            "status",
            cases.filter(status__in=USED_STATUSES),
            "are marked “won't fix” (choose that status to train on them)",
        )
    if given.get("version") or saved.get("version"):
        step(
            "version",
            both(cases, "version"),
            f"were flagged under another version of the prompt (v{given.get('version') or saved.get('version')} asked)",
        )
    if given.get("tag") or saved.get("tag"):
        step("tag", both(cases, "tag"), f"do not have the tag “{given.get('tag') or saved.get('tag')}”")
    rest = ("prompt", "source", "author", "q")  # the form never sends a prompt here: only a selection's
    named = sorted({name for source in (saved, given) for name in rest if source.get(name)})
    if named:
        step("other", both(cases, *rest), f"do not match the selection's other filters ({', '.join(named)})")
    return funnel


def _agreeing(why: str, count: int) -> str:
    """`why` (written for several cases: “are …”, “do not …”) for `count` cases."""
    if count == 1:
        for several, one in (("are ", "is "), ("do not ", "does not "), ("were ", "was ")):
            if why.startswith(several):
                return one + why[len(several) :]
    return why


def describe_funnel(funnel: list[dict], left_out: dict[str, int]) -> str:
    """“of the 3 cases of “Order JSON”, 3 are in the eval split, not train (…)”: a sentence a
    person can act on, for a refusal."""
    total = funnel[0]["left"]
    if not total:
        return f"there are no {funnel[0]['why']} yet (flag answers, or import cases, first)"
    parts = [entry["text"] for entry in funnel[1:] if entry["removed"]]
    built = describe_left_out(left_out)
    if built:
        parts.append(built)
    return f"of the {total} {funnel[0]['why']}, " + "; ".join(parts or ["none gave a training example"])


OWN_VERSION = "own"  # the version choice "each case's own version"


def job_version(*, prompt, chosen):
    """The version a job trains for: `chosen` (a version number, or OWN_VERSION: each case's own),
    else the version `prompt:<slug>` serves (production, else the newest). None: each case's own."""
    if chosen in (None, ""):
        return prompt_selectors.served_version(prompt)
    if chosen == OWN_VERSION:
        return None
    try:
        return prompt_selectors.version_resolve(prompt, number=chosen)
    except prompt_selectors.VersionNotFound as exc:
        raise FineTuneError(str(exc), "version") from None


PLAN_ASSEMBLED_CASES = 30  # cases assembled before launch when the version retrieves (about 10 s here)


def _retrieves(version) -> bool:
    return version is not None and bool((version.retrieval or {}).get("knowledge_bases"))


def job_plan(
    *, user, prompt, filters: dict, objective: str, hyperparameters: dict, method: str, version: str | int | None = None
) -> dict:
    """What launching would do: the version the cases are served through, examples, tokens, the first
    examples as the model sees them, which cases were left out and why, an estimate of memory and
    time, and warnings. Raises FineTuneError for what cannot run."""
    chosen = job_version(prompt=prompt, chosen=version)
    cases, filters = cases_for_job(user=user, prompt=prompt, filters=filters)
    chosen_cases = list(cases)
    # A version that retrieves searches its passages for each case (0.3 s each here): before launch
    # only the first ones are assembled, and the figures of the rest extrapolated from them; the
    # job assembles every case when it runs.
    retrieving = any(_retrieves(chosen if chosen is not None else case.prompt_version) for case in chosen_cases)
    assembled = chosen_cases[:PLAN_ASSEMBLED_CASES] if retrieving else chosen_cases
    scale = len(chosen_cases) / len(assembled) if assembled else 1.0
    data = training_data(assembled, objective, user=user, version=chosen)
    rows = data.rows
    config = clean_hyperparameters(hyperparameters, method=method, objective=objective)
    counter = prompt_selectors.prompt_counter()
    token_count = trained_tokens = 0
    too_long = []  # tokens of the examples longer than max_length
    preview = []
    if counter is not None:
        for n, row in enumerate(rows):
            text = rendered_text(row, counter)
            tokens = counter.count_text(text)
            token_count += tokens
            trained_tokens += min(tokens, config["max_length"])
            if tokens > config["max_length"]:
                too_long.append(tokens)
            if n < 3:
                preview.append({"text": text, "version": data.versions[n], "passages": data.passages[n]})
    example_count, token_count, trained_tokens = (
        round(len(rows) * scale),
        round(token_count * scale),
        round(trained_tokens * scale),
    )
    warnings = []
    if too_long:
        warnings.append(
            f"{len(too_long)} example{'s are' if len(too_long) != 1 else ' is'} longer than the maximum "
            f"length of {config['max_length']} tokens (up to {max(too_long):,}, with the instructions, "
            "examples and passages the version is served with): training cuts their end, which is the "
            "expected answer. Raise the maximum length, or shorten what the version sends."
        )
    threshold = settings.FAILURE_CASES_FOR_FINE_TUNING
    if rows and example_count < threshold // 4:
        warnings.append(
            f"Only {example_count} training example{'s' if example_count != 1 else ''}: fine-tuning usually pays "
            f"off from about {threshold:,} good cases. With this few, few-shot examples in the prompt "
            "are often as good; the job may memorise them."
        )
    funnel = cases_funnel(user=user, prompt=prompt, filters=filters)
    return {
        "cases": list(cases.values_list("id", flat=True)),
        "filters": filters,
        "rows": rows,
        "version": chosen,
        "versions": sorted({n for n in data.versions if n is not None}),
        "version_label": _version_label(chosen),
        "example_count": example_count,
        "token_count": token_count,
        "preview": preview,
        "config": config,
        "assembled": len(assembled),
        "extrapolated": len(assembled) < len(chosen_cases),
        "funnel": funnel,
        "left_out": data.left_out,
        "left_out_text": describe_left_out(data.left_out),
        "why_none": "" if rows else describe_funnel(funnel, data.left_out),
        "estimate": job_estimate(token_count=trained_tokens, config=config, examples=example_count),
        "warnings": warnings,
    }


def _version_label(version) -> str:
    if version is None:
        return "each case's own version"
    production = version.labels.filter(name=prompt_selectors.PRODUCTION).exists()
    return f"version {version.number}" + (" (production)" if production else "")


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
        config = TrainingConfig(
            base_model_folder="-", objective=objective, method=method, seed=seed, device=device, **values
        )
    except TrainingConfigError as exc:
        raise FineTuneError(str(exc), exc.field) from None
    return {k: v for k, v in config.__dict__.items() if k != "base_model_folder"}


def _whole_number(given, name: str) -> int:
    """An int, an integral float (2.0) or the digits of one ("4", from a form); never a rounded 2.9."""
    try:
        return parsed_number(given, whole=True)
    except InputError as exc:
        raise FineTuneError(str(exc), name) from None


def _number(given, name: str) -> float:
    try:
        return float(parsed_number(given))
    except InputError as exc:
        raise FineTuneError(str(exc), name) from None


def _cuda_available() -> bool:
    if settings.LLM_DEVICE == "cpu":
        return False
    return shutil.which("nvidia-smi") is not None and settings.LLM_DEVICE in ("auto", "cuda")


# LoRA training of a 135M model on 2 CPU cores, float32, measured by `make bench` (75 tokens/s
# there); scaled by parameters and cores when nothing has run on this machine yet.
RULE_OF_THUMB_TOKENS_PER_S = 75.0
# What a run costs besides its steps, until a job has finished here (then its measured cost is
# used): starting the training process (importing torch, transformers, peft and trl took 10 s
# on this 2-core machine under load), loading the base model (its weights read at this many
# bytes a second, conservatively), tokenizing the rows, saving the adapter and registering it.
# A tiny-model run here (README, "Fine-tuning") spent most of its time in these.
PROCESS_START_S = 20.0
WEIGHTS_LOADED_BYTES_PER_S = 50e6
TOKENIZED_EXAMPLES_PER_S = 100.0
ADAPTER_SAVED_S = 5.0
# The first job on a model shipped as a GGUF file converts it once (about 30 s here for 135M).
CONVERSION_S = 60.0


def job_estimate(*, token_count: int, config: dict, examples: int) -> dict:
    """Memory and time on the device that will run it, and how sure the time is.

    Memory: the base weights (their file size on the CPU in float32; half in bf16; about a
    quarter of that with QLoRA) plus the adapter's weights, gradients and AdamW state (rank x
    the layers: small) plus activations (batch x length x hidden size x layers x ~34 bytes).
    Time, from the job worker taking it to the model in the registry: a fixed cost (starting
    the training process, loading the model, tokenizing, saving) plus tokens x epochs at a
    speed. Both are measured on the last finished jobs on this base model and device (their
    spread is the range); until one has finished, a conservative calibration of the fixed cost
    and a rule of thumb for the speed (a wide range). On a CPU the steps are slowed by the share
    of the last hour in which chat replies were being written (training pauses for them)."""
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
    measured = measured_runs(device=config["device"])
    if measured:
        speeds = [run["tokens_per_s"] for run in measured]
        fixed_costs = [run["fixed_s"] for run in measured]
        speed, slowest, fastest = _median(speeds), min(speeds), max(speeds)
        fixed, fixed_low, fixed_high = _median(fixed_costs), min(fixed_costs), max(fixed_costs)
        basis = (
            f"measured on the last {len(measured)} job{'s' if len(measured) != 1 else ''} here: "
            f"{slowest:.0f}–{fastest:.0f} tokens/s, {fixed_low:.0f}–{fixed_high:.0f} s to start and finish"
        )
    else:
        params_m = max(weights / 4 / 1e6, 1.0)  # float32 file: 4 bytes a parameter
        cores = max(os.cpu_count() or 2, 1)
        # The rule of thumb was measured on idle cores: on a CPU, the share of them other work
        # leaves now (1-minute load average) slows it. (Measured here under a load of 8 on 2 cores,
        # the steps ran 20x slower than idle: the range stays wide.)
        free = cpu_share_free(cores) if config["device"] == "cpu" else 1.0
        speed = (
            min(RULE_OF_THUMB_TOKENS_PER_S * 135 / params_m * cores / 2, 3000.0)
            * (20 if config["device"] == "cuda" else 1)
            * free
        )
        slowest, fastest = speed / 3, speed * 1.5
        fixed = startup_calibration(weights=weights, examples=examples, converted=folder is not None)
        fixed_low, fixed_high = fixed * 0.6, fixed * 2
        basis = (
            "a rule of thumb: no job has finished on this machine yet (the first one refines it); "
            f"about {fixed:.0f} s of it to start the training process, load the model and save the result"
            + (f"; other work keeps the CPU busy now (about {free:.0%} of it free)" if free < 0.9 else "")
        )
    chat_share = recent_chat_share() if config["device"] == "cpu" else 0.0
    paced = 1 - min(chat_share, 0.9)
    trained = token_count * config["epochs"]

    def total(fixed_s: float, tokens_per_s: float) -> float | None:
        return fixed_s + trained / (tokens_per_s * paced) if token_count else None

    return {
        "memory_bytes": memory,
        "seconds": total(fixed, speed),
        "tokens_per_s": speed,
        "measured": bool(measured),
        "device": config["device"],
        "basis": basis,
        "chat_share": chat_share,
        "fixed_s": fixed,
        "training_s": trained / (speed * paced) if token_count else None,
        "seconds_low": total(fixed_low, fastest),
        "seconds_high": total(fixed_high, slowest),
    }


def cpu_share_free(cores: int) -> float:
    """The share of the CPU's cores other processes leave free now, by the 1-minute load average."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this system
        return 1.0
    return min(1.0, cores / max(load, 1e-9))


def startup_calibration(*, weights: int, examples: int, converted: bool) -> float:
    """Seconds a run spends outside its steps, before any job has measured it here."""
    return (
        PROCESS_START_S
        + weights / WEIGHTS_LOADED_BYTES_PER_S
        + examples / TOKENIZED_EXAMPLES_PER_S
        + ADAPTER_SAVED_S
        + (0.0 if converted else CONVERSION_S)
    )


def measured_runs(*, device: str, last: int = 5) -> list[dict]:
    """The last finished jobs on the served base model and `device`: their speed in the steps
    (non-padding tokens a second) and their fixed cost (the run's seconds, from the job worker
    taking it to the registry, less the seconds its steps took)."""
    jobs_done = (
        FineTuneJob.objects.filter(
            status=JobStatus.FINISHED,
            base_model=chat_registry.base_model_name(),
            device__startswith=device,
            tokens_per_s__gt=0,
            tokens_seen__gt=0,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .order_by("-finished_at")
        .values("tokens_per_s", "tokens_seen", "started_at", "finished_at")[:last]
    )
    runs = []
    for job in jobs_done:
        elapsed = (job["finished_at"] - job["started_at"]).total_seconds()
        steps = job["tokens_seen"] / job["tokens_per_s"]
        runs.append({"tokens_per_s": job["tokens_per_s"], "fixed_s": max(elapsed - steps, 0.0)})
    return runs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def recent_chat_share() -> float:
    """The share of the last hour in which a chat, playground or API reply was being written
    (training pauses between steps for those on a CPU): overlapping replies counted once."""
    now = timezone.now()
    start = now - timedelta(hours=1)
    spans = sorted(
        (max(created, start), finished or now)
        for created, finished in Message.objects.filter(role=Message.Role.ASSISTANT, created_at__lt=now)
        .exclude(conversation__kind=Conversation.Kind.EVALUATION)
        .exclude(finished_at__lt=start)
        .values_list("created_at", "finished_at")[:5000]
    )
    busy, covered_to = 0.0, start
    for begin, end in spans:
        begin = max(begin, covered_to)
        if end > begin:
            busy += (end - begin).total_seconds()
            covered_to = end
    return busy / 3600


# --- jobs ------------------------------------------------------------------------------------------


def job_create(
    *,
    user,
    name: str,
    prompt_slug: str,
    filters: dict,
    objective: str = "sft",
    method: str = "lora",
    hyperparameters: dict | None = None,
    version: str | int | None = None,
) -> FineTuneJob:
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
    if name in chat_registry.available_models() or FineTuneJob.objects.filter(name=name).exists():
        raise FineTuneError(f"a model or job named “{name}” exists already", "name")
    planned = job_plan(
        user=user,
        prompt=prompt,
        filters=filters,
        objective=objective,
        hyperparameters=hyperparameters or {},
        method=method,
        version=version,
    )
    if not planned["rows"]:
        raise FineTuneError(f"no training examples: {planned['why_none']}", "cases")
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            name=name,
            base_model=chat_registry.base_model_name(),
            prompt=prompt,
            prompt_version=planned["version"],
            case_filters=planned["filters"],
            case_ids=planned["cases"],
            example_count=planned["example_count"],
            # Of every row when all were assembled; the job worker stores that of what it trains on.
            data_hash="" if planned["extrapolated"] else rows_hash(planned["rows"]),
            token_count=planned["token_count"],
            objective=objective,
            method=method,
            hyperparameters=planned["config"],
            created_by=user,
        )
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
