"""Knowledge search on PostgreSQL (scaled mode): documents ingested by a job worker over Redis,
keyword search through the GIN index on the stored to_tsvector('simple', text), dense and hybrid as on
SQLite (knowledge/tests/test_search.py has the same cases), hostile queries, a private base."""

import pytest

from benchmarks.processes import manage, running_studio, start_process, stop_process
from tests.scaled import drop_database, query, scaled_studio_env

from .served import api, wait_for
from .test_search import NETWORK, OFFICE, PARTS

pytestmark = pytest.mark.scaled

TOKENS = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
bob = User.objects.create_user("bob", password="bob-password-1")
print("TOKEN", api_token_create(user=User.objects.get(username="admin"), name="scripts")[1])
print("BOB", api_token_create(user=bob, name="bob")[1])
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    env, database = scaled_studio_env(tmp_path_factory.mktemp("knowledge-scaled"))
    env.update(KNOWLEDGE_CHUNK_TOKENS="24", KNOWLEDGE_CHUNK_OVERLAP="0", JOB_HEARTBEAT_TIMEOUT_SECONDS="30")
    logs = tmp_path_factory.mktemp("knowledge-scaled-logs")
    try:
        with running_studio(env, logs) as server:
            worker = start_process(["job_worker"], env, logs / "job-worker.log")
            try:
                output = manage(["shell", "-c", TOKENS], env)
                server.token, server.bob = (output.split(f"{name} ")[1].split()[0] for name in ("TOKEN", "BOB"))
                server.database = database
                status, created = api(server, "POST", "/api/knowledge/", {"name": "Plant"})
                assert status == 201
                server.base = f"/api/knowledge/{created['id']}"
                _, uploaded = api(
                    server,
                    "POST",
                    f"{server.base}/documents/",
                    files=[
                        ("parts.md", PARTS.encode()),
                        ("network.md", NETWORK.encode()),
                        ("office.md", OFFICE.encode()),
                    ],
                )
                for document_id in uploaded["ids"]:
                    done = wait_for(
                        server, f"{server.base}/documents/{document_id}/", lambda s: s["status"] in ("ready", "failed")
                    )
                    assert done["status"] == "ready", done
                yield server
            finally:
                stop_process(worker)
    finally:
        drop_database(database)


def search(studio, query_text, mode="hybrid", **extra):
    status, answer = api(studio, "POST", f"{studio.base}/search/", {"query": query_text, "mode": mode, **extra})
    assert status == 200, answer
    return [hit["text"] for hit in answer["results"]]


def test_the_keyword_index_is_a_gin_index_on_the_chunks_words_parsed_once(studio):
    rows = query(studio.database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'knowledge_chunk_text_search'")
    assert rows and "USING gin (text_search)" in rows[0][0]
    generated = query(
        studio.database,
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = 'knowledge_chunk'::regclass "
        "AND a.attname = 'text_search'",
    )
    assert len(generated) == 1
    assert "to_tsvector('english'::regconfig, text)" in generated[0][0]
    assert "to_tsvector('english'::regconfig, (heading)" in generated[0][0]


def test_keywords_are_stemmed_on_postgresql(studio):
    # "lunches served" holds neither "lunch" nor "serves" as written: the stems meet.
    assert search(studio, "lunches served", "bm25")[0] == "The cafeteria serves lunch from noon to two."


def test_keywords_find_the_exact_code_and_meaning_finds_the_paraphrase(studio):
    assert "ZX-4411" in search(studio, "ZX-4411", "bm25")[0]
    assert "ZX-4411" not in search(studio, "ZX-4411", "dense")[0]
    assert not any("router" in text for text in search(studio, "How can I reboot my modem?", "bm25"))
    assert "restart the router" in search(studio, "How can I reboot my modem?", "dense")[0]
    assert any("ZX-4411" in text for text in search(studio, "ZX-4411")[:2])
    assert "restart the router" in search(studio, "How can I reboot my modem?")[0]


def test_query_syntax_is_only_text_on_postgresql(studio):
    for hostile in [
        "'",
        "press & | !",
        "press:*",
        "(press",
        "<->",
        "\\",
        "o'brien's \\ 'x'",
        "'; DROP TABLE knowledge_chunk; --",
    ]:
        search(studio, hostile, "bm25")
    assert search(studio, "lunch", "bm25") == ["The cafeteria serves lunch from noon to two."]


def test_another_persons_private_base_is_not_found(studio):
    status, _ = api(studio, "POST", f"{studio.base}/search/", {"query": "ZX-4411"}, token=studio.bob)
    assert status == 404
