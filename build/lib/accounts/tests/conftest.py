"""alice and bob come from the project's conftest.py."""

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The personas' passwords are never checked here; the default hasher costs ~0.5 s a user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
