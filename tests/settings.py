"""Settings for the test run: the real settings, with the test environment set first."""

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_CACHE = Path(os.environ.get("STUDIO_TEST_CACHE", REPO / ".cache" / "tests"))
TINY_MODEL_DIR = TEST_CACHE / "tiny-llama-v2"  # built by conftest.py before the first test
# The job heartbeats of the studios the end-to-end job tests start (JOB_HEARTBEAT_SECONDS and
# JOB_HEARTBEAT_TIMEOUT_SECONDS): a job whose worker stops beating for the lapse is failed. Short,
# so that the killed-worker tests end soon; the lapse many beats long: on a busy 2-core machine a
# living worker's beats (every 2 s) came 4 s apart and a healthy fine-tune was failed at step 0;
# at load 10 a 10 s lapse failed a healthy fine-tune 12 s in (the training process starting).
JOB_HEARTBEAT_S = 0.5
JOB_HEARTBEAT_TIMEOUT_S = 30
JOB_HEARTBEATS = {"JOB_HEARTBEAT_SECONDS": JOB_HEARTBEAT_S, "JOB_HEARTBEAT_TIMEOUT_SECONDS": JOB_HEARTBEAT_TIMEOUT_S}

os.environ["STUDIO_DATA_DIR"] = tempfile.mkdtemp(prefix="studio-test-data-")
os.environ["LLM_MODEL"] = str(TINY_MODEL_DIR)
os.environ["LLM_TEMPERATURE"] = "0"  # greedy: replies are reproducible
os.environ["LLM_MAX_NEW_TOKENS"] = "48"
# Tests start their own workers (or servers with embedded ones) explicitly.
os.environ["LLM_EMBEDDED_WORKER"] = "false"
# Greedy replies decoded in a batch equal those decoded alone exactly in float32; bf16 rounding
# depends on the batch shape. (LLM_DTYPE=auto picks bf16 on CPUs with AVX-512 BF16 or AMX.)
os.environ["LLM_DTYPE"] = "float32"
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)

from studio.data_dir import prepare  # noqa: E402

prepare()  # what manage.py does before the settings are read
from studio.settings import *  # noqa: E402,F403

# A file, not SQLite's shared in-memory database: model workers running in a thread of their own
# (evaluations in sync tests) write beside the test, and only a file lets a writer wait its turn
# (WAL and the busy timeout) instead of failing with "database table is locked".
DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["STUDIO_DATA_DIR"], "test.sqlite3")}  # noqa: F405
