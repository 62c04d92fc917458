"""Start the studio's real processes (daphne via `serve`, `llm_worker`) and talk to them as
a browser or protocol client would. Used by the end-to-end tests and `manage.py bench`.

Django-free on purpose: it runs in the test or bench process and reaches the studio only
through subprocesses, HTTP and WebSockets.
"""

from __future__ import annotations

import ctypes
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Set by the test run (conftest.py): a SQLite database with every migration applied, copied into
# each new studio's data folder, since migrating a fresh one took 6 of the 12 s a studio needed to
# start and the suite starts dozens. The studio still runs `migrate` at start (then a no-op).
MIGRATED_DB_ENV = "STUDIO_TEST_MIGRATED_DB"


def studio_env(**overrides) -> dict:
    """The environment for a studio subprocess: ours, minus test settings, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update({"DJANGO_SETTINGS_MODULE": "studio.settings", "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in overrides.items()})
    _seed_migrated_database(env)
    return env


def _seed_migrated_database(env: dict) -> None:
    template = env.get(MIGRATED_DB_ENV)
    if not template or env.get("DATABASE_URL") or not env.get("STUDIO_DATA_DIR") or not Path(template).exists():
        return
    target = Path(env.get("STUDIO_SQLITE_PATH") or Path(env["STUDIO_DATA_DIR"]) / "studio.sqlite3")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_sqlite(Path(template), target)


def copy_sqlite(source_path: Path, target_path: Path) -> None:
    """A consistent copy of a SQLite database, whatever journal it was left in (SQLite's backup)."""
    import sqlite3

    source, copy = sqlite3.connect(source_path), sqlite3.connect(target_path)
    source.backup(copy)
    source.close(), copy.close()


PR_SET_PDEATHSIG = 1
# Looked up here, not in the child: between fork and exec a child of a threaded process (the test run
# has threads) should not load libraries.
prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def die_with_parent() -> None:
    """For `preexec_fn`: Linux sends the child SIGKILL when the process (strictly: the thread) that
    started it dies, even by SIGKILL, so an interrupted test run or bench leaves no studio, worker or
    server running. (A studio's job workers die with it in turn: studio.job_lanes.)"""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_process(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    # A session of its own, so killing it never touches the test runner.
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def stop_process(process: subprocess.Popen, *, kill: bool = False, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_http(url: str, *, timeout: float = 120, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s:\n{log.read_text() if log else ''}")


@contextmanager
def running_studio(env: dict, log_dir: Path, *, workers: int = 0):
    """Serve the studio (and `workers` standalone model workers) until the block ends."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server_log = log_dir / "server.log"
    server = start_process(["serve", "--port", str(port)], env, server_log)
    worker_processes = []
    try:
        wait_for_http(base_url + "/accounts/login/", process=server, log=server_log)
        # After the server answers: it has migrated the database the workers write to.
        worker_processes = [start_process(["llm_worker"], env, log_dir / f"worker-{n}.log") for n in range(workers)]
        yield StudioServer(base_url, server, worker_processes, log_dir)
    finally:
        # Killed, with their children (each runs in a session of its own): nothing is checked on
        # the way down, and a graceful stop took 5 s (the embedded job worker's Celery warm
        # shutdown), dozens of times a test run.
        for process in [*worker_processes, server]:
            kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started by start_process and every process of its session."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def manage(args: list[str], env: dict, *, timeout: float = 120) -> str:
    """`manage.py <args>` in the checkout: what it printed (a failure raises, with its output)."""
    return _run_in_checkout(["manage.py", *args], env, timeout)


def run_module(module: str, args: list[str], env: dict, *, timeout: float = 120) -> str:
    """`python -m <module> <args>` in the checkout: what it printed (a failure raises, with its output)."""
    return _run_in_checkout(["-m", module, *args], env, timeout)


def _run_in_checkout(args: list[str], env: dict, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=die_with_parent,
    )
    if result.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def shell_token(script: str, env: dict) -> str:
    """Run `script` in `manage.py shell`; the API token it printed as `TOKEN <token>`."""
    return manage(["shell", "-c", script], env).split("TOKEN ")[1].split()[0]


class StudioServer:
    def __init__(self, base_url, server, workers, log_dir):
        self.base_url = base_url
        self.server = server
        self.workers = workers
        self.log_dir = log_dir

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def login(self, username: str, password: str) -> BrowserSession:
        session = BrowserSession(self.base_url)
        session.login(username, password)
        return session


class BrowserSession:
    """Cookies and CSRF like a browser: log in, post forms, then open chat sockets."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def _cookie(self, name: str) -> str:
        return next((c.value for c in self.cookies if c.name == name), "")

    def get(self, path: str) -> tuple[int, str, dict]:
        try:
            with self.opener.open(self.base_url + path, timeout=10) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def post(self, path: str, fields: dict) -> tuple[int, str, dict]:
        if not self._cookie("csrftoken"):
            self.get("/accounts/login/")
        fields = {"csrfmiddlewaretoken": self._cookie("csrftoken"), **fields}
        request = urllib.request.Request(
            self.base_url + path,
            data=urllib.parse.urlencode(fields).encode(),
            headers={"Referer": self.base_url + path},
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, str, dict]:
        """Any request, with the session's cookies and CSRF token (for bodies the form helpers do not build)."""
        if not self._cookie("csrftoken"):
            self.get("/accounts/login/")
        all_headers = {"X-CSRFToken": self._cookie("csrftoken"), "Referer": self.base_url + path, **(headers or {})}
        request = urllib.request.Request(
            self.base_url + path, data=body if method != "GET" else None, headers=all_headers, method=method
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def login(self, username: str, password: str) -> None:
        status, body, headers = self.post("/accounts/login/", {"username": username, "password": password})
        if status != 302:
            raise RuntimeError(f"login as {username} failed ({status})")

    def new_conversation(self) -> int:
        status, _, headers = self.post("/chat/new/", {})
        match = re.search(r"/chat/(\d+)/", headers.get("Location", ""))
        if status != 302 or not match:
            raise RuntimeError(f"could not create a conversation ({status})")
        return int(match.group(1))

    def websocket_headers(self) -> dict:
        return {"Cookie": f"sessionid={self._cookie('sessionid')}", "Origin": self.base_url}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


async def open_chat_socket(
    server: StudioServer, session: BrowserSession | None, conversation_id: int, *, origin: str | None = None
):
    """A real WebSocket client (the `websockets` package) on /ws/chat/<id>/."""
    from websockets.asyncio.client import connect

    headers = session.websocket_headers() if session else {}
    if origin is not None:
        headers["Origin"] = origin
    elif "Origin" not in headers:
        headers["Origin"] = server.base_url
    origin_header = headers.pop("Origin")
    return await connect(
        f"{server.ws_base}/ws/chat/{conversation_id}/", additional_headers=headers, origin=origin_header, max_size=2**24
    )


async def next_frame(socket, timeout: float = 30) -> dict:
    import asyncio

    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def frames_until(socket, frame_type: str, timeout: float = 60) -> list[dict]:
    frames = []
    while True:
        frame = await next_frame(socket, timeout)
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames
