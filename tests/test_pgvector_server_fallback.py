"""The pgvector test server runs PostgreSQL as `nobody` when the tests run as root, and copies the
wheel's PostgreSQL to a folder nobody can reach when the checkout lives in a private folder (a clone
in a private temporary folder): the check that decides so answers instead of raising."""

import os
import shutil

import pytest

from benchmarks.pgserver import _runs_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root starts PostgreSQL as nobody")


def test_a_program_in_a_folder_nobody_cannot_enter_is_found_unrunnable_rather_than_raising(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copy("/bin/true", private / "initdb")
    assert _runs_as("nobody", private / "initdb") is False
