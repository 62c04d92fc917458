"""Tests that need a service this machine may lack (PostgreSQL, Redis, Chromium) skip, saying
why, on a developer's machine; under CI (`CI=true`) they fail instead, so a CI that lost a
service can never pass by skipping."""

import os
import socket

import pytest


def reachable(address) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def missing(message: str):
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
    print(message)
    pytest.skip(message)
