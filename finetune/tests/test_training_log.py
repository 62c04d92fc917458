"""The job's log panel shows the studio's own lines; the training process's raw output (progress
bars, library warnings) goes to a file the job's page links to."""

import json

import pytest

from finetune import runner
from finetune.models import FineTuneJob
from studio.llm.training import PROGRESS_PREFIX

pytestmark = pytest.mark.django_db


def test_progress_bars_and_warnings_stay_out_of_the_log_panel_but_in_the_raw_log(
    client, carol, order_prompt, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    job = FineTuneJob.objects.create(
        name="j1", base_model="b", prompt=order_prompt, created_by=carol, hyperparameters={}
    )
    folder = runner.job_folder(job)
    folder.mkdir(parents=True)
    state = {
        "metrics": [],
        "log": [],
        "outcome": None,
        "started": None,
        "done": None,
        "last_beat": 0.0,
        "paused": False,
        "cancelled": False,
        "raw_log": open(folder / runner.RAW_LOG, "a"),
    }
    lines = [
        "  0%|          | 0/12 [00:00<?, ?it/s]\n",
        "/x/transformers/modeling_utils.py:3303: FutureWarning: `is_gradient_checkpointing` is deprecated\n",
        PROGRESS_PREFIX + json.dumps({"event": "start", "total_steps": 12}) + "\n",
        PROGRESS_PREFIX + json.dumps({"event": "log", "step": 1, "loss": 2.5, "tokens_seen": 100}) + "\n",
        "{'loss': 2.5, 'grad_norm': 1.0}\n",
    ]
    for line in lines:
        runner._take(line, job, state)
    state["raw_log"].close()
    assert state["log"] == ["training started: 12 steps", "step 1 · loss 2.5"]
    raw = (folder / runner.RAW_LOG).read_text()
    assert "FutureWarning" in raw and "0/12" in raw
    FineTuneJob.objects.filter(pk=job.pk).update(started_at=job.created_at)
    client.force_login(carol)
    assert "The training process's full output" in client.get(job.get_absolute_url()).content.decode()
    served = client.get(f"/fine-tunes/{job.pk}/training.log")
    assert served.status_code == 200 and b"FutureWarning" in b"".join(served.streaming_content)


def test_the_raw_log_is_for_staff_only(client, alice, carol, order_prompt):
    job = FineTuneJob.objects.create(
        name="j2", base_model="b", prompt=order_prompt, created_by=carol, hyperparameters={}
    )
    client.force_login(alice)
    assert client.get(f"/fine-tunes/{job.pk}/training.log").status_code == 403
