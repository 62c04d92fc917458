"""One person could use up PostgreSQL's connections in scaled mode: every simultaneous request opened
a connection of its own and kept it (20 requests at once: 20 more, still there a minute later), and
40 completions at once got 500s with "too many clients already". Each process now holds at most
DATABASE_POOL_MAX_SIZE connections, and a database that cannot take a request answers 503 with
Retry-After, never 500. Real daphne, model worker, PostgreSQL and Redis."""

import json
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from benchmarks.processes import running_studio, shell_token
from tests.scaled import ADMIN_PASSWORD, TOKEN, drop_database, scaled_studio_env, wait_until

pytestmark = pytest.mark.scaled
POOL = 3


def call(base_url, token, method, path, body=None):
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def as_postgres(sql: str, *params) -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
        connection.execute(sql, params)


def connections_by_process(watcher, database) -> dict:
    """The studio's connections to `database` by application_name, read on the one connection
    `watcher` (a connection a query opens lingers a moment after it closes: it would be counted)."""
    rows = watcher.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1",
        (database,),
    ).fetchall()
    return {name: count for name, count in rows}


def test_simultaneous_requests_leave_at_most_the_pools_connections(tmp_path):
    env, database = scaled_studio_env(tmp_path / "data")
    # Long leases: on a loaded machine a 2 s lease lapsed mid-reply (a 503 that is not this test's).
    env.update(DATABASE_POOL_MAX_SIZE=str(POOL), LLM_MAX_NEW_TOKENS="8", LLM_LEASE_SECONDS="30")
    seen = []
    try:
        with running_studio(env, tmp_path / "logs", workers=1) as server:
            token = shell_token(TOKEN, env)
            models = json.loads(call(server.base_url, token, "GET", "/v1/models")[2])["data"]
            body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}

            def send(n):
                return (
                    call(server.base_url, token, "GET", "/v1/models")
                    if n < 20
                    else call(server.base_url, token, "POST", "/v1/chat/completions", body)
                )[0]

            sending = threading.Event()

            def watch():
                with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}", autocommit=True) as watcher:
                    while sending.is_set():
                        seen.append(connections_by_process(watcher, database))

            sending.set()
            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                with ThreadPoolExecutor(32) as pool:
                    statuses = list(pool.map(send, range(32)))
            finally:
                sending.clear()
                watcher.join()
            assert statuses == [200] * 32
            busiest = max(seen, key=lambda sample: sum(sample.values()))
            # Every connection is one of theirs, named: the web process and the model worker, each
            # within its pool (before: one per simultaneous request, unnamed, kept).
            assert set(busiest) <= {"studio web", "studio model-worker"}, busiest
            assert max(sample.get("studio web", 0) for sample in seen) <= POOL, busiest
            assert max(sample.get("studio model-worker", 0) for sample in seen) <= POOL, busiest
    finally:
        drop_database(database)


@pytest.fixture
def limited_role(tmp_path):
    """A scaled studio's environment whose database user is not a superuser (PostgreSQL holds only
    those to a connection limit), and (database, role)."""
    env, database = scaled_studio_env(tmp_path / "data")
    role = f"studio_{uuid.uuid4().hex[:10]}"
    as_postgres(f'CREATE ROLE "{role}" LOGIN')
    as_postgres(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    env["DATABASE_URL"] = f"postgresql://{role}@127.0.0.1:5432/{database}"
    yield env, database, role
    drop_database(database)
    as_postgres(f'DROP ROLE IF EXISTS "{role}"')


async def test_a_database_that_refuses_connections_answers_503_with_retry_after(limited_role, tmp_path):
    env, database, role = limited_role
    env.update(DATABASE_POOL_TIMEOUT_SECONDS="2")
    with running_studio(env, tmp_path / "logs") as server:
        token = shell_token(TOKEN, env)
        session = server.login("admin", ADMIN_PASSWORD)
        assert call(server.base_url, token, "GET", "/v1/models")[0] == 200
        # PostgreSQL now refuses this role any connection ("too many connections", as a full server
        # says "too many clients"), and the studio's open ones are gone.
        as_postgres(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        as_postgres("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role)

        status, headers, answer = call(server.base_url, token, "GET", "/v1/models")
        assert status == 503 and headers["Retry-After"] == "5", (status, answer[:300])
        assert json.loads(answer)["code"] == "database_busy"
        status, page, page_headers = session.get("/chat/")
        assert status == 503 and page_headers["Retry-After"] == "5" and "database is busy" in page

        as_postgres(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        await wait_until(
            lambda: call(server.base_url, token, "GET", "/v1/models")[0] == 200, what="the studio answering again"
        )
    log = (server.log_dir / "server.log").read_text()
    assert " 500 " not in log and "Traceback" not in log, log[-3000:]
