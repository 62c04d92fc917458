"""How many PostgreSQL connections a scaled studio holds when one person sends many requests at once.

    .venv/bin/python -m benchmarks.db_connections [--models 20] [--completions 40] [--queued-per-user 64]

Starts a scaled studio (PostgreSQL and Redis on loopback, the tests' tiny model, one model worker)
in a database of its own, sends `--models` simultaneous `GET /v1/models`, then `--completions`
simultaneous non-streaming chat completions, and prints the connections to that database
(pg_stat_activity) before, at the peak, and a few seconds after, with the answers' status codes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.processes import running_studio, shell_token
from tests.scaled import TOKEN, drop_database, query, scaled_studio_env


def connections(database: str) -> int:
    return (
        query(
            database,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
            database,
        )[0][0]
        - 1
    )  # less ours


def by_process(database: str) -> dict:
    """Connections to `database` by application_name (the studio names its processes: studio web, ...)."""
    rows = query(
        database,
        "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1",
        database,
    )
    return {name or "(unnamed)": count for name, count in rows}


def call(base_url: str, token: str, method: str, path: str, body: dict | None = None) -> str:
    request = urllib.request.Request(
        base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return str(response.status)
    except urllib.error.HTTPError as error:
        answer = error.read()[:200].decode(errors="replace")
        return (
            f"{error.code} Retry-After={error.headers.get('Retry-After')} {answer}"
            if error.code >= 500
            else str(error.code)
        )


def burst(label: str, database: str, count: int, send) -> None:
    before, peak, stop = connections(database), [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], connections(database))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        statuses = Counter(pool.map(lambda _: send(), range(count)))
    took = time.monotonic() - started
    stop.set()
    watcher.join()
    time.sleep(5)
    print(
        f"{label}: {count} at once in {took:.1f} s; connections before {before}, peak {peak[0]}, "
        f"5 s after {connections(database)} {by_process(database)}; answers {dict(statuses)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20, help="simultaneous GET /v1/models")
    parser.add_argument("--completions", type=int, default=40, help="simultaneous chat completions")
    parser.add_argument(
        "--queued-per-user",
        type=int,
        default=0,
        help="LLM_MAX_QUEUED_PER_USER of the studio (0: its default); above --completions, none is refused",
    )
    arguments = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="db-connections-"))
    env, database = scaled_studio_env(data_dir)
    env.update(LLM_MAX_NEW_TOKENS="16", LLM_LEASE_SECONDS="30")  # a 2 s lease lapsed on a loaded machine
    if arguments.queued_per_user:
        env["LLM_MAX_QUEUED_PER_USER"] = str(arguments.queued_per_user)
    try:
        with running_studio(env, data_dir / "logs", workers=1) as server:
            token = shell_token(TOKEN, env)
            burst(
                "GET /v1/models", database, arguments.models, lambda: call(server.base_url, token, "GET", "/v1/models")
            )
            body = {"model": "default", "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 16}
            models = json.loads(
                urllib.request.urlopen(
                    urllib.request.Request(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {token}"})
                ).read()
            )
            body["model"] = models["data"][0]["id"]
            burst(
                "POST /v1/chat/completions",
                database,
                arguments.completions,
                lambda: call(server.base_url, token, "POST", "/v1/chat/completions", body),
            )
    finally:
        drop_database(database)


if __name__ == "__main__":
    main()
