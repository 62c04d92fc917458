"""Fine-tuning through a real studio: staff launches a job from the web form, a real Celery job
worker trains (peft + trl, tiny model, CPU), progress shows, the adapter becomes a model that
answers in chat; cancel midway, a forced failure, a killed job worker; a plain user is refused."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from benchmarks.processes import frames_until, next_frame, open_chat_socket, running_studio, shell_token, studio_env
from tests.settings import JOB_HEARTBEAT_TIMEOUT_S, JOB_HEARTBEATS, TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # starts a studio; its fine-tunes run training processes

ADMIN_PASSWORD = "admin-password-1"
SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
User.objects.create_user("bob", password="bob-password-1")
prompt_create(owner=admin, name="Order JSON", slug="order-json", version={
    "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": 8})
cases_create(user=admin, source="api", rows=[
    {"prompt": "order-json", "input": {"order": f"{n} pears"}, "actual": "pears",
     "expected": '{"item": "pear", "quantity": %d}' % n, "split": "eval" if n % 5 == 0 else "train"}
    for n in range(40)])
print("TOKEN", api_token_create(user=admin, name="pipeline")[1])
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("finetune-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **JOB_HEARTBEATS,
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=8,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.token = shell_token(SETUP, env)
        yield server


def api(studio, path, body=None):
    request = urllib.request.Request(
        studio.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {studio.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for(studio, job_id, condition, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api(studio, f"/api/fine-tunes/{job_id}/")
        if condition(state):
            return state
        time.sleep(0.5)
    raise TimeoutError(state)


def launch(session, **fields):
    form = {
        "prompt": "order-json",
        "objective": "sft",
        "method": "lora",
        "epochs": "1",
        "batch_size": "4",
        "max_length": "64",
        "lora_rank": "4",
        "lora_alpha": "8",
        **fields,
    }
    status, _, headers = session.post("/fine-tunes/new/", form)
    assert status == 302, status
    return int(re.search(r"/fine-tunes/(\d+)/", headers["Location"]).group(1))


async def test_staff_launch_from_the_form_watch_progress_and_chat_with_the_result(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    job_id = launch(session, name="pears-v1", epochs="2")
    seen = []
    final = wait_for(
        studio, job_id, lambda s: seen.append((s["step"], len(s["losses"]))) or s["status"] not in ("queued", "running")
    )
    assert final["status"] == "finished", final.get("error")
    assert final["step"] == final["total_steps"] == 16 and final["model"] == "pears-v1"  # 32 train rows / 4, 2 epochs
    assert any(0 < step < 16 for step, _ in seen), "progress was visible while it trained"
    assert len(final["losses"]) >= 16 and final["tokens_seen"] > 0
    page = session.get(f"/fine-tunes/{job_id}/")[1]
    assert "loss-chart__train" in page and "is now a model in chat" in page

    conversation_id = session.new_conversation()
    chat_page = session.get(f"/chat/{conversation_id}/")[1]
    assert '<option value="pears-v1"' in chat_page  # the model picker offers it
    chat_socket = await open_chat_socket(studio, session, conversation_id)
    await chat_socket.send(json.dumps({"type": "send", "content": "Order: 3 pears", "model": "pears-v1"}))
    frames = await frames_until(chat_socket, "done")
    reply = [f for f in frames if f["type"] == "message" and f["message"]["role"] == "assistant"][-1]
    assert frames[-1]["status"] == "complete" and reply["message"]["model"] == "pears-v1"
    await chat_socket.send(json.dumps({"type": "send", "content": "and now?", "model": "no-such-model"}))
    assert "There is no model" in (await next_frame(chat_socket))["error"]
    await chat_socket.close()


def test_cancel_midway_stops_at_a_step_and_registers_nothing(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    job_id = launch(session, name="pears-cancelled", epochs="20")
    wait_for(studio, job_id, lambda s: s["step"] >= 3)
    session.post(f"/fine-tunes/{job_id}/cancel/", {})
    final = wait_for(studio, job_id, lambda s: s["status"] not in ("queued", "running"), timeout=60)
    assert final["status"] == "cancelled" and 3 <= final["step"] < final["total_steps"] and final["model"] is None
    assert "pears-cancelled" not in session.get("/chat/")[1]


def test_a_forced_failure_ends_with_the_reason(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    job_id = launch(session, name="pears-broken", target_modules="no_such_layer")
    final = wait_for(studio, job_id, lambda s: s["status"] not in ("queued", "running"))
    assert final["status"] == "failed" and "no_such_layer" in final["error"] and final["model"] is None


def test_a_killed_job_worker_fails_the_job_instead_of_running_forever(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    job_id = launch(session, name="pears-killed", epochs="20")
    wait_for(studio, job_id, lambda s: s["step"] >= 2)
    workers = subprocess.run(
        ["pgrep", "-P", str(studio.server.pid), "-f", "job_worker"], capture_output=True, text=True
    ).stdout.split()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    final = wait_for(studio, job_id, lambda s: s["status"] == "failed", timeout=JOB_HEARTBEAT_TIMEOUT_S + 120)
    assert "job worker stopped" in final["error"]


def test_a_plain_user_is_refused(studio):
    bob = studio.login("bob", "bob-password-1")
    for path in ("/fine-tunes/", "/fine-tunes/new/", "/fine-tunes/1/"):
        assert bob.get(path)[0] == 403
    assert bob.post("/fine-tunes/new/", {"prompt": "order-json"})[0] == 403
