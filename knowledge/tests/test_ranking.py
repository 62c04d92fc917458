"""How search ranks, on a small real corpus: near-duplicate passages (a document and its copy with a
banner line) collapse into one result listing the other, the fusion weight moves hybrid between the
keyword and the vector ranking, a reranker behind a real HTTP endpoint reorders the top (and its
failure leaves the order, with a note), the heading trail is in the keyword index, and the
ranking settings are the owner's to change through the API."""

import pytest
from django.test import Client

from accounts.services import api_token_create
from knowledge import services
from knowledge.search import search

from .conftest import upload
from .engine_server import EngineServer

pytestmark = pytest.mark.django_db

ARTICLE = "\n\n".join(
    [
        "Heat pumps",
        "A heat pump moves warmth from the outside air into the house, even in winter.",
        "== Defrosting ==",
        "Ice on the outdoor coil is melted every ninety minutes by running the cycle backwards.",
        "== Noise ==",
        "The fan is quieter than a fridge: about forty decibels at a distance of three metres.",
        "== Conclusion ==",
        "Installed well, the unit pays for itself within eight years of ordinary use.",
    ]
)
COPY = "This is an archived mirror copy retrieved on 12 March 2024.\n\n" + ARTICLE


@pytest.fixture
def plant(alice, ingest, settings):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 32, 0  # a paragraph a chunk
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant")
    documents = ingest(knowledge_base, alice, [upload("heat_pumps.txt", ARTICLE), upload("mirror.txt", COPY)])
    assert all(d.status == "ready" for d in documents), [d.error for d in documents]
    return knowledge_base


def test_a_documents_near_copy_is_listed_under_the_passage_not_beside_it(alice, plant):
    answer = search(user=alice, knowledge_base=plant, query="How often is ice melted off the coil?", k=3)
    texts = [hit.text for hit in answer.hits]
    assert len(texts) == len(set(texts)) == 3 and "ninety minutes" in texts[0]
    (copy,) = answer.hits[0].also_in
    assert {copy["document"], answer.hits[0].document} == {"heat_pumps.txt", "mirror.txt"}
    assert copy["heading"].endswith("Defrosting") and copy["chunk"] != answer.hits[0].chunk_id
    # Off: the copy's passage takes a place of its own in the top k.
    plain = search(
        user=alice, knowledge_base=plant, query="How often is ice melted off the coil?", k=3, collapse_duplicates=False
    )
    assert all("ninety minutes" in hit.text for hit in plain.hits[:2]) and plain.hits[0].also_in == []
    assert {hit.document for hit in plain.hits[:2]} == {"heat_pumps.txt", "mirror.txt"}


def test_the_fusion_weight_moves_hybrid_from_keywords_to_vectors(alice, plant):
    query = "decibels of the fan"
    for weight, mode in ((0.0, "bm25"), (1.0, "dense")):
        fused = search(
            user=alice, knowledge_base=plant, query=query, k=6, fusion_weight=weight, collapse_duplicates=False
        )
        alone = search(user=alice, knowledge_base=plant, query=query, k=6, mode=mode, collapse_duplicates=False)
        assert [h.chunk_id for h in fused.hits] == [h.chunk_id for h in alone.hits]
        assert fused.ranking["fusion_weight"] == weight


def test_the_heading_trail_is_indexed_and_stemmed(alice, plant):
    # "conclusions" is only in a heading (stemmed to meet "Conclusion"); the passage's text lacks it.
    hits = search(user=alice, knowledge_base=plant, query="conclusions", mode="bm25", k=10).hits
    (hit,) = [hit for hit in hits if "pays for itself" in hit.text]
    assert "onclusion" not in hit.text and hit.heading == "Heat pumps › Conclusion"


@pytest.fixture
def reranker(settings):
    """A TEI-shaped reranker that likes the passage about noise best."""

    def scores(path, body):
        scored = [
            {"index": n, "score": 10.0 if "decibels" in text else 1.0 / (n + 1)} for n, text in enumerate(body["texts"])
        ]
        return 200, sorted(scored, key=lambda item: -item["score"])

    server = EngineServer(scores)
    settings.KNOWLEDGE_RERANKER_URL, settings.KNOWLEDGE_RERANKER_API = server.url, "tei"
    settings.KNOWLEDGE_RERANKER_TIMEOUT = 10.0
    yield server
    server.close()


def test_a_reranker_behind_an_endpoint_orders_the_top(alice, plant, reranker):
    query = "How often is ice melted off the coil?"
    plain = search(user=alice, knowledge_base=plant, query=query)
    reranked = search(user=alice, knowledge_base=plant, query=query, rerank=True)
    assert "ninety minutes" in plain.hits[0].text and "decibels" in reranked.hits[0].text
    assert reranked.hits[0].rerank_score == 10.0 and reranked.notes == []
    path, body, _ = reranker.requests[-1]
    assert path == "/rerank" and body["query"] == query and len(body["texts"]) > 1


def test_a_reranker_that_fails_leaves_the_order_and_says_so(alice, plant, reranker):
    reranker.answer = lambda path, body: (500, {"error": "overloaded"})
    query = "How often is ice melted off the coil?"
    answer = search(user=alice, knowledge_base=plant, query=query, rerank=True)
    plain = search(user=alice, knowledge_base=plant, query=query)
    assert [h.chunk_id for h in answer.hits] == [h.chunk_id for h in plain.hits]
    assert answer.notes and answer.notes[0].startswith("not reranked:") and "500" in answer.notes[0]


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def test_the_owner_changes_the_ranking_through_the_api_and_others_cannot(alice, bob, plant, settings):
    client, url = Client(), f"/api/knowledge/{plant.pk}/ranking/"
    answer = client.get(url, **bearer(alice)).json()
    assert answer == {
        "id": plant.pk,
        "fusion_weight": 0.8,
        "collapse_duplicates": True,
        "rerank": False,
        "expand_query": False,
    }
    changed = client.post(
        url, {"fusion_weight": 0.3, "collapse_duplicates": False}, content_type="application/json", **bearer(alice)
    )
    assert changed.status_code == 200 and changed.json()["fusion_weight"] == 0.3
    plant.refresh_from_db()
    assert plant.fusion_weight == 0.3 and plant.collapse_duplicates is False
    refused = client.post(url, {"fusion_weight": 1.5}, content_type="application/json", **bearer(alice))
    assert refused.status_code == 400 and "0 to 1" in refused.content.decode()
    settings.KNOWLEDGE_RERANKER_URL = ""
    no_reranker = client.post(url, {"rerank": True}, content_type="application/json", **bearer(alice))
    assert no_reranker.status_code == 400 and "KNOWLEDGE_RERANKER_URL" in no_reranker.content.decode()
    assert client.get(url, **bearer(bob)).status_code == 404  # private: not even seen
    plant.shared = True
    plant.save()
    assert client.post(url, {"fusion_weight": 0.9}, content_type="application/json", **bearer(bob)).status_code == 403
    plant.refresh_from_db()
    assert plant.fusion_weight == 0.3


def test_the_ranking_card_saves_without_a_reload_and_shows_a_bad_weight_where_it_was_typed(alice, bob, plant, client):
    client.force_login(alice)
    page = client.get(f"/knowledge/{plant.pk}/").content.decode()
    assert 'id="ranking"' in page and "Save ranking" in page
    saved = client.post(
        f"/knowledge/{plant.pk}/ranking/", {"fusion_weight": "0.4", "collapse_duplicates": "on"}, HTTP_HX_REQUEST="true"
    )
    assert saved.status_code == 200 and "Saved" in saved.content.decode()
    plant.refresh_from_db()
    assert plant.fusion_weight == 0.4 and plant.collapse_duplicates and not plant.rerank
    bad = client.post(f"/knowledge/{plant.pk}/ranking/", {"fusion_weight": "2"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and 'id="ranking-weight-error"' in bad.content.decode()
    client.force_login(bob)
    assert client.post(f"/knowledge/{plant.pk}/ranking/", {"fusion_weight": "0.1"}).status_code == 404
