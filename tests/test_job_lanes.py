"""Job lanes (studio/job_lanes.py): ingestion, evaluations and training each have a queue and, in
`make run`, a job worker process of their own. Through a real studio (`manage.py serve`, embedded
mode, the tiny model, Celery on the filesystem broker): a document uploaded while an evaluation and
a fine-tune run is ready while both still run (before: one job worker took one job at a time, and
five documents sat queued behind a 100-case evaluation for over ten minutes); jobs an older studio
left in the one queue before lanes still run, each in its lane. Without a server: the routes by
task name, `--queues` and JOB_WORKER_LANES, and a message on another lane's queue sent on."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from benchmarks.processes import manage, running_studio, shell_token, studio_env
from finetune.tasks import run_fine_tune_task
from knowledge.tests.served import api as knowledge_api
from knowledge.tests.served import wait_for as wait_for_path
from studio import celery
from studio.celery import app
from studio.job_lanes import lanes_of, queues_of
from tests.scaled import ADMIN_PASSWORD
from tests.settings import TINY_MODEL_DIR

REPLY_TOKENS = 200  # every evaluated reply this long (LLM_MIN_NEW_TOKENS): the long evaluation lasts minutes
LONG_EVALUATION_CASES = 200
SETUP = f"""
from django.contrib.auth.models import User
from accounts.services import api_token_create
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="Order JSON", slug="order-json", version={{
    "instructions": "Reply with JSON only.", "template": "Order: {{{{ order }}}}", "max_new_tokens": {REPLY_TOKENS}}})
cases_create(user=admin, source="api", rows=[
    {{"prompt": "order-json", "input": {{"order": f"{{n}} pears"}}, "actual": "pears",
     "expected": '{{"item": "pear", "quantity": %d}}' % n, "split": "eval" if n >= 40 else "train"}}
    for n in range({40 + LONG_EVALUATION_CASES})])
prompt_create(owner=admin, name="Greeting", slug="greeting", version={{"template": "Greet {{{{ name }}}}"}})
cases_create(user=admin, source="api", rows=[
    {{"prompt": "greeting", "input": {{"name": name}}, "actual": "hi", "expected": f"Hello {{name}}"}}
    for name in ("Ann", "Bo", "Cy", "Di")])
print("TOKEN", api_token_create(user=admin, name="lanes")[1])
"""
# What a studio from before lanes did: every evaluation, import, fine-tune and merge went to one
# queue (`<prefix>-jobs`), by task name.
BEFORE_LANES = """
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from evals.services import evaluation_create
from finetune.services import job_create
from prompts.models import Prompt
from studio import jobs
from studio.celery import app


def dispatch_as_before_lanes(model, job_id):
    app.send_task(model.TASK, (job_id,), queue=settings.JOB_QUEUE_BEFORE_LANES)
    model.objects.filter(pk=job_id).update(dispatched_at=timezone.now())


jobs.dispatch = dispatch_as_before_lanes
admin = User.objects.get(username="admin")
version = Prompt.objects.get(slug="greeting").versions.order_by("-number").first()
evaluation = evaluation_create(user=admin, version=version, model_name="", filters={}, scorers=[{"type": "exact_match"}])
fine_tune = job_create(user=admin, name="before-lanes", prompt_slug="order-json", filters={},
                       hyperparameters={"epochs": 1, "batch_size": 8, "max_length": 64, "lora_rank": 4,
                                        "lora_alpha": 8})
print("IDS", evaluation.pk, fine_tune.pk)
"""
WORKERS_OF = """
from evals.models import Evaluation
from finetune.models import FineTuneJob
print("WORKERS", Evaluation.objects.get(pk=%d).worker, FineTuneJob.objects.get(pk=%d).worker)
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("lanes-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        EVAL_BATCH_SIZE=2,
        LLM_MIN_NEW_TOKENS=REPLY_TOKENS,
        LLM_MAX_NEW_TOKENS=REPLY_TOKENS,
        KNOWLEDGE_CHUNK_TOKENS=64,
        KNOWLEDGE_CHUNK_OVERLAP=8,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.env = env
        server.token = shell_token(SETUP, env)
        yield server


def api(studio, method, path, body=None):
    status, answer = knowledge_api(studio, method, path, body)
    assert status < 300, (status, answer)
    return answer


def wait_for(studio, path, condition, timeout=600):
    return wait_for_path(studio, path, condition, timeout=timeout)


@pytest.mark.slow
def test_a_document_uploaded_during_an_evaluation_and_a_fine_tune_is_ready_while_both_still_run(studio):
    evaluation = api(
        studio,
        "POST",
        "/api/evaluations/",
        {"prompt": "order-json", "split": "eval", "scorers": [{"type": "valid_json"}]},
    )["id"]
    fine_tune = api(
        studio,
        "POST",
        "/api/fine-tunes/",
        {
            "prompt": "order-json",
            "hyperparameters": {"epochs": 100, "batch_size": 4, "max_length": 64, "lora_rank": 4, "lora_alpha": 8},
        },
    )["id"]
    evaluation_path, fine_tune_path = f"/api/evaluations/{evaluation}/", f"/api/fine-tunes/{fine_tune}/"
    try:
        wait_for(studio, evaluation_path, lambda s: s["status"] == "running" and s["done"] >= 2)
        wait_for(studio, fine_tune_path, lambda s: s["status"] == "running" and s["step"] >= 1)
        base = api(studio, "POST", "/api/knowledge/", {"name": "Plant handbook"})["id"]
        status, uploaded = knowledge_api(
            studio,
            "POST",
            f"/api/knowledge/{base}/documents/",
            files=[
                ("hours.md", b"# Opening hours\n\nThe plant is open from 9 to 5 on weekdays and closed on Sundays.")
            ],
        )
        assert status == 202, uploaded
        document = wait_for(
            studio,
            f"/api/knowledge/{base}/documents/{uploaded['ids'][0]}/",
            lambda s: s["status"] in ("ready", "failed"),
        )
        assert document["status"] == "ready", document
        # Both were still running when it became ready: it did not wait for either.
        evaluation_state, fine_tune_state = api(studio, "GET", evaluation_path), api(studio, "GET", fine_tune_path)
        assert evaluation_state["status"] == "running", evaluation_state
        assert evaluation_state["done"] < evaluation_state["total"] == LONG_EVALUATION_CASES
        assert fine_tune_state["status"] == "running" and fine_tune_state["step"] < fine_tune_state["total_steps"]
        found = api(studio, "POST", f"/api/knowledge/{base}/search/", {"query": "When is the plant open?"})
        assert found["results"][0]["document"] == "hours.md"
    finally:  # the next test's jobs should not wait for these
        knowledge_api(studio, "POST", f"/api/evaluations/{evaluation}/cancel/", {})
        studio.login("admin", ADMIN_PASSWORD).post(f"/fine-tunes/{fine_tune}/cancel/", {})
    assert wait_for(studio, evaluation_path, lambda s: s["status"] != "running")["status"] == "cancelled"
    assert wait_for(studio, fine_tune_path, lambda s: s["status"] != "running")["status"] == "cancelled"


@pytest.mark.slow
def test_jobs_an_older_studio_left_in_the_queue_before_lanes_run_each_in_its_lane(studio):
    evaluation, fine_tune = map(int, manage(["shell", "-c", BEFORE_LANES], studio.env).split("IDS ")[1].split())
    evaluation_state = wait_for(
        studio, f"/api/evaluations/{evaluation}/", lambda s: s["status"] not in ("queued", "running")
    )
    fine_tune_state = wait_for(
        studio, f"/api/fine-tunes/{fine_tune}/", lambda s: s["status"] not in ("queued", "running")
    )
    assert evaluation_state["status"] == "finished" and evaluation_state["done"] == 4, evaluation_state
    assert fine_tune_state["status"] == "finished" and fine_tune_state["model"] == "before-lanes", fine_tune_state
    workers = manage(["shell", "-c", WORKERS_OF % (evaluation, fine_tune)], studio.env).split("WORKERS ")[1].split()
    lanes = [_lanes_of_process(int(worker.rsplit(":", 1)[1])) for worker in workers]
    assert lanes == [["evaluations"], ["training"]]


def _lanes_of_process(pid: int) -> list[str]:
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return arguments[arguments.index(b"--queues") + 1].decode().split(",")


def test_each_kind_of_job_is_routed_to_its_lane_by_task_name():
    routes = {
        name: app.amqp.router.route({}, name)["queue"].name
        for name in (
            "knowledge.ingest",
            "evals.run_evaluation",
            "evals.import_cases",
            "finetune.run_fine_tune",
            "finetune.merge_model",
            "optimiser.run_optimisation",
        )
    }
    assert routes == {
        "knowledge.ingest": settings.JOB_QUEUES["knowledge"],
        "evals.run_evaluation": settings.JOB_QUEUES["evaluations"],
        "evals.import_cases": settings.JOB_QUEUES["evaluations"],
        "finetune.run_fine_tune": settings.JOB_QUEUES["training"],
        "finetune.merge_model": settings.JOB_QUEUES["training"],
        "optimiser.run_optimisation": settings.JOB_QUEUES["evaluations"],
    }
    assert len(set(settings.JOB_QUEUES.values()) | {settings.JOB_QUEUE_BEFORE_LANES}) == 4
    # The name before lanes still means what it did; the lanes that took its jobs over read its queue.
    assert lanes_of("jobs,knowledge") == ["evaluations", "training", "knowledge"]
    assert queues_of(["knowledge"]) == [settings.JOB_QUEUES["knowledge"]]
    assert settings.JOB_QUEUE_BEFORE_LANES in queues_of(["training"])


def test_a_name_that_is_not_a_lane_is_refused_saying_which_are(settings):
    settings.JOB_WORKER_EMBEDDED = True
    with pytest.raises(
        CommandError, match="--queues: ingest is not a job queue; choose from knowledge, evaluations, training"
    ):
        call_command("job_worker", queues="ingest")
    settings.JOB_WORKER_LANES = ["knowledge", "evaluations"]
    with pytest.raises(
        CommandError,
        match=re.escape("JOB_WORKER_LANES='knowledge evaluations' leaves out training: every lane needs a worker"),
    ):
        call_command("job_worker")
    settings.JOB_WORKER_LANES = ["knowledge", "evaluation"]
    with pytest.raises(CommandError, match="evaluation is not a job queue"):
        call_command("serve")


def test_a_message_that_reached_another_lane_is_sent_on_to_its_own_not_run(monkeypatch):
    """A worker of the evaluations lane that takes a fine-tune from the queue before lanes does
    not train it there: it sends it to the training lane."""
    ran, sent = [], []
    monkeypatch.setattr("finetune.tasks.run_fine_tune", ran.append)  # the name the task calls
    monkeypatch.setattr(app, "send_task", lambda name, args, kwargs=None, **options: sent.append((name, args)))
    monkeypatch.setattr(celery, "consumed_queues", frozenset(queues_of(["evaluations"])))
    run_fine_tune_task.apply((7,))
    assert ran == [] and sent == [("finetune.run_fine_tune", (7,))]
    monkeypatch.setattr(celery, "consumed_queues", frozenset(queues_of(["training"])))
    run_fine_tune_task.apply((7,))
    assert ran == [7] and sent == [("finetune.run_fine_tune", (7,))]
