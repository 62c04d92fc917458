"""Job lanes: ingestion, evaluations and training each have a queue of their own (routed by task
name: settings.CELERY_TASK_ROUTES) and a job worker process of their own, so no kind of job waits
behind another: a document uploaded during a 100-case evaluation and a 40-minute fine-tune is
ingested at once, and a lane takes its own jobs one at a time (one training run per training
lane). `manage.py serve` (embedded mode) and `manage.py job_worker` without `--queues` (`make
jobs`) start one `job_worker --queues <lanes>` process per word of JOB_WORKER_LANES and start
each again if it dies. CPU fairness stays with each job: ingestion and training pause while
people's replies are written, evaluations are answered by the model workers' background lane,
and torch threads are JOB_TORCH_THREADS in every lane.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

log = logging.getLogger("studio")

# The queue name before lanes: `--queues jobs` still means what it meant (evaluations, imports,
# fine-tunes and merges), now as the lanes that took them over.
BEFORE_LANES = "jobs"
LANES_BEFORE_LANES = ("evaluations", "training")


class LaneError(ValueError):
    """Names that are not lanes; the sentence says which are."""


def lanes_of(text: str) -> list[str]:
    """'knowledge,evaluations' → the lanes one job worker process takes, in turn."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in settings.JOB_QUEUES and name != BEFORE_LANES]
    if unknown or not names:
        raise LaneError(
            f"{', '.join(unknown) or '(none)'} is not a job queue; choose from "
            f"{', '.join(settings.JOB_QUEUES)} (or {BEFORE_LANES}: {' and '.join(LANES_BEFORE_LANES)})"
        )
    lanes: list[str] = []
    for name in names:
        for lane in LANES_BEFORE_LANES if name == BEFORE_LANES else (name,):
            if lane not in lanes:
                lanes.append(lane)
    return lanes


def queues_of(lanes: list[str]) -> list[str]:
    """The broker queues a worker of these lanes consumes: theirs, and the queue before lanes where
    they took over its jobs (what an older studio left there still runs; studio.celery.LaneTask)."""
    queues = [settings.JOB_QUEUES[lane] for lane in lanes]
    if any(lane in LANES_BEFORE_LANES for lane in lanes):
        queues.append(settings.JOB_QUEUE_BEFORE_LANES)
    return queues


def worker_groups() -> list[list[str]]:
    """JOB_WORKER_LANES as the lanes of each process; a clear error for a name that is not a lane."""
    try:
        groups = [lanes_of(word) for word in settings.JOB_WORKER_LANES]
    except LaneError as exc:
        raise LaneError(f"JOB_WORKER_LANES={' '.join(settings.JOB_WORKER_LANES)!r}: {exc}") from None
    if not groups:
        raise LaneError("JOB_WORKER_LANES is empty: name the lanes, e.g. 'knowledge evaluations training'")
    taken = [lane for group in groups for lane in group]
    missing = [lane for lane in settings.JOB_QUEUES if lane not in taken]
    if missing:  # its jobs would wait forever
        raise LaneError(
            f"JOB_WORKER_LANES={' '.join(settings.JOB_WORKER_LANES)!r} leaves out "
            f"{', '.join(missing)}: every lane needs a worker"
        )
    return groups


def _die_with_parent():
    # Linux: the child gets SIGTERM when its parent dies, even by SIGKILL.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LaneWorkers:
    """One `job_worker --queues <lanes>` child process per group of lanes, each started again if it
    dies (after 1 s, doubling up to 30 s while it keeps dying within a minute)."""

    def __init__(self, groups: list[list[str]]):
        self.groups = groups
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()

    def start(self) -> None:
        for group in self.groups:
            lanes = ",".join(group)
            threading.Thread(target=self._keep_running, args=(lanes,), name=f"job-worker-{lanes}", daemon=True).start()

    def _keep_running(self, lanes: str) -> None:
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
        }
        delay = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", "studio.cli", "manage", "job_worker", "--queues", lanes],
                env=env,
                preexec_fn=_die_with_parent,
            )
            self.processes[lanes] = process
            if self.stopping.is_set():  # stop() came while it started
                process.terminate()
            code = process.wait()
            if self.stopping.is_set():
                return
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.warning("the job worker of %s exited (code %s); starting it again in %.0f s", lanes, code, delay)
            self.stopping.wait(delay)

    def stop(self) -> None:
        """Ask each to stop (Celery's warm shutdown: the job it runs ends first), then kill what is left."""
        self.stopping.set()
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + 10
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
