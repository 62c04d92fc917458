"""Retrieval for a reply: what is attached is searched with the asking person's access, a small
document comes whole and a large one is searched, several bases merge into one numbered list, and
the record says what happened (withheld private bases, nothing above the minimum score)."""

import pytest

from knowledge import services
from knowledge.retrieval import passages, retrieve, sources_block, with_sources

from .conftest import upload
from .test_search import NETWORK, OFFICE, PARTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def plant(alice, ingest, settings):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant")
    documents = ingest(knowledge_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK)])
    assert all(d.status == "ready" for d in documents)
    return knowledge_base


@pytest.fixture
def office(alice, ingest, settings):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = services.knowledge_base_create(owner=alice, name="Office", shared=True)
    [document] = ingest(knowledge_base, alice, [upload("office.md", OFFICE)])
    return knowledge_base, document


def test_a_reply_gets_numbered_sources_with_their_chunk_ids(alice, plant):
    record = retrieve(user=alice, query="How can I reboot my modem?", knowledge_base_ids=[plant.pk], k=3, mode="dense")
    assert [s["n"] for s in record["sources"]] == [1, 2, 3]
    top = record["sources"][0]
    assert top["document"] == "network.md" and "restart the router" in top["text"]
    from knowledge.models import Chunk

    assert Chunk.objects.get(pk=top["chunk"]).text == top["text"]  # citations map to stored chunks
    assert record["searched"] == ["Plant"] and record["withheld"] == 0 and not record["nothing_passed"]
    block = sources_block(record)
    assert block.startswith("Answer from the numbered sources") and "[1] network.md" in block and "cite" in block
    assert with_sources("Be brief.", record).startswith("Be brief.\n\nAnswer from")
    assert passages(record)[0] == {
        "number": 1,
        "text": top["text"],
        "document": "network.md",
        "page": None,
        "heading": top["heading"],
    }


def test_another_persons_private_base_gives_nothing_and_is_counted(alice, bob, plant, office):
    knowledge_base, _ = office
    record = retrieve(user=bob, query="lunch", knowledge_base_ids=[plant.pk, knowledge_base.pk], k=5)
    assert record["withheld"] == 1 and record["searched"] == ["Office"]
    assert all(s["knowledge_base"] == knowledge_base.pk for s in record["sources"])
    assert "private to its owner" in __import__("knowledge.retrieval", fromlist=["note"]).note(record)


def test_a_small_document_comes_whole_and_a_large_one_is_searched(alice, plant, office, settings):
    knowledge_base, document = office
    record = retrieve(user=alice, query="router", document_ids=[document.pk], k=1)
    assert record["whole"] == ["office.md"] and record["searched"] == []
    from knowledge.models import Chunk

    assert [s["chunk"] for s in record["sources"]] == list(
        document.chunks.order_by("ordinal").values_list("pk", flat=True)
    )  # every chunk, in order, unscored
    assert {s["score"] for s in record["sources"]} == {None} and Chunk.objects.filter(document=document).count() >= 2
    assert "Invoices" in " ".join(s["text"] for s in record["sources"])
    settings.KNOWLEDGE_WHOLE_DOCUMENT_TOKENS = 5
    record = retrieve(user=alice, query="When is lunch served?", document_ids=[document.pk], k=1)
    assert record["whole"] == [] and record["searched"] == ["office.md"]
    assert len(record["sources"]) == 1 and "lunch" in record["sources"][0]["text"]


def test_several_bases_merge_into_one_top_k(alice, plant, office):
    knowledge_base, _ = office
    record = retrieve(
        user=alice,
        query="When do we send invoices?",
        knowledge_base_ids=[plant.pk, knowledge_base.pk],
        k=2,
        mode="hybrid",
    )
    assert len(record["sources"]) == 2 and "Invoices" in record["sources"][0]["text"]
    assert record["searched"] == ["Plant", "Office"]


def test_nothing_above_the_minimum_score_is_said(alice, plant):
    record = retrieve(
        user=alice, query="quarterly tax filing deadline", knowledge_base_ids=[plant.pk], mode="dense", min_score=0.95
    )
    assert record["sources"] == [] and record["nothing_passed"]


def test_a_long_query_is_cut_not_refused(alice, plant):
    record = retrieve(user=alice, query="router " * 2000, knowledge_base_ids=[plant.pk], k=1)
    assert len(record["query"]) == 2000 and record["sources"]
