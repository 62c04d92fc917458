"""The data folder (STUDIO_DATA_DIR, default ./data): everything the studio writes at run time
lives under it (the SQLite database, the converted model, the broker's folders, fine-tunes,
adapters, the generated secret key), never in the checkout.

Importing the settings writes nothing: the entry points (`manage.py`, the `studio` command, the
bench) call `prepare()` first. Django-free, so it runs before the settings are read.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BROKER_FOLDERS = ("messages", "processed", "control")  # kombu's filesystem transport (embedded mode)


def data_dir() -> Path:
    return Path(os.environ.get("STUDIO_DATA_DIR", "data")).resolve()


def prepare() -> Path:
    """Create the data folder and what lives in it, and a secret key unless SECRET_KEY is set (a
    generated key kept there keeps sessions valid across restarts without asking a first-time
    user to invent one)."""
    folder = data_dir()
    for sub in ("", "static", *(f"broker/{name}" for name in BROKER_FOLDERS)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    key_file = folder / "secret_key"
    if not os.environ.get("SECRET_KEY") and not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return folder


def secret_key(folder: Path) -> str | None:
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = folder / "secret_key"
    return key_file.read_text().strip() if key_file.exists() else None
