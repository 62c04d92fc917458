"""A knowledge base may embed through an engine outside the studio (an OpenAI-compatible
/v1/embeddings, here a small real HTTP server on loopback): it pins the engine's model and the
dimension it measured, its documents and queries are embedded there, and an engine that fails
(an error status, a timeout, the wrong dimension, a malformed answer) fails the document with the
reason, leaving nothing of it searchable, or makes the query's embedding unavailable, saying why."""

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.services import api_token_create
from knowledge import engines, services
from knowledge import search as knowledge_search
from knowledge.models import Chunk, KnowledgeBase
from knowledge.search import search
from studio import settings as studio_settings
from studio.llm.numpy_embedder import load_numpy_embedder

from .conftest import upload
from .engine_server import EngineServer
from .test_search import NETWORK, OFFICE, PARAPHRASE, PARTS

pytestmark = pytest.mark.django_db


def embeddings_of(body: dict, *, dimension: int | None = None) -> tuple[int, dict]:
    """What an OpenAI-compatible server answers: the bundled model's vectors (or, with `dimension`,
    vectors of that many numbers)."""
    vectors = load_numpy_embedder().embed(body["input"])
    if dimension is not None:
        vectors = np.resize(vectors, (len(body["input"]), dimension))
    return 200, {
        "object": "list",
        "data": [{"object": "embedding", "index": n, "embedding": vector.tolist()} for n, vector in enumerate(vectors)],
        "model": body["model"],
    }


@pytest.fixture(autouse=True)
def fresh_query_vectors():
    knowledge_search._query_vector.cache_clear()
    engines._query_failures.clear()
    yield
    knowledge_search._query_vector.cache_clear()
    engines._query_failures.clear()


@pytest.fixture
def remote(settings):
    """The engine "remote" (model "mini"), answering with real vectors until a test says otherwise
    (a timeout of 60 s: the numpy embedder behind it loads, then embeds 32 passages, slowly on a busy
    machine; 10 s timed out under load)."""
    from knowledge import engines

    engines._query_failures.clear()  # a failure an earlier test planted is remembered for 30 s per process
    server = EngineServer(lambda path, body: embeddings_of(body))
    settings.KNOWLEDGE_EMBEDDING_ENGINES = {
        "remote": {
            "url": server.url + "/v1",
            "model": "mini",
            "api_key": "engine-key",
            "dimension": None,
            "timeout": 60.0,
        }
    }
    yield server
    server.close()


@pytest.fixture
def remote_base(alice, remote, settings):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    return services.knowledge_base_create(owner=alice, name="Remote", embedding_model="remote")


def test_a_base_pins_the_engine_and_the_dimension_it_measured_with_one_request(remote_base, remote):
    assert (remote_base.embedding_model, remote_base.dimension) == ("remote:mini", 384)
    [(path, body, headers)] = remote.requests
    assert path == "/v1/embeddings" and body["model"] == "mini" and len(body["input"]) == 1
    assert headers["Authorization"] == "Bearer engine-key"


def test_the_api_creates_a_base_on_an_engine_and_names_the_engines_when_one_is_unknown(alice, remote):
    token = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=alice, name='t')[1]}"}
    created = Client().post(
        "/api/knowledge/", {"name": "Remote", "embedding_model": "remote"}, content_type="application/json", **token
    )
    assert created.status_code == 201, created.content
    [listed] = Client().get("/api/knowledge/", **token).json()["knowledge_bases"]
    assert (listed["embedding_model"], listed["dimension"]) == ("remote:mini", 384)
    unknown = Client().post(
        "/api/knowledge/", {"name": "Other", "embedding_model": "bge"}, content_type="application/json", **token
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == (
        "embedding_model: must be all-MiniLM-L6-v2 or an engine of KNOWLEDGE_EMBEDDING_ENGINES (remote)"
    )
    assert KnowledgeBase.objects.count() == 1


def test_an_engine_that_fails_when_a_base_is_created_is_refused_saying_so(alice, remote):
    remote.answer = lambda path, body: (500, {"error": {"message": "CUDA out of memory"}})
    with pytest.raises(services.KnowledgeError) as refused:
        services.knowledge_base_create(owner=alice, name="Remote", embedding_model="remote")
    assert refused.value.status == 502 and refused.value.field == "embedding_model"
    assert refused.value.message == "the embedding engine 'remote' answered 500: CUDA out of memory"
    assert not KnowledgeBase.objects.exists()


def test_documents_and_queries_are_embedded_by_the_engine_and_searched_by_meaning(alice, remote_base, remote, ingest):
    documents = ingest(
        remote_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]
    )
    assert [d.status for d in documents] == ["ready"] * 3, [d.error for d in documents]
    hits = search(user=alice, knowledge_base=remote_base, query=PARAPHRASE, mode="dense").hits
    assert "restart the router" in hits[0].text
    assert remote.requests[-1][1]["input"] == [PARAPHRASE]  # the query went to the engine too
    stored = np.frombuffer(bytes(Chunk.objects.filter(document__name="network.md").get().embedding), dtype="<f4")
    assert stored.shape == (384,) and abs(float(np.linalg.norm(stored)) - 1) < 1e-5


@pytest.mark.parametrize(
    "answer, reason",
    [
        (
            lambda server, body: (500, {"error": "model not loaded"}),
            "the embedding engine 'remote' answered 500: model not loaded",
        ),
        (lambda server, body: server.hang(), "the embedding engine 'remote' did not answer within 0.5 s"),
        (
            lambda server, body: embeddings_of(body, dimension=768),
            "the embedding engine 'remote' returned 768 numbers per text; this knowledge base was built with 384: rebuild it",
        ),
        (
            lambda server, body: (200, b"<html>Bad gateway</html>"),
            "the embedding engine 'remote' answered something that is not JSON",
        ),
        (lambda server, body: (200, {"data": []}), "the embedding engine 'remote' returned 0 vectors for 1 texts"),
        (
            lambda server, body: (200, {"embeddings": [[0.1]]}),
            "the embedding engine 'remote' answered without a \"data\" list",
        ),
    ],
    ids=["500", "timeout", "wrong-dimension", "not-json", "wrong-count", "other-shape"],
)
def test_an_engine_that_fails_fails_the_document_with_the_reason(
    alice, remote_base, remote, ingest, settings, answer, reason
):
    if "within" in reason:  # the timeout case; the others keep 60 s (a busy machine answers slowly)
        settings.KNOWLEDGE_EMBEDDING_ENGINES["remote"]["timeout"] = 0.5
    remote.answer = lambda path, body: answer(remote, body)
    [document] = ingest(remote_base, alice, [upload("network.md", NETWORK)])
    assert document.status == "failed" and document.error_code == "embedding_engine_failed"
    assert document.error.startswith(reason), document.error
    assert not Chunk.objects.filter(document=document).exists()


def test_an_engine_failing_midway_leaves_nothing_of_the_document_searchable(alice, remote_base, remote, ingest):
    from knowledge import ingestion

    def first_batch_only(path, body):
        """The document's first batch embedded, every request after it refused."""
        earlier = remote.requests[:-1]  # the request being answered is already listed
        if any(len(sent.get("input", [])) == ingestion.EMBED_BATCH for _, sent, _ in earlier):
            return 503, {"error": "overloaded"}
        return embeddings_of(body)

    remote.answer = first_batch_only
    text = "\n\n".join(f"Machine {n} is serviced by the maintenance crew every {n} weeks." for n in range(100))
    [document] = ingest(remote_base, alice, [upload("machines.md", text)])
    # The first batch was embedded (and written: its transaction commits before the next batch is
    # asked for), the next refused: the engine failed midway through the document.
    sizes = [len(sent.get("input", [])) for _, sent, _ in remote.requests]
    assert ingestion.EMBED_BATCH in sizes[:-1] and sizes.index(ingestion.EMBED_BATCH) < len(sizes) - 1
    assert document.status == "failed" and "answered 503: overloaded" in document.error
    assert not Chunk.objects.filter(document=document).exists()
    assert search(user=alice, knowledge_base=remote_base, query="maintenance crew", mode="bm25").hits == []


def test_a_query_the_engine_cannot_embed_makes_the_dense_part_unavailable_with_the_reason(
    alice, remote_base, remote, ingest, monkeypatch
):
    ingest(remote_base, alice, [upload("network.md", NETWORK)])
    remote.answer = lambda path, body: (500, {"error": "model not loaded"})
    with pytest.raises(engines.QueryEmbeddingUnavailable) as unavailable:
        knowledge_search._query_vector_and_vectors(remote_base, PARAPHRASE)
    assert unavailable.value.reason == "the embedding engine 'remote' answered 500: model not loaded"
    asked = len(remote.requests)
    with pytest.raises(engines.QueryEmbeddingUnavailable, match="answered 500"):  # not asked again for a while
        knowledge_search._query_vector_and_vectors(remote_base, "another question")
    assert len(remote.requests) == asked
    monkeypatch.setattr(engines, "QUERY_FAILURE_MEMORY_S", 0.0)
    remote.answer = lambda path, body: embeddings_of(body)
    query_vector = knowledge_search._query_vector_and_vectors(remote_base, "another question")[1]
    assert query_vector.shape == (384,) and len(remote.requests) == asked + 1


def test_a_base_whose_engine_left_the_settings_or_serves_another_model_says_so(alice, remote_base, ingest, settings):
    settings.KNOWLEDGE_EMBEDDING_ENGINES = {
        "remote": {**settings.KNOWLEDGE_EMBEDDING_ENGINES["remote"], "model": "bigger"},
    }
    with pytest.raises(engines.QueryEmbeddingUnavailable, match="'remote' now serves bigger, whose vectors"):
        knowledge_search._query_vector_and_vectors(remote_base, PARAPHRASE)
    settings.KNOWLEDGE_EMBEDDING_ENGINES = {}
    with pytest.raises(engines.QueryEmbeddingUnavailable, match="names no engine 'remote' now"):
        knowledge_search._query_vector_and_vectors(remote_base, PARAPHRASE)
    [document] = ingest(remote_base, alice, [upload("network.md", NETWORK)])
    assert document.error_code == "embedding_engine_failed" and "names no engine 'remote'" in document.error


def test_a_rebuild_keeps_the_engine_and_asks_it_first(alice, remote_base, remote, ingest, monkeypatch, settings):
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: None)
    ingest(remote_base, alice, [upload("network.md", NETWORK)])
    with pytest.raises(services.KnowledgeError) as refused:
        services.knowledge_base_rebuild(user=alice, knowledge_base=remote_base, embedding_model="all-MiniLM-L6-v2")
    assert refused.value.field == "embedding_model" and "a rebuild keeps it" in refused.value.message
    remote.answer = lambda path, body: embeddings_of(body, dimension=768)
    with pytest.raises(services.KnowledgeError, match="now returns 768 numbers per text"):
        services.knowledge_base_rebuild(user=alice, knowledge_base=remote_base, chunk_tokens=100, chunk_overlap=0)
    remote.answer = lambda path, body: remote.hang()
    settings.KNOWLEDGE_EMBEDDING_ENGINES["remote"]["timeout"] = 0.5
    with pytest.raises(services.KnowledgeError, match="did not answer within 0.5 s") as down:
        services.knowledge_base_rebuild(user=alice, knowledge_base=remote_base, chunk_tokens=100, chunk_overlap=0)
    assert down.value.status == 502
    settings.KNOWLEDGE_EMBEDDING_ENGINES["remote"]["timeout"] = 60.0
    remote_base.refresh_from_db()
    assert not remote_base.rebuilding
    remote.answer = lambda path, body: embeddings_of(body)
    assert (
        services.knowledge_base_rebuild(user=alice, knowledge_base=remote_base, chunk_tokens=100, chunk_overlap=0) == 1
    )
    remote_base.refresh_from_db()
    assert remote_base.rebuilding and remote_base.embedding_model == "remote:mini"


def test_the_new_base_form_offers_the_engines_only_when_there_are_some(alice, remote, settings):
    client = Client()
    client.force_login(alice)
    page = client.get("/knowledge/").content.decode()
    assert '<option value="remote" >remote</option>' in page.replace("  ", " ")
    created = client.post("/knowledge/", {"name": "Remote", "embedding_model": "remote"})
    assert created.status_code == 302 and KnowledgeBase.objects.get().embedding_model == "remote:mini"
    settings.KNOWLEDGE_EMBEDDING_ENGINES = {}
    assert 'name="embedding_model"' not in client.get("/knowledge/").content.decode()


@pytest.mark.parametrize(
    "value, said",
    [
        ("[1, 2]", "a JSON object"),
        ('{"remote": {"url": "host:8080", "model": "m"}}', "url: the server's OpenAI base URL"),
        ('{"remote": {"url": "http://h/v1"}}', "model: the model to ask for"),
        ('{"re:mote": {"url": "http://h/v1", "model": "m"}}', "an engine's name is"),
        ('{"tuned": {"url": "http://h/v1", "model": "m"}}', "an engine's name is"),
        ('{"remote": {"url": "http://h/v1", "model": "m", "dimensions": 384}}', "an object of api_key, dimension"),
        ('{"remote": {"url": "http://h/v1", "model": "m", "timeout": 600}}', "below JOB_HEARTBEAT_TIMEOUT_SECONDS"),
        ('{"remote": {"url": "http://h/v1", "model": "m", "dimension": "384"}}', "dimension: a whole number"),
    ],
)
def test_bad_engine_settings_stop_the_start_saying_what_to_fix(monkeypatch, value, said):
    monkeypatch.setenv("KNOWLEDGE_EMBEDDING_ENGINES", value)
    with pytest.raises(ImproperlyConfigured, match=said):
        studio_settings._embedding_engines("KNOWLEDGE_EMBEDDING_ENGINES")


def test_good_engine_settings_are_read_with_their_defaults(monkeypatch):
    monkeypatch.setenv(
        "KNOWLEDGE_EMBEDDING_ENGINES", '{"tei": {"url": "http://gpu-box:8080/v1/", "model": "bge-small"}}'
    )
    assert studio_settings._embedding_engines("KNOWLEDGE_EMBEDDING_ENGINES") == {
        "tei": {
            "url": "http://gpu-box:8080/v1",
            "model": "bge-small",
            "api_key": "",
            "dimension": None,
            "timeout": 30.0,
        }
    }
