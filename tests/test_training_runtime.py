"""The training process itself (studio.llm.training), Django-free, on the tiny model with real
peft and trl: progress lines, an adapter saved, stop at a step boundary, bad data, the launch
command for several GPUs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import REPO
from studio.llm.training import PROGRESS_PREFIX, launch_command, merge_adapter
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # runs training processes


def write_job(folder: Path, rows: int = 12, **config):
    folder.mkdir(parents=True, exist_ok=True)
    base = {
        "base_model_folder": str(TINY_MODEL_DIR),
        "epochs": 1,
        "batch_size": 2,
        "max_length": 64,
        "lora_rank": 4,
        "lora_alpha": 8,
        "eval_share": 0.2,
    }
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    (folder / "data.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [
                        {"role": "system", "content": "JSON only."},
                        {"role": "user", "content": f"Order: {n} figs"},
                    ],
                    "completion": [{"role": "assistant", "content": f'{{"quantity": {n}}}'}],
                }
            )
            + "\n"
            for n in range(rows)
        )
    )


def run(folder: Path, timeout=300) -> tuple[int, list[dict]]:
    result = subprocess.run(launch_command(folder, gpus=1), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    events = [
        json.loads(line[len(PROGRESS_PREFIX) :])
        for line in result.stdout.splitlines()
        if line.startswith(PROGRESS_PREFIX)
    ]
    return result.returncode, events


def test_a_few_steps_report_progress_and_save_an_adapter_that_merges(tmp_path):
    write_job(tmp_path / "job")
    code, events = run(tmp_path / "job")
    assert code == 0, events
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "step" in kinds
    start = events[0]
    assert start["total_steps"] == 5  # 12 rows, 20 % held out for the eval loss: 10 / batch 2
    losses = [e for e in events if e["event"] == "log" and "loss" in e]
    assert losses and all(e["tokens_seen"] > 0 for e in losses)
    assert any("eval_loss" in e for e in events)
    assert (tmp_path / "job" / "adapter" / "adapter_model.safetensors").exists()
    merge_adapter(str(TINY_MODEL_DIR), str(tmp_path / "job" / "adapter"), str(tmp_path / "merged"))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged") is not None  # a plain model folder


def test_a_stop_file_ends_it_at_a_step_boundary_with_the_adapter_saved(tmp_path):
    write_job(tmp_path / "job", rows=40, epochs=3)
    (tmp_path / "job" / "stop").touch()
    code, events = run(tmp_path / "job")
    done = events[-1]
    assert code == 0 and done["event"] == "done" and done["metrics"]["stopped_early"]
    assert done["metrics"]["steps"] == 1
    assert (tmp_path / "job" / "adapter" / "adapter_config.json").exists()


def test_bad_data_and_bad_settings_end_with_a_clear_error(tmp_path):
    write_job(tmp_path / "empty", rows=0)
    code, events = run(tmp_path / "empty")
    assert code != 0 and events[-1]["event"] == "error" and "no training rows" in events[-1]["message"]
    write_job(tmp_path / "layers", target_modules=["no_such_layer"])
    code, events = run(tmp_path / "layers")
    assert code != 0 and events[-1]["event"] == "error" and "no_such_layer" in events[-1]["message"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    code, events = run(tmp_path / "broken")
    assert code == 2 and events[-1]["kind"] == "data"


def test_several_gpus_launch_one_process_each_through_accelerate(tmp_path):
    command = launch_command(tmp_path, gpus=4, python="/usr/bin/python3")
    assert command[:3] == ["/usr/bin/python3", "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4" and "--multi_gpu" in command
    assert command[-3:] == ["-m", "studio.llm.training", str(tmp_path)]
    assert launch_command(tmp_path, gpus=1, python=sys.executable) == [
        sys.executable,
        "-m",
        "studio.llm.training",
        str(tmp_path),
    ]


def test_dpo_prefers_the_expected_answer_to_the_actual_one(tmp_path):
    folder = tmp_path / "dpo"
    write_job(folder, objective="dpo")
    (folder / "data.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": f"Order: {n} figs"}],
                    "chosen": [{"role": "assistant", "content": f'{{"quantity": {n}}}'}],
                    "rejected": [{"role": "assistant", "content": "figs"}],
                }
            )
            + "\n"
            for n in range(12)
        )
    )
    code, events = run(folder)
    assert code == 0, events[-1]
    assert events[-1]["event"] == "done" and (folder / "adapter" / "adapter_config.json").exists()
