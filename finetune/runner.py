"""Running a fine-tune in a job worker: the training process, its progress, cancel, the registry.

The job worker writes the job's folder (`config.json`, `data.jsonl`), starts the training
process (`studio.llm.training`; `accelerate launch` across the GPUs of this machine when it has
several), reads its progress lines into the job's row, and steers it with files: `stop` on
cancel (it stops at the next step boundary and saves the adapter), `pause` while chat replies
are being written on a CPU-only machine (chat comes first: training waits between steps). A
finished adapter is copied into STUDIO_ADAPTERS_DIR and registered; a failed or cancelled job
registers nothing and touches no failure case.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from chat.models import Conversation, Message
from evals.models import FailureCase
from prompts import selectors as prompt_selectors
from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.llm.adapters import write_meta
from studio.llm.training import PROGRESS_PREFIX, TrainingConfig, launch_command

from .models import FineTunedModel, FineTuneJob
from .training_data import base_model_folder, rendered_text, rows_hash, training_rows

log = logging.getLogger("finetune")
LOG_TAIL_LINES = 40
RAW_LOG = "training.log"  # everything the training process printed (downloadable from the job's page)


def job_folder(job: FineTuneJob) -> Path:
    return Path(settings.DATA_DIR) / "fine-tunes" / str(job.pk)


def gpu_count() -> int:
    # torch stays out of the job worker until a fine-tune asks how many GPUs there are
    import torch  # noqa: PLC0415

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_fine_tune(job_id: int) -> None:
    job = FineTuneJob.objects.select_related("created_by", "prompt_version__prompt").filter(pk=job_id).first()
    if job is None or not job_claim(job):
        return
    try:
        status, error = _run(job)
    except Exception as exc:
        log.exception("fine-tune %s failed", job_id)
        status, error = JobStatus.FAILED, f"The job could not run: {exc}"
    job_end(job, status, error=error)


def _run(job: FineTuneJob) -> tuple[str, str]:
    folder = job_folder(job)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    job_progress(job, note="preparing the data and the base model…")
    by_id = {
        case.pk: case
        for case in FailureCase.objects.filter(pk__in=job.case_ids).select_related("prompt_version__prompt")
    }
    # Prepared first: its chat template says how the rows show tools (training_data.base_takes_tools).
    base_folder = base_model_folder(convert=True)
    # Assembled again as serving does it now (the version's passages are searched again, as the
    # job's staff member): the hash stored is that of what it trains on.
    rows = training_rows(
        [by_id[pk] for pk in job.case_ids if pk in by_id],
        job.objective,
        user=job.created_by,
        version=job.prompt_version,
    )
    if not rows:
        return JobStatus.FAILED, "None of the job's training cases are left (deleted meanwhile)."
    counter = prompt_selectors.prompt_counter()
    job.data_hash, job.example_count = rows_hash(rows), len(rows)
    if counter is not None:  # before launch they may have been extrapolated from the first cases
        job.token_count = sum(counter.count_text(rendered_text(row, counter)) for row in rows)
    FineTuneJob.objects.filter(pk=job.pk).update(
        data_hash=job.data_hash, example_count=job.example_count, token_count=job.token_count
    )
    gpus = gpu_count()
    device = "cuda" if gpus else "cpu"
    config = TrainingConfig(
        **{
            **job.hyperparameters,
            "device": device,
            "base_model_folder": str(base_folder),
            "threads": settings.JOB_TORCH_THREADS,
        }
    )
    (folder / "config.json").write_text(json.dumps(config.__dict__))
    (folder / "data.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    FineTuneJob.objects.filter(pk=job.pk).update(device=f"cuda x {gpus}" if gpus else "cpu")
    outcome = _watch(job, folder, launch_command(folder, gpus=max(gpus, 1)), device)
    if outcome["status"] != JobStatus.FINISHED:
        return outcome["status"], outcome.get("error", "")
    _register(job, folder, outcome.get("metrics", {}))
    return JobStatus.FINISHED, ""


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _watch(job: FineTuneJob, folder: Path, command: list[str], device: str) -> dict:
    """Run the training process to its end, storing its progress; the outcome."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
        "TOKENIZERS_PARALLELISM": "false",
    }
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_die_with_parent,
        bufsize=1,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout] + [lines.put(None)], daemon=True
    ).start()
    state = {
        "metrics": list(job.metrics),
        "log": [],
        "outcome": None,
        "started": None,
        "done": None,
        "last_beat": 0.0,
        "paused": False,
        "cancelled": False,
        "raw_log": open(folder / RAW_LOG, "a"),
    }
    finished_reading = False
    while not finished_reading:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            line = ""
        if line is None:
            finished_reading = True
        elif line:
            _take(line, job, state)
        _housekeeping(job, folder, state, device)
    process.wait()
    state["raw_log"].close()
    _save(job, state)
    if state["outcome"] and state["outcome"]["event"] == "done" and process.returncode == 0:
        if state["cancelled"]:
            return {"status": JobStatus.CANCELLED}  # the adapter so far stays in the job's folder
        return {"status": JobStatus.FINISHED, "metrics": state["outcome"].get("metrics", {})}
    if state["outcome"] and state["outcome"]["event"] == "error":
        return {"status": JobStatus.FAILED, "error": state["outcome"]["message"]}
    code = process.returncode
    why = "was killed (often: the machine ran out of memory)" if code in (-9, 137) else f"exited with code {code}"
    tail = "\n".join(_raw_tail(folder, 5))
    return {"status": JobStatus.FAILED, "error": f"The training process {why}. Its last lines:\n{tail}"}


def _raw_tail(folder: Path, count: int) -> list[str]:
    try:
        lines = (folder / RAW_LOG).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:500] for line in lines if line.strip() and not line.startswith(PROGRESS_PREFIX)][-count:]


def _take(line: str, job: FineTuneJob, state: dict) -> None:
    """A line of the training process: progress events become the job's figures and the studio's
    own log lines; everything else (progress bars, library warnings) goes to the raw log file only."""
    state["raw_log"].write(line if line.endswith("\n") else line + "\n")
    line = line.rstrip("\n")
    if not line.startswith(PROGRESS_PREFIX):
        return
    try:
        event = json.loads(line[len(PROGRESS_PREFIX) :])
    except ValueError:
        return
    kind = event.get("event")
    now = time.monotonic()
    if kind == "start":
        state["started"] = now
        state["done"] = {"done": 0, "total": event.get("total_steps") or 0}
        state["log"] = (state["log"] + [f"training started: {event.get('total_steps') or '?'} steps"])[-LOG_TAIL_LINES:]
    elif kind in ("step", "log"):
        state["done"] = {
            "done": event.get("step", 0),
            "total": event.get("total_steps") or 0,
            "epoch": event.get("epoch"),
            "tokens_seen": event.get("tokens_seen") or 0,
        }
        if state["started"] and state["done"]["tokens_seen"]:
            state["done"]["tokens_per_s"] = state["done"]["tokens_seen"] / max(now - state["started"], 1e-6)
        if kind == "log" and ("loss" in event or "eval_loss" in event):
            point = {
                k: event[k] for k in ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm") if k in event
            }
            state["metrics"].append(point)
            state["log"] = (state["log"] + [_log_line(point)])[-LOG_TAIL_LINES:]
    elif kind in ("done", "error"):
        state["outcome"] = event
        if kind == "error":
            state["log"] = (state["log"] + [f"error: {event.get('message', '')}"[:500]])[-LOG_TAIL_LINES:]
    elif kind in ("paused", "resumed"):
        state["log"] = (state["log"] + [f"{kind}: chat replies come first"])[-LOG_TAIL_LINES:]


def _log_line(point: dict) -> str:
    parts = [f"step {point.get('step')}"] + [
        f"{k} {point[k]:.4g}" for k in ("loss", "eval_loss", "learning_rate") if k in point
    ]
    return " · ".join(parts)


def _housekeeping(job: FineTuneJob, folder: Path, state: dict, device: str) -> None:
    now = time.monotonic()
    if now - state["last_beat"] < settings.JOB_HEARTBEAT_SECONDS:
        return
    state["last_beat"] = now
    if _save(job, state):
        state["cancelled"] = True
        (folder / "stop").touch()
    if device == "cpu":  # on a shared CPU, people come first: training waits between steps while they wait
        busy = (
            Message.objects.filter(status__in=Message.IN_PROGRESS)
            .exclude(conversation__kind=Conversation.Kind.EVALUATION)
            .exists()
        )
        if busy != state["paused"]:
            state["paused"] = busy
            (folder / "pause").touch() if busy else (folder / "pause").unlink(missing_ok=True)


def _save(job: FineTuneJob, state: dict) -> bool:
    """Store progress; True when a cancel was asked for."""
    progress = state["done"] or {}
    note = (
        "paused: chat replies come first"
        if state["paused"]
        else ("training" if state["started"] else "loading the base model…")
    )
    fields = {"metrics": state["metrics"][-2000:], "log_tail": "\n".join(state["log"]), "note": note}
    if progress:
        fields.update(
            total=progress.get("total", 0),
            epoch=progress.get("epoch"),
            tokens_seen=progress.get("tokens_seen", 0),
            tokens_per_s=progress.get("tokens_per_s"),
        )
    return job_progress(job, done=progress.get("done"), **fields)


def _register(job: FineTuneJob, folder: Path, metrics: dict) -> FineTunedModel:
    target = Path(settings.STUDIO_ADAPTERS_DIR) / job.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder / "adapter", target)
    write_meta(target, name=job.name, base_model=job.base_model)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    return FineTunedModel.objects.create(
        name=job.name,
        base_model=job.base_model,
        job=job,
        training_config={**job.hyperparameters, "objective": job.objective, "method": job.method},
        case_ids=job.case_ids,
        data_hash=job.data_hash,
        metrics={**metrics, "finished_at": timezone.now().isoformat()},
        size_bytes=size,
    )
