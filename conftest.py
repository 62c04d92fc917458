"""Test-wide fixtures: the tiny model (built once and cached), users alice and bob."""

import os
from pathlib import Path

import pytest

from benchmarks.processes import MIGRATED_DB_ENV, copy_sqlite, start_process
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

# Markers of tests that start processes (Chromium, PostgreSQL and Redis with scaled studios, a
# throwaway PostgreSQL 16): such a test is slow too. Other tests that start a studio, a worker, a
# training run or a wheel build say `slow` themselves (in their module's `pytestmark` or on the test).
SLOW_BY_MARKER = ("browser", "scaled", "pgvector")


def pytest_collection_modifyitems(config, items):
    """`make check` runs `-m "not slow"`: the unit and in-process tests, for every edit; `make test`
    runs everything."""
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_BY_MARKER):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    """A test without the slow marker that starts a studio or a worker (benchmarks.processes, as
    running_studio does) fails, saying to mark it: `make check` starts none. Set before the test's
    fixtures, so a module's studio fixture is caught too."""
    from benchmarks import processes

    processes.start_process = start_process if item.get_closest_marker("slow") else _refused_start(item.nodeid)


def _refused_start(nodeid: str):
    def start_process(args, env, log_path):
        raise AssertionError(
            f"{nodeid} starts `manage.py {' '.join(args)}`: mark it @pytest.mark.slow "
            "(make check runs the tests that start no process)"
        )

    return start_process


def pytest_configure(config):
    from studio.llm.tiny import build_tiny_model

    build_tiny_model(TINY_MODEL_DIR)
    os.environ[MIGRATED_DB_ENV] = str(_migrated_database())
    config.untracked_at_start = _untracked_files()


def _migrated_database() -> Path:
    """A SQLite database with every migration applied, for the studios the tests start
    (benchmarks.processes.studio_env copies it); made once per set of migrations."""
    import hashlib
    import subprocess
    import sys
    import tempfile

    import django

    repo = Path(__file__).parent
    digest = hashlib.sha256(django.__version__.encode())
    # The migrations, and what runs after them (post_migrate: the full-text triggers, the vector column).
    for path in sorted(
        [
            *repo.glob("*/migrations/*.py"),
            *repo.glob("*/apps.py"),
            repo / "chat" / "search_index.py",
            repo / "knowledge" / "keyword_index.py",
            repo / "knowledge" / "pgvector.py",
            repo / "studio" / "sqlite_fts.py",
        ]
    ):
        digest.update(path.relative_to(repo).as_posix().encode() + path.read_bytes())
    target = TEST_CACHE / f"migrated-{digest.hexdigest()[:16]}.sqlite3"
    if target.exists():
        return target
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="studio-migrate-") as folder:
        staging = Path(folder) / "studio.sqlite3"
        env = {
            k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", MIGRATED_DB_ENV)
        }
        env.update(DJANGO_SETTINGS_MODULE="studio.settings", STUDIO_DATA_DIR=folder, STUDIO_SQLITE_PATH=str(staging))
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=repo, env=env, check=True, timeout=600)
        partial = TEST_CACHE / f".{target.name}.{os.getpid()}"
        copy_sqlite(staging, partial)
        partial.replace(target)  # whole or not at all, whichever test process finishes first
    for stale in TEST_CACHE.glob("migrated-*.sqlite3"):  # made for migrations that have changed since
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def _untracked_files() -> set[str] | None:
    """Files git does not track and does not ignore (None outside a git checkout)."""
    import subprocess

    done = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    return set(done.stdout.splitlines()) if done.returncode == 0 else None


def pytest_sessionfinish(session, exitstatus):
    """The suite fails when it leaves a run-time file in the checkout (a broker's control folder, a
    database, a cache): everything the studio writes belongs under its data folder."""
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller checks once all of them are done
    before, after = getattr(session.config, "untracked_at_start", None), _untracked_files()
    if before is None or after is None:
        return
    created = sorted(after - before)
    if created:
        session.config.get_terminal_writer().line(
            "FAILED: the suite wrote files into the checkout (they belong under the data folder):\n  "
            + "\n  ".join(created),
            red=True,
        )
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return TINY_MODEL_DIR


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from studio.llm import load_model

    return load_model(str(tiny_model_dir), cache_dir=TEST_CACHE / "models", dtype="float32")


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def carol(django_user_model):
    """Staff."""
    return django_user_model.objects.create_user("carol", password="carol-password-1", is_staff=True)


@pytest.fixture(autouse=True)
def fast_password_hashing():
    # The personas' passwords are checked by a fast hasher; the default costs ~0.5 s a user.
    # (override_settings, not the `settings` fixture: some tests have a parameter of that name.)
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    """Bad-token counters live in the cache: each test starts from zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def fresh_knowledge_vectors():
    """The vectors a process caches are keyed by knowledge base id and version, which the next test
    reuses once a test's rows are rolled back: no test reads another's."""
    from knowledge import vectors

    vectors.cache_clear()


@pytest.fixture
def model_worker(tiny_model, settings):
    """A real model worker on the tiny model, in a thread of its own, for sync tests that run
    evaluations (their cases are answered by model workers). The test must commit what it writes
    (`django_db(transaction=True)`): the worker reads through its own connection."""
    from chat.serving.worker import WorkerThread

    settings.LLM_QUEUE_POLL_SECONDS = 0.05
    with WorkerThread(load=lambda: tiny_model) as worker:
        yield worker
