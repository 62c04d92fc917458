"""Search over a small real corpus: keywords find the rare exact code that meaning misses, meaning
finds the paraphrase that keywords miss, hybrid finds both; k is clamped, the query bounded, and
the vectors each process caches follow the documents."""

import pytest

from knowledge import services, vectors
from knowledge.search import MAX_QUERY_CHARS, SearchError, search

from .conftest import upload

pytestmark = pytest.mark.django_db

PARTS = "\n\n".join(
    [
        "# Spare parts",
        "Part ZX-4410 is the intake valve of the model A press.",
        "Part ZX-4411 is the return spring of the model B press.",
        "Part ZX-4412 is the gasket of the model C press.",
        "Part ZX-4441 is the drive belt of the model D press.",
        "Part ZX-1144 is the oil filter of the model E press.",
    ]
)
NETWORK = "# Network\n\nTo restart the router, hold the power button for ten seconds until the lights blink."
OFFICE = "\n\n".join(
    [
        "# Office",
        "Invoices are sent on the first working day of each month.",
        "The cafeteria serves lunch from noon to two.",
    ]
)
CODE_QUERY, PARAPHRASE = "ZX-4411", "How can I reboot my modem?"


@pytest.fixture
def corpus(alice, ingest, settings):
    """Small chunks (one paragraph each) so each fact is a chunk of its own."""
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    settings.KNOWLEDGE_FUSION_WEIGHT = 0.5  # plain reciprocal rank fusion: the scores below are its
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant", shared=False)
    documents = ingest(
        knowledge_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]
    )
    assert all(d.status == "ready" for d in documents), [d.error for d in documents]
    return knowledge_base


def texts(answer):
    return [hit.text for hit in answer.hits]


def test_keywords_find_the_exact_code_that_meaning_misses(alice, corpus):
    bm25 = search(user=alice, knowledge_base=corpus, query=CODE_QUERY, mode="bm25")
    dense = search(user=alice, knowledge_base=corpus, query=CODE_QUERY, mode="dense")
    assert "ZX-4411" in bm25.hits[0].text
    assert "ZX-4411" not in dense.hits[0].text  # a neighbouring code looks the same to the embedder
    assert bm25.hits[0].keyword_score > bm25.hits[1].keyword_score and bm25.hits[0].vector_score is None


def test_meaning_finds_the_paraphrase_that_keywords_miss(alice, corpus):
    bm25 = search(user=alice, knowledge_base=corpus, query=PARAPHRASE, mode="bm25")
    dense = search(user=alice, knowledge_base=corpus, query=PARAPHRASE, mode="dense")
    assert not any("router" in text for text in texts(bm25))  # no word in common
    assert "restart the router" in dense.hits[0].text and dense.hits[0].document == "network.md"
    assert dense.hits[0].vector_score == dense.hits[0].score > 0.5 and dense.hits[0].keyword_score is None


def test_hybrid_finds_both(alice, corpus):
    code = search(user=alice, knowledge_base=corpus, query=CODE_QUERY)
    paraphrase = search(user=alice, knowledge_base=corpus, query=PARAPHRASE)
    assert code.mode == "hybrid" and code.k == 5 and len(code.hits) == 5
    assert any("ZX-4411" in text for text in texts(code)[:2])
    assert "restart the router" in paraphrase.hits[0].text
    exact = next(hit for hit in code.hits if "ZX-4411" in hit.text)
    assert exact.keyword_score is not None and exact.vector_score is not None
    # Keyword rank 1, vector rank 2 (equal weights: plain reciprocal rank fusion's score).
    assert corpus.fusion_weight == 0.5
    assert exact.fused_score == pytest.approx(1 / 61 + 1 / (60 + 2), abs=1e-6)
    assert [hit.rank for hit in code.hits] == [1, 2, 3, 4, 5]


def test_a_hit_carries_its_document_heading_and_ranks(alice, corpus):
    hit = search(user=alice, knowledge_base=corpus, query="lunch cafeteria", mode="bm25").hits[0]
    assert hit.to_dict() | {"chunk": 0, "document_id": 0} == {
        "rank": 1,
        "chunk": 0,
        "text": "The cafeteria serves lunch from noon to two.",
        "document": "office.md",
        "document_id": 0,
        "page": None,
        "heading": "Office",
        "score": hit.to_dict()["score"],
        "keyword_score": hit.to_dict()["keyword_score"],
        "vector_score": None,
        "fused_score": None,
        "rerank_score": None,
        "also_in": [],
    }


def test_k_is_clamped_and_says_so(alice, corpus):
    huge = search(user=alice, knowledge_base=corpus, query="press", k=10**9, mode="bm25")
    assert huge.k == 50 and huge.clamped == {"k": {"asked": 10**9, "used": 50}} and len(huge.hits) == 5
    none = search(user=alice, knowledge_base=corpus, query="press", k=0, mode="bm25")
    assert none.k == 1 and len(none.hits) == 1 and none.clamped["k"]["used"] == 1


def test_a_minimum_score_leaves_out_weaker_hits(alice, corpus):
    everything = search(user=alice, knowledge_base=corpus, query=PARAPHRASE, mode="dense", k=10)
    strong = search(user=alice, knowledge_base=corpus, query=PARAPHRASE, mode="dense", k=10, min_score=0.5)
    assert len(everything.hits) > 1 and texts(strong) == [texts(everything)[0]]


@pytest.mark.parametrize(
    "query, message",
    [("x" * (MAX_QUERY_CHARS + 1), "at most 2,000"), ("   ", "must be some text"), (None, "must be some text")],
)
def test_a_query_is_bounded(alice, handbook, query, message):
    with pytest.raises(SearchError, match=message):
        search(user=alice, knowledge_base=handbook, query=query)


def test_fts_syntax_in_a_query_is_only_text(alice, handbook, ingest):
    ingest(handbook, alice, [upload("a.md", 'The "press" (NEAR the door) is col:press AND more*, drop it')])
    for query in ['"press', "NEAR(press", "press*", "-press", "col:press OR", "AND", "'; DROP TABLE x; --"]:
        assert search(user=alice, knowledge_base=handbook, query=query, mode="bm25").hits  # no syntax error
    assert search(user=alice, knowledge_base=handbook, query="?!…", mode="bm25").hits == []


def test_an_unknown_mode_is_refused(alice, handbook):
    with pytest.raises(SearchError, match="mode: must be one of hybrid, bm25, dense"):
        search(user=alice, knowledge_base=handbook, query="press", mode="fuzzy")


def test_an_empty_knowledge_base_finds_nothing_in_every_mode(alice, handbook):
    for mode in ("hybrid", "bm25", "dense"):
        assert search(user=alice, knowledge_base=handbook, query="anything", mode=mode).hits == []


def test_the_cached_vectors_follow_new_and_deleted_documents(alice, corpus, ingest):
    vectors.cache_clear()
    search(user=alice, knowledge_base=corpus, query="holidays", mode="dense")
    matrix = vectors.vector_matrix(corpus.pk, corpus.dimension)
    assert vectors.vector_matrix(corpus.pk, corpus.dimension) is matrix  # unchanged: the cached one

    (holidays,) = ingest(corpus, alice, [upload("holidays.md", "# Leave\n\nEvery employee gets 30 days of vacation.")])
    found = search(user=alice, knowledge_base=corpus, query="How much paid time off do I get?", mode="dense")
    assert found.hits[0].document == "holidays.md"

    services.document_delete(user=alice, document=holidays)
    after = search(user=alice, knowledge_base=corpus, query="How much paid time off do I get?")
    assert "holidays.md" not in [hit.document for hit in after.hits]


def test_documents_still_being_processed_are_not_searched(alice, handbook, ingest, monkeypatch):
    ingest(handbook, alice, [upload("old.md", "# Old\n\nZX-4411 first")])
    (added,) = services.documents_add(
        user=alice, knowledge_base=handbook, files=[upload("new.md", "# New\n\nZX-4411 again")]
    )
    assert added.document.status == "queued"
    assert [hit.document for hit in search(user=alice, knowledge_base=handbook, query="ZX-4411").hits] == ["old.md"]
