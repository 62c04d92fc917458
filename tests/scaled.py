"""Scaled mode for tests: a fresh PostgreSQL database and a Redis prefix of their own, on the
servers this machine and CI run on loopback (tests/needs.py: skip here, fail under CI)."""

import uuid

from benchmarks.processes import studio_env
from tests.needs import missing, reachable
from tests.settings import TINY_MODEL_DIR

POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
ADMIN_PASSWORD = "admin-password-1"


def scaled_studio_env(data_dir):
    """(environment of a scaled studio, its database name); drop_database() when done."""
    for name, address in (("PostgreSQL", POSTGRES), ("Redis", REDIS)):
        if not reachable(address):
            missing(f"scaled-mode tests: {name} is not reachable at {address[0]}:{address[1]}")
    import psycopg

    database = f"studio_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{database}",
        REDIS_URL="redis://127.0.0.1:6379/0",
        CHANNEL_LAYER_PREFIX=f"studio-test-{uuid.uuid4().hex[:8]}",
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_TEMPERATURE=0,
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        LLM_LEASE_SECONDS=2,
    )
    return env, database


def drop_database(database):
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def query(database, sql, *params):
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection:
        return connection.execute(sql, params).fetchall()


# A setup script for `manage.py shell`: an API token of the admin, printed.
TOKEN = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
print("TOKEN", api_token_create(user=User.objects.get(username="admin"), name="engine")[1])
"""


async def wait_for_workers(database, count, timeout=60):
    """Until `count` model workers have announced themselves ready in `database`."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(database, "SELECT count(*) FROM chat_modelworker WHERE state = 'ready'")[0][0] >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{count} model workers did not become ready")


async def wait_until(condition, *, timeout=60.0, what="the condition"):
    """Poll `condition()` (sync) until true, with a generous deadline: never a fixed sleep."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} did not come true within {timeout:.0f} s")
