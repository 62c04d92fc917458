"""Where uploaded documents are kept: KNOWLEDGE_FILES_DIR (default <data folder>/knowledge), one
folder per knowledge base, each file named by its sha256. The web process writes a file, a job
worker reads it: in scaled mode the folder must be storage every job worker mounts (as
STUDIO_ADAPTERS_DIR)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

_SUFFIXES = {"pdf": ".pdf", "docx": ".docx", "markdown": ".md", "html": ".html", "text": ".txt"}


def files_dir() -> Path:
    return Path(settings.KNOWLEDGE_FILES_DIR)


def folder_of(knowledge_base_id: int) -> str:
    return f"kb-{knowledge_base_id}"


def store(upload, *, knowledge_base_id: int, kind: str) -> tuple[str, str]:
    """Write an upload (read in its chunks, never whole) under the knowledge base's folder, hashing
    it on the way: (path relative to files_dir(), sha256). A file of the same content is the same
    file."""
    folder = files_dir() / folder_of(knowledge_base_id)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, incoming = tempfile.mkstemp(dir=folder, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as out:
            for piece in upload.chunks():
                digest.update(piece)
                out.write(piece)
        relative = f"{folder_of(knowledge_base_id)}/{digest.hexdigest()}{_SUFFIXES.get(kind, '')}"
        os.replace(incoming, files_dir() / relative)
    except BaseException:
        Path(incoming).unlink(missing_ok=True)
        raise
    return relative, digest.hexdigest()


def read(relative: str) -> bytes:
    return (files_dir() / relative).read_bytes()


def remove(relative: str) -> None:
    if relative:
        (files_dir() / relative).unlink(missing_ok=True)


def remove_folder(knowledge_base_id: int) -> None:
    folder = files_dir() / folder_of(knowledge_base_id)
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()
