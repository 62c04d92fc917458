"""Evaluations on real Celery job workers, driven through the API as a team's CI would: the one
`manage.py serve` starts beside the web process (filesystem broker), and `manage.py job_worker`
on Redis in scaled mode. Cancel, and a worker killed midway."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from benchmarks.processes import running_studio, shell_token, start_process, stop_process, studio_env
from tests.scaled import ADMIN_PASSWORD
from tests.settings import JOB_HEARTBEAT_TIMEOUT_S, JOB_HEARTBEATS, TINY_MODEL_DIR

SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="Order JSON", slug="order-json", version={
    "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": %d})
print("TOKEN", api_token_create(user=admin, name="ci")[1])
"""


def api(studio, method, path, body=None):
    request = urllib.request.Request(
        studio.base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {studio.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def set_up(studio, env, cases=24, reply_tokens=48):
    studio.token = shell_token(SETUP % reply_tokens, env)
    rows = [
        {"prompt": "order-json", "input": {"order": f"{n} pears"}, "expected": f'{{"quantity": {n}}}'}
        for n in range(cases)
    ]
    status, created = api(studio, "POST", "/api/failure-cases/", rows)
    assert status == 201 and len(created["ids"]) == cases


def wait_for(studio, evaluation_id, condition, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, state = api(studio, "GET", f"/api/evaluations/{evaluation_id}/")
        if condition(state):
            return state
        time.sleep(0.3)
    raise TimeoutError(f"evaluation {evaluation_id}: {state}")


def job_worker_pids(parent_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent_pid), "-f", "job_worker"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("jobs-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **JOB_HEARTBEATS,
        EVAL_BATCH_SIZE=4,
        LLM_MIN_NEW_TOKENS=48,
    )  # every reply 48 tokens: batches take a moment
    with running_studio(env, data_dir / "logs") as server:
        set_up(server, env)
        yield server


@pytest.mark.slow
def test_an_evaluation_runs_to_the_end_on_the_embedded_job_worker(studio):
    status, created = api(
        studio,
        "POST",
        "/api/evaluations/",
        {"prompt": "order-json", "scorers": [{"type": "valid_json"}, {"type": "contains", "text": "quantity"}]},
    )
    assert status == 202
    seen = []
    final = wait_for(
        studio, created["id"], lambda s: seen.append(s["done"]) or s["status"] not in ("queued", "running")
    )
    assert final["status"] == "finished", final
    assert final["done"] == final["total"] == 24 and len(final["results"]) == 24
    assert any(0 < done < 24 for done in seen), "progress was visible while it ran"
    assert final["elapsed_s"] > 0


@pytest.mark.slow
def test_cancel_stops_it_between_batches_and_keeps_the_results(studio):
    _, created = api(studio, "POST", "/api/evaluations/", {"prompt": "order-json"})
    wait_for(studio, created["id"], lambda s: s["done"] >= 4)
    status, _ = api(studio, "POST", f"/api/evaluations/{created['id']}/cancel/", {})
    assert status == 200
    final = wait_for(studio, created["id"], lambda s: s["status"] not in ("queued", "running"), timeout=30)
    assert final["status"] == "cancelled" and 4 <= final["done"] < 24
    assert len(final["results"]) == final["done"]


@pytest.mark.slow
def test_a_worker_killed_midway_fails_the_run_with_the_reason_and_a_new_worker_takes_the_next(studio):
    _, created = api(studio, "POST", "/api/evaluations/", {"prompt": "order-json"})
    wait_for(studio, created["id"], lambda s: s["done"] >= 4)
    for pid in job_worker_pids(studio.server.pid):
        os.kill(pid, signal.SIGKILL)
    final = wait_for(studio, created["id"], lambda s: s["status"] == "failed", timeout=JOB_HEARTBEAT_TIMEOUT_S + 120)
    assert "job worker stopped" in final["error"] and 4 <= final["done"] < 24
    assert len(final["results"]) == final["done"]  # what it finished is kept
    _, again = api(studio, "POST", "/api/evaluations/", {"prompt": "order-json", "split": "train"})
    assert wait_for(studio, again["id"], lambda s: s["status"] not in ("queued", "running"))["status"] == "finished"


@pytest.mark.scaled
def test_scaled_mode_runs_evaluations_on_a_job_worker_over_redis(scaled_env, tmp_path):
    env, _ = scaled_env
    env = {**env, **{name: str(value) for name, value in JOB_HEARTBEATS.items()}}
    with running_studio(env, tmp_path, workers=1) as studio:  # a model worker answers the cases
        worker = start_process(["job_worker"], env, tmp_path / "job-worker.log")
        try:
            set_up(studio, env, cases=6, reply_tokens=16)
            _, created = api(studio, "POST", "/api/evaluations/", {"prompt": "order-json"})
            final = wait_for(studio, created["id"], lambda s: s["status"] not in ("queued", "running"))
            assert final["status"] == "finished" and final["done"] == 6, final
        finally:
            stop_process(worker)


def test_ingestion_waits_in_a_queue_of_its_own_and_workers_take_both():
    """A thousand documents queued for ingestion do not stand in front of an evaluation: their jobs
    go to the knowledge queue, and a job worker given both (`--queues jobs,knowledge`, the default
    before lanes) takes from both queues in turn (tests/test_job_lanes.py: a process per lane)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from studio.celery import app
    from studio.job_lanes import lanes_of, queues_of

    assert app.amqp.router.route({}, "knowledge.ingest")["queue"].name == settings.JOB_QUEUES["knowledge"]
    assert app.amqp.router.route({}, "evals.run_evaluation")["queue"].name == settings.JOB_QUEUES["evaluations"]
    assert settings.JOB_QUEUES["knowledge"] != settings.JOB_QUEUES["evaluations"]
    assert {settings.JOB_QUEUES["knowledge"], settings.JOB_QUEUES["evaluations"]} <= set(
        queues_of(lanes_of("jobs,knowledge"))
    )
    with pytest.raises(CommandError, match="not a job queue"):
        call_command("job_worker", queues="ingest")
