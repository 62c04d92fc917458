"""An interrupted test run leaves nothing running: the studio, its job worker and a model worker that
a test starts die with the pytest process that started them, even when it is killed (SIGKILL: no
fixture's teardown runs)."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from benchmarks.processes import REPO, die_with_parent

pytestmark = pytest.mark.slow

# Started the way the suite starts them (benchmarks.processes), then held until the run is killed.
INNER_TEST = """
import time
from pathlib import Path

from benchmarks.processes import running_studio, studio_env


def test_it_holds_a_studio_and_a_model_worker(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path, LLM_EMBEDDED_WORKER="false",
                     JOB_WORKER_LANES="knowledge,evaluations,training")
    with running_studio(env, tmp_path / "logs", workers=1):
        Path({ready!r}).write_text("ready")
        time.sleep(600)
"""
# A job worker beside the server, a model worker, the server, the pytest process.
PROCESSES_OF_THE_RUN = 4


def processes_of(tag: str) -> list[int]:
    """The processes whose environment carries the run's tag: every process the run started, however
    deep, and whoever their parent is now (a zombie's environment reads empty: it runs nothing)."""
    marker = f"STUDIO_TEST_RUN_TAG={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environment = open(f"/proc/{entry}/environ", "rb").read()
            except OSError:
                continue
            if marker in environment.split(b"\0"):
                pids.append(int(entry))
    return pids


def wait_until(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not come true within {timeout:.0f} s"
        time.sleep(0.2)


def test_a_killed_test_run_leaves_no_studio_or_worker_running(tmp_path):
    tag = uuid.uuid4().hex
    ready = tmp_path / "ready"
    (tmp_path / "test_inner.py").write_text(INNER_TEST.format(ready=str(ready)))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(STUDIO_TEST_RUN_TAG=tag, PYTHONPATH=str(REPO))
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            f"--basetemp={tmp_path / 'inner'}",
            "test_inner.py",
        ],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "inner.log", "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        wait_until(
            lambda: ready.exists() and len(processes_of(tag)) >= PROCESSES_OF_THE_RUN or run.poll() is not None,
            timeout=240,
            what="the inner run's studio, job worker and model worker",
        )
        assert run.poll() is None, (tmp_path / "inner.log").read_text()

        run.send_signal(signal.SIGKILL)
        run.wait()
        wait_until(lambda: not processes_of(tag), timeout=60, what="the end of every process of the killed run")
    finally:
        for pid in processes_of(tag):  # what the run left, when this failed: not for the next run to meet
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
