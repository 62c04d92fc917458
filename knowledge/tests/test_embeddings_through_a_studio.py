"""One studio is another's embedding engine: a knowledge base whose engine is a served studio's
`/v1/embeddings` (the live server here, asked over real HTTP with an API token) holds the vectors
the bundled embedder gives the same passages, and is searched by meaning."""

import numpy as np
import pytest

from accounts.services import api_token_create
from knowledge import search as knowledge_search
from knowledge import services
from knowledge.models import Chunk
from knowledge.search import search

from .conftest import upload
from .test_search import NETWORK, OFFICE, PARAPHRASE, PARTS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def studio_engine(live_server, alice, settings):
    settings.KNOWLEDGE_EMBEDDING_ENGINES = {
        "studio": {
            "url": live_server.url + "/v1",
            "model": "all-MiniLM-L6-v2",
            "api_key": api_token_create(user=alice, name="engine")[1],
            "dimension": 384,
            "timeout": 60.0,
        }
    }
    knowledge_search._query_vector.cache_clear()
    yield
    knowledge_search._query_vector.cache_clear()


def test_a_base_embedded_by_another_studio_matches_the_bundled_one_and_finds_the_paraphrase(
    alice, studio_engine, ingest, settings
):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    files = lambda: [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]  # noqa: E731
    remote = services.knowledge_base_create(owner=alice, name="Remote", embedding_model="studio")
    bundled = services.knowledge_base_create(owner=alice, name="Bundled")
    assert (remote.embedding_model, remote.dimension) == ("studio:all-MiniLM-L6-v2", 384)
    assert all(d.status == "ready" for d in ingest(remote, alice, files()) + ingest(bundled, alice, files()))

    def vectors(knowledge_base):
        chunks = Chunk.objects.filter(knowledge_base=knowledge_base).order_by("document__name", "ordinal")
        return np.array([np.frombuffer(bytes(chunk.embedding), dtype="<f4") for chunk in chunks])

    served, local = vectors(remote), vectors(bundled)  # the served studio's numpy twin, the job worker's torch
    assert served.shape == local.shape and served.shape[1:] == (384,) and len(served) >= 3
    assert np.abs(served - local).max() < 1e-4
    for mode in ("dense", "hybrid"):
        hits = search(user=alice, knowledge_base=remote, query=PARAPHRASE, mode=mode).hits
        assert "restart the router" in hits[0].text, mode
