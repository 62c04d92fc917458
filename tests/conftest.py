import pytest

from tests.scaled import drop_database, scaled_studio_env


@pytest.fixture(scope="module")
def scaled_env(tmp_path_factory):
    """A scaled studio's environment (PostgreSQL + Redis) and its database, for one module."""
    env, database = scaled_studio_env(tmp_path_factory.mktemp("scaled-data"))
    yield env, database
    drop_database(database)
