"""The client of an external reranker (KNOWLEDGE_RERANKER_*), against a small real HTTP server:
Hugging Face TEI's /rerank and the /v1/rerank of Jina and Cohere give a score per text in the
order given; a timeout, an error status or an answer that does not score every text once is an
EngineError saying so (code `reranker_failed`)."""

import pytest

from knowledge.engines import REQUEST_TEXTS, EngineError, rerank, reranker_configured

from .engine_server import EngineServer

TEXTS = ["The press needs oil.", "Restart the router.", "Lunch is at noon."]


def tei_scores(body: dict) -> tuple[int, list]:
    """TEI's answer: best first. The score of a text here: its length, so the order is known."""
    scored = [{"index": n, "score": float(len(text))} for n, text in enumerate(body["texts"])]
    return 200, sorted(scored, key=lambda item: -item["score"])


def v1_scores(body: dict) -> tuple[int, dict]:
    results = [{"index": n, "relevance_score": len(text) / 100} for n, text in enumerate(body["documents"])]
    return 200, {"model": body.get("model"), "results": sorted(results, key=lambda item: -item["relevance_score"])}


@pytest.fixture
def reranker(settings):
    server = EngineServer(lambda path, body: tei_scores(body))
    settings.KNOWLEDGE_RERANKER_URL = server.url
    settings.KNOWLEDGE_RERANKER_API = "tei"
    settings.KNOWLEDGE_RERANKER_MODEL = ""
    settings.KNOWLEDGE_RERANKER_API_KEY = "rerank-key"
    settings.KNOWLEDGE_RERANKER_TIMEOUT = 10.0
    yield server
    server.close()


def test_tei_scores_each_text_in_the_order_given(reranker):
    assert rerank("how do I reboot?", TEXTS) == [20.0, 19.0, 17.0]
    [(path, body, headers)] = reranker.requests
    assert path == "/rerank" and body == {"query": "how do I reboot?", "texts": TEXTS}
    assert headers["Authorization"] == "Bearer rerank-key"


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_the_v1_shape_of_jina_and_cohere(reranker, settings, suffix):
    settings.KNOWLEDGE_RERANKER_URL = reranker.url + suffix
    settings.KNOWLEDGE_RERANKER_API, settings.KNOWLEDGE_RERANKER_MODEL = "v1", "jina-reranker-v2"
    reranker.answer = lambda path, body: v1_scores(body)
    assert rerank("how do I reboot?", TEXTS) == [0.2, 0.19, 0.17]
    [(path, body, _)] = reranker.requests
    assert path == "/v1/rerank"
    assert body == {"model": "jina-reranker-v2", "query": "how do I reboot?", "documents": TEXTS, "top_n": 3}


def test_many_texts_go_in_several_requests_and_come_back_in_order(reranker):
    texts = [f"text {'x' * n}" for n in range(REQUEST_TEXTS + 5)]
    assert rerank("q", texts) == [float(len(text)) for text in texts]
    assert [len(body["texts"]) for _, body, _ in reranker.requests] == [REQUEST_TEXTS, 5]


@pytest.mark.parametrize(
    "answer, said",
    [
        (
            lambda server: (500, {"error": "Internal error", "error_type": "backend"}),
            "the reranker answered 500: Internal error",
        ),
        (
            lambda server: (413, b"batch size 3 > maximum allowed batch size 2"),
            "the reranker answered 413: batch size 3",
        ),
        (lambda server: server.hang(), "the reranker did not answer within 0.5 s"),
        (lambda server: (200, b"{not json"), "the reranker answered something that is not JSON"),
        (lambda server: (200, {"results": []}), 'the reranker answered without a list of {"index", "score"}'),
        (
            lambda server: (200, [{"index": 0, "score": 1.0}, {"index": 1, "score": 0.5}]),
            "the reranker scored 2 of 3 texts",
        ),
        (
            lambda server: (200, [{"index": n, "score": 1.0} for n in (0, 1, 7)]),
            "the reranker answered index 7 for 3 texts",
        ),
        (
            lambda server: (200, [{"index": n, "score": 1.0} for n in (0, 1, 1)]),
            "the reranker answered index 1 for 3 texts",
        ),
        (lambda server: (200, [{"index": n, "score": "high"} for n in range(3)]), "the reranker answered score 'high'"),
    ],
    ids=["500", "413", "timeout", "not-json", "not-a-list", "missing", "out-of-range", "twice", "not-a-number"],
)
def test_a_reranker_that_fails_raises_saying_why(reranker, settings, answer, said):
    settings.KNOWLEDGE_RERANKER_TIMEOUT = 0.5
    reranker.answer = lambda path, body: answer(reranker)
    with pytest.raises(EngineError) as failed:
        rerank("how do I reboot?", TEXTS)
    assert failed.value.message.startswith(said), failed.value.message
    assert failed.value.code == "reranker_failed"


def test_an_unreachable_reranker_says_where_it_was_looked_for(reranker, settings):
    reranker.close()
    with pytest.raises(EngineError, match=f"the reranker could not be reached at {reranker.url}/rerank"):
        rerank("q", TEXTS)


def test_without_a_url_there_is_no_reranker(settings):
    settings.KNOWLEDGE_RERANKER_URL = ""
    assert not reranker_configured()
    with pytest.raises(EngineError, match="no reranker is configured"):
        rerank("q", TEXTS)


def test_with_a_url_there_is_one(reranker):
    assert reranker_configured()
