"""Memory of a served studio under the two knowledge uploads an attacker sent (issue 25):
ten 19 MiB files in one request (the web process's peak and what it keeps), and a 5.4 MiB Word
file whose word/document.xml is 244 MiB of empty paragraphs (the job worker's peak while it
ingests it, and how the document ends).

    .venv/bin/python -m benchmarks.knowledge_memory [--rounds 3] [--stop-at-mib 3072]

RSS is sampled every 5 ms with psutil. A job worker that passes --stop-at-mib is killed there
(the measurement then says "over"), so the old code cannot take a shared machine down.
Not part of `make bench` (about two minutes, and a figure of memory, not speed).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import psutil

from benchmarks.processes import REPO, running_studio, shell_token, studio_env

TOKEN = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
print("TOKEN", api_token_create(user=User.objects.get(username="admin"), name="bench")[1])
"""
MIB = 2**20


class PeakRss:
    """The largest RSS one process reached while the block ran (sampled every 5 ms)."""

    def __init__(self, pid: int, *, stop_at: int | None = None):
        self.process, self.stop_at = psutil.Process(pid), stop_at
        self.peak, self.stopped, self._done = 0, False, threading.Event()

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)
            if self.stop_at and rss > self.stop_at:
                self.stopped = True
                self.process.kill()
                return
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def hostile_docx(document_bytes: int = 244 * MIB) -> bytes:
    """A .docx whose word/document.xml is `document_bytes` of empty paragraphs, varied just enough
    (a random one of four rsid values each) that it packs about 45 times: under the zip check's
    ratio (200) and unpacked size (256 MiB)."""
    rng = random.Random(25)
    block = "".join(f'<w:p w:rsidR="00A0{rng.randrange(4):04d}"/>' for _ in range(170_000)).encode()
    head = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="http://schemas.'
        b'openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    )
    tail = b"</w:body></w:document>"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
            'openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType='
            '"application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        )
        archive.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.'
            'xml"/></Relationships>',
        )
        with archive.open("word/document.xml", "w", force_zip64=True) as entry:
            entry.write(head)
            written = len(head)
            while written + len(block) + len(tail) <= document_bytes:
                entry.write(block)
                written += len(block)
            entry.write(tail)
    return out.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
            for name, content in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def call(
    base_url: str, token: str, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, dict]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    try:
        return response.status, json.loads(answer or b"null")
    except ValueError:
        return response.status, {"raw": answer[:200].decode("utf-8", "replace")}


def job_worker_pid(server_pid: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(server_pid).children(recursive=True):
            if "job_worker" in " ".join(child.cmdline()):
                return child.pid
        time.sleep(0.2)
    raise TimeoutError("no job worker started")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="uploads of 10 × 19 MiB, one after another")
    parser.add_argument("--stop-at-mib", type=int, default=3072, help="kill the job worker when it passes this")
    options = parser.parse_args()
    # The tests' tiny model (tests/conftest.py builds it): the web process reads its tokenizer.
    tiny_model = Path(os.environ.get("STUDIO_TEST_CACHE", REPO / ".cache" / "tests")) / "tiny-llama-v2"
    data_dir = Path(tempfile.mkdtemp(prefix="studio-knowledge-memory-"))
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=tiny_model,
        LLM_EMBEDDED_WORKER="false",
        STUDIO_ADMIN_PASSWORD="admin-password-1",
        JOB_TORCH_THREADS=1,
    )
    with running_studio(env, data_dir / "logs") as server:
        token = shell_token(TOKEN, env)
        status, created = call(
            server.base_url, token, "POST", "/api/knowledge/", json.dumps({"name": "Bench"}).encode()
        )
        assert status == 201, created
        documents = f"/api/knowledge/{created['id']}/documents/"
        web = server.server.pid
        print(f"web process {web}: {psutil.Process(web).memory_info().rss / MIB:,.0f} MiB at rest", flush=True)
        for round_number in range(1, options.rounds + 1):
            body, content_type = multipart([(f"r{round_number}-{n}.pdf", os.urandom(19 * MIB)) for n in range(10)])
            with PeakRss(web) as rss:
                status, answer = call(server.base_url, token, "POST", documents, body, content_type)
            time.sleep(3)  # what the process keeps once the request is over
            kept = psutil.Process(web).memory_info().rss
            print(
                f"upload 10 × 19 MiB, round {round_number}: HTTP {status}; web process {rss.start / MIB:,.0f} MiB "
                f"before, peak +{(rss.peak - rss.start) / MIB:,.0f} MiB, kept +{(kept - rss.start) / MIB:,.0f} MiB",
                flush=True,
            )
            del body

        worker = job_worker_pid(web)
        hostile = hostile_docx()
        with zipfile.ZipFile(io.BytesIO(hostile)) as archive:
            entry = archive.getinfo("word/document.xml")
        print(
            f"hostile .docx: {len(hostile) / MIB:.1f} MiB, word/document.xml {entry.file_size / MIB:,.0f} MiB "
            f"(ratio {entry.file_size / entry.compress_size:.0f})",
            flush=True,
        )
        # The job worker is idle once the random "PDFs" above have failed.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and psutil.Process(worker).cpu_percent(0.5) > 5:
            pass
        body, content_type = multipart([("empty-paragraphs.docx", hostile)])
        with PeakRss(worker, stop_at=options.stop_at_mib * MIB) as rss:
            status, answer = call(server.base_url, token, "POST", documents, body, content_type)
            document = f"{documents}{answer['ids'][0]}/"
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not rss.stopped:
                _, state = call(server.base_url, token, "GET", document)
                if state.get("status") in ("ready", "failed"):
                    break
                time.sleep(0.2)
        time.sleep(3)
        after = psutil.Process(worker).memory_info().rss if psutil.pid_exists(worker) and not rss.stopped else None
        peak = (
            f"over {options.stop_at_mib:,} MiB (killed there)"
            if rss.stopped
            else f"+{(rss.peak - rss.start) / MIB:,.0f} MiB"
        )
        print(
            f"job worker {worker} on the hostile .docx: {rss.start / MIB:,.0f} MiB before, peak {peak}"
            + (f", kept +{(after - rss.start) / MIB:,.0f} MiB" if after else "")
            + f"; document {state.get('status')}: {state.get('error_code', '')} {state.get('error', '')}",
            flush=True,
        )


if __name__ == "__main__":
    os.chdir(REPO)
    main()
