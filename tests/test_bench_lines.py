"""`make bench` prints its figures one per line, in the formats the README gives (clients parse
them). Here on the tiny model and the quick paths only; the figures are not asserted."""

import re
import subprocess
import sys

import pytest

from benchmarks.processes import REPO, studio_env
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # runs the bench's processes


def test_the_constrained_bench_prints_its_ratio_and_compile_time_lines(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data", LLM_MODEL_CACHE_DIR=TEST_CACHE / "models", LLM_DTYPE="float32")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(TINY_MODEL_DIR),
            "--paths",
            "constrained",
            "--runs",
            "1",
            "--tokens",
            "8",
            "--conversations",
            "",
            "--constrained-tokens",
            "40",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"constrained/free decode tokens/s ratio: \d+\.\d\d", line) for line in lines), lines
    assert any(re.fullmatch(r"schema compile time: \d+\.\d ms", line) for line in lines), lines
    assert (tmp_path / "bench.json").exists()


def test_the_tools_bench_prints_its_ratio_line(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data", LLM_MODEL_CACHE_DIR=TEST_CACHE / "models", LLM_DTYPE="float32")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(TINY_MODEL_DIR),
            "--paths",
            "tools",
            "--runs",
            "1",
            "--tokens",
            "8",
            "--conversations",
            "",
            "--constrained-tokens",
            "60",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"tool-call/free decode tokens/s ratio: \d+\.\d\d", line) for line in lines), lines


def test_the_knowledge_bench_prints_its_ingestion_ratio_and_search_latency_lines(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--paths",
            "knowledge",
            "--knowledge-chunks",
            "100",
            "--knowledge-sizes",
            "300",
            "--knowledge-engines",
            "embedded",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"ingestion/embedding-only chunks/s ratio: \d+\.\d\d", line) for line in lines), lines
    # The scaled engines print the same line (one f-string); here only the embedded one runs.
    latency = r"knowledge search latency, 300 chunks, (embedded|scaled), (hybrid|dense): p50 \d+\.\d ms, p95 \d+\.\d ms"
    found = {re.fullmatch(latency, line).groups() for line in lines if re.fullmatch(latency, line)}
    assert {("embedded", "hybrid"), ("embedded", "dense")} <= found, lines


def test_the_prefill_bench_prints_its_ratio_and_longest_gap_lines(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data", LLM_MODEL_CACHE_DIR=TEST_CACHE / "models", LLM_DTYPE="float32")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(TINY_MODEL_DIR),
            "--paths",
            "prefill",
            "--runs",
            "1",
            "--tokens",
            "8",
            "--conversations",
            "",
            "--prefill-tokens",
            "1500",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    ratio = r"chat during a long prefill/alone tokens/s ratio: \d+\.\d\d"
    assert any(re.fullmatch(ratio, line) for line in lines), lines
    assert any(re.fullmatch(r"longest gap between tokens during a long prefill: \d+ ms", line) for line in lines), lines


def test_the_retrieval_bench_prints_recall_by_stage_and_the_reranking_ratio(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data", LLM_MODEL_CACHE_DIR=TEST_CACHE / "models", LLM_DTYPE="float32")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(TINY_MODEL_DIR),
            "--paths",
            "retrieval",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"reranked/plain search p95 latency ratio: \d+\.\d\d", line) for line in lines), lines
    for corpus in ("loop demo corpus", "long articles"):
        stages = rf"retrieval recall@5, {corpus} \(\d+ questions, chunks of \d+ tokens\): every stage \d\.\d\d .*"
        assert any(re.fullmatch(stages, line) and "without near-duplicate collapse" in line for line in lines), lines
    assert any(re.match(r"query expansion \(.*\): long articles recall@5 \d\.\d\d", line) for line in lines), lines


def test_the_online_evaluation_bench_prints_its_ratio_line(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data", LLM_MODEL_CACHE_DIR=TEST_CACHE / "models", LLM_DTYPE="float32")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(TINY_MODEL_DIR),
            "--paths",
            "embedded,online",
            "--runs",
            "1",
            "--tokens",
            "128",  # many chunks a reply (flushed every 75 ms), so that each has a speed even on a busy machine
            "--conversations",
            "",
            "--online-replies",
            "2",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"online evaluation/none chat tokens/s ratio: \d+\.\d\d", line) for line in lines), lines
    # The rule scored every reply (the warm-up and two rounds of two), its judge included.
    assert any("llm_judge 5 scored, 0 errors" in line for line in lines), lines


def test_the_monitoring_bench_prints_a_metrics_line_per_database(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path / "data")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--paths",
            "monitoring",
            "--monitoring-replies",
            "20000",
            "--output",
            str(tmp_path / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    named = [
        i for i, line in enumerate(lines) if re.match(r"metrics, (embedded \(SQLite\)|scaled \(PostgreSQL\)): ", line)
    ]
    figures = [i for i, line in enumerate(lines) if re.fullmatch(r"metrics at 20K replies p95 ms: \d+\.\d", line)]
    # A line naming the database, then its figure: SQLite always, PostgreSQL where one answers here.
    assert named and [i + 1 for i in named] == figures, lines
    assert "20,000 replies rolled up" in lines[named[0]] and "embedded (SQLite)" in lines[named[0]], lines
