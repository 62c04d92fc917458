"""Documents uploaded while an evaluation and a fine-tune run (issue 26): how long until each is
ready, and what the embedded job workers cost in memory. A served studio in embedded mode
(`manage.py serve`, which starts the job workers), the bundled model by default:

    .venv/bin/python -m benchmarks.job_lanes [--model smollm2] [--cases 100] [--documents 5] [--timeout 600]

It starts an evaluation of `--cases` cases and a LoRA fine-tune through the API, waits until both
run (the evaluation has answered a case, the fine-tune has trained a step), uploads `--documents`
small Markdown documents in one request and times each to ready (or to `--timeout`), saying
whether the evaluation and the fine-tune were still running then. Memory: the RSS of the job worker
processes (children of `serve` running `job_worker`; the training process they start is counted
apart) once they have started and settled, and their peak sum meanwhile (psutil, every 0.2 s).
Then it cancels both and stops the studio. The same script measures the code before lanes (one job
worker): run it from that checkout. Not part of `make bench` (minutes, and a figure of waiting).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.processes import REPO, running_studio, shell_token, studio_env
from knowledge.tests.served import api  # Django-free: HTTP only

SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="Order JSON", slug="order-json", version={
    "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": %(tokens)d})
cases_create(user=admin, source="api", rows=[
    {"prompt": "order-json", "input": {"order": f"{n} pears and {n + 1} apples"}, "actual": "pears",
     "expected": '{"pears": %%d, "apples": %%d}' %% (n, n + 1), "split": "train" if n < %(train)d else "eval"}
    for n in range(%(train)d + %(cases)d)])
print("TOKEN", api_token_create(user=admin, name="bench")[1])
"""
MIB = 2**20


def job_worker_processes(server_pid: int) -> list[psutil.Process]:
    """The job workers `serve` started (one before lanes, one per lane after)."""
    try:
        children = psutil.Process(server_pid).children()
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "job_worker" in " ".join(_cmdline(child))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


class PeakJobWorkerRss:
    """The largest sum of the job workers' RSS (and, apart, of the processes they started) while the
    block ran."""

    def __init__(self, server_pid: int):
        self.server_pid, self.workers_peak, self.children_peak = server_pid, 0, 0
        self._done = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.2):
            workers = job_worker_processes(self.server_pid)
            self.workers_peak = max(self.workers_peak, sum(map(_rss, workers)))
            started = [child for worker in workers for child in _children(worker)]
            self.children_peak = max(self.children_peak, sum(map(_rss, started)))

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def settled_job_workers(server_pid: int, *, timeout: float = 180) -> list[psutil.Process]:
    """The job workers once they all run and their RSS stopped growing (3 s unchanged within 1 MiB)."""
    deadline, last, steady_since = time.monotonic() + timeout, None, None
    while time.monotonic() < deadline:
        workers = job_worker_processes(server_pid)
        total = sum(map(_rss, workers))
        if workers and last is not None and abs(total - last) < MIB:
            steady_since = steady_since or time.monotonic()
            if time.monotonic() - steady_since >= 3:
                return workers
        else:
            steady_since = None
        last = total
        time.sleep(0.5)
    raise TimeoutError("the job workers did not settle")


def until(read, condition, *, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        state = read()
        if condition(state) or time.monotonic() > deadline:
            return state
        time.sleep(every)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.job_lanes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="as LLM_MODEL (default: the bundled model)")
    parser.add_argument("--cases", type=int, default=100, help="cases in the evaluation")
    parser.add_argument("--tokens", type=int, default=64, help="reply length of each evaluated case")
    parser.add_argument("--train-cases", type=int, default=40)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--model-cache", default=str(REPO / "data" / "models"), help="as LLM_MODEL_CACHE_DIR")
    parser.add_argument("--timeout", type=float, default=600, help="how long to wait for the documents (s)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-lanes-"))
    password = secrets.token_urlsafe(12)
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        STUDIO_SQLITE_PATH=data_dir / "studio.sqlite3",
        LLM_MODEL=args.model,
        LLM_MODEL_CACHE_DIR=args.model_cache,
        LLM_EMBEDDED_WORKER="true",
        REDIS_URL="",
        DATABASE_URL="",
        STUDIO_ADMIN_PASSWORD=password,
        LLM_TEMPERATURE=0,
        LLM_MIN_NEW_TOKENS=args.tokens,
        LLM_MAX_NEW_TOKENS=args.tokens,
    )
    load = psutil.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {psutil.cpu_count()} cores", flush=True)
    try:
        with running_studio(env, data_dir / "logs") as studio:
            workers = settled_job_workers(studio.server.pid)
            idle = {" ".join(_cmdline(w)[-2:]) if "--queues" in _cmdline(w) else "job_worker": _rss(w) for w in workers}
            print(
                f"job workers at rest: {len(workers)} processes, {sum(idle.values()) / MIB:.0f} MiB RSS "
                f"({', '.join(f'{name} {rss / MIB:.0f}' for name, rss in idle.items())})",
                flush=True,
            )
            studio.token = shell_token(
                SETUP % {"tokens": args.tokens, "train": args.train_cases, "cases": args.cases}, env
            )
            with PeakJobWorkerRss(studio.server.pid) as peak:
                measure(studio, args, password)
            print(
                f"job workers' peak while they ran: {peak.workers_peak / MIB:.0f} MiB RSS (the processes they "
                f"started, the training process: {peak.children_peak / MIB:.0f} MiB)",
                flush=True,
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def measure(studio, args, password) -> None:
    _, evaluation = api(
        studio,
        "POST",
        "/api/evaluations/",
        {"prompt": "order-json", "split": "eval", "scorers": [{"type": "valid_json"}]},
    )
    _, fine_tune = api(
        studio,
        "POST",
        "/api/fine-tunes/",
        {"prompt": "order-json", "hyperparameters": {"epochs": args.epochs, "batch_size": 4, "max_length": 128}},
    )
    evaluation_path, fine_tune_path = f"/api/evaluations/{evaluation['id']}/", f"/api/fine-tunes/{fine_tune['id']}/"
    started = time.monotonic()
    try:
        state = until(
            lambda: api(studio, "GET", evaluation_path)[1],
            lambda s: s["done"] >= 1 or s["status"] not in ("queued", "running"),
            timeout=args.timeout,
        )
        print(
            f"evaluation answering ({state['status']}, {state['done']}/{state['total']}) after "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        # Before lanes the fine-tune waited behind the evaluation: then the documents are uploaded
        # once the evaluation runs, the fine-tune queued behind it.
        state = until(
            lambda: api(studio, "GET", fine_tune_path)[1],
            lambda s: s["step"] >= 1 or s["status"] not in ("queued", "running"),
            timeout=120,
        )
        print(
            f"fine-tune: {state['status']}, step {state['step']}/{state['total_steps']} {state.get('error') or ''} after "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        _, base = api(studio, "POST", "/api/knowledge/", {"name": "Handbook"})
        files = [
            (f"note-{n}.md", f"# Note {n}\n\nValve {n} is checked every {n + 2} days by the morning shift.".encode())
            for n in range(args.documents)
        ]
        uploaded_at = time.monotonic()
        status, uploaded = api(studio, "POST", f"/api/knowledge/{base['id']}/documents/", files=files)
        assert status == 202, uploaded
        ready_after, pending = {}, list(uploaded["ids"])
        while pending and time.monotonic() - uploaded_at < args.timeout:
            for document_id in list(pending):
                _, document = api(studio, "GET", f"/api/knowledge/{base['id']}/documents/{document_id}/")
                if document["status"] in ("ready", "failed"):
                    ready_after[document_id] = (time.monotonic() - uploaded_at, document["status"])
                    pending.remove(document_id)
            time.sleep(0.2)
        evaluation_state, fine_tune_state = (
            api(studio, "GET", evaluation_path)[1],
            api(studio, "GET", fine_tune_path)[1],
        )
        times = sorted(seconds for seconds, _ in ready_after.values())
        print(
            f"documents: {len(times)} of {args.documents} ready"
            + (f" after {', '.join(f'{s:.1f}' for s in times)} s" if times else "")
            + (
                f"; {len(pending)} still {'/'.join(sorted({_status(studio, base, d) for d in pending}))} "
                f"after {args.timeout:.0f} s"
                if pending
                else ""
            ),
            flush=True,
        )
        print(
            f"then: evaluation {evaluation_state['status']} {evaluation_state['done']}/{evaluation_state['total']}, "
            f"fine-tune {fine_tune_state['status']} step {fine_tune_state['step']}/{fine_tune_state['total_steps']}",
            flush=True,
        )
    finally:
        api(studio, "POST", f"/api/evaluations/{evaluation['id']}/cancel/", {})
        studio.login("admin", password).post(f"/fine-tunes/{fine_tune['id']}/cancel/", {})


def _status(studio, base, document_id) -> str:
    return api(studio, "GET", f"/api/knowledge/{base['id']}/documents/{document_id}/")[1]["status"]


if __name__ == "__main__":
    main()
