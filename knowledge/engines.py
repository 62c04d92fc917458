"""Embedders and a reranker outside the studio, over HTTP, beside the bundled all-MiniLM-L6-v2.

- **Embedding engines** (KNOWLEDGE_EMBEDDING_ENGINES): any OpenAI-compatible `POST /embeddings`
  (TEI, vLLM, Ollama, llama-server, another studio's /v1). A knowledge base pins its embedder as
  `embedding_model`: the bundled one, or "<engine name>:<model>" with the dimension measured when
  the base was created or rebuilt. `embed_passages` (job workers, ingestion) and `embed_query` (the
  web process, search) give unit rows either way; an engine's answer is checked (status, shape,
  count, dimension) and a bad one raises EngineError with a sentence a person can act on.
- **A reranker** (KNOWLEDGE_RERANKER_*): Hugging Face TEI's `POST /rerank`, or the `POST /v1/rerank`
  of Jina and Cohere; `rerank(query, texts)` scores each text.

Plain `urllib` (no client library to install) and no model code: the web process imports this.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from studio.errors import StudioError
from studio.llm.numpy_embedder import EMBEDDING_MODEL, load_numpy_embedder

from . import tuned_embedders

BUNDLED_DIMENSION = 384  # all-MiniLM-L6-v2
REQUEST_TEXTS = 32  # texts per request: TEI's default --max-client-batch-size
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # 32 vectors of 16,384 numbers written as JSON fit well below this
ERROR_DETAIL_CHARS = 300  # of an engine's error body, quoted in the reason


class EngineError(StudioError):
    """An engine outside the studio failed (unreachable, slow, an error status, a malformed or
    mismatched answer): `message` says which and what to do; `code` for programs."""

    status = 502

    def __init__(self, message: str, *, code: str = "embedding_engine_failed"):
        super().__init__(message, code=code)


class QueryEmbeddingUnavailable(StudioError):
    """A search query could not be embedded for its knowledge base's engine: the dense part of the
    search cannot run (its keywords still can). `reason` is the EngineError's sentence."""

    status = 503

    def __init__(self, reason: str):
        super().__init__(reason, code="query_embedding_unavailable")
        self.reason = reason


@dataclass(frozen=True)
class EmbeddingEngine:
    name: str  # its key in KNOWLEDGE_EMBEDDING_ENGINES
    url: str  # its OpenAI base URL, ".../v1" (no trailing slash)
    model: str  # what it is asked for
    api_key: str = ""
    dimension: int | None = None  # as configured; None: measured when a base pins it
    timeout: float = 30.0  # seconds for one request

    @property
    def pinned_name(self) -> str:
        """What a knowledge base stores as its `embedding_model`."""
        return f"{self.name}:{self.model}"


def embedding_engines() -> dict[str, EmbeddingEngine]:
    """The engines of KNOWLEDGE_EMBEDDING_ENGINES (checked by studio/settings.py), by name."""
    return {name: EmbeddingEngine(name=name, **config) for name, config in settings.KNOWLEDGE_EMBEDDING_ENGINES.items()}


def embedder_names() -> list[str]:
    """What a person may choose for a knowledge base: the bundled model, then each engine's name."""
    return [EMBEDDING_MODEL, *embedding_engines()]


def engine_of(embedding_model: str) -> EmbeddingEngine | None:
    """The engine a knowledge base's pinned `embedding_model` names; None for the bundled model.
    EngineError when the settings no longer have it, or have it serve another model (the base's
    vectors would not be comparable with the new ones)."""
    if embedding_model == EMBEDDING_MODEL:
        return None
    name, _, model = embedding_model.partition(":")
    engine = embedding_engines().get(name)
    if engine is None:
        raise EngineError(
            f"this knowledge base embeds with {embedding_model}, and KNOWLEDGE_EMBEDDING_ENGINES names no "
            f"engine '{name}' now: configure it again, or rebuild the base with another embedder"
        )
    if engine.model != model:
        raise EngineError(
            f"this knowledge base was built with {embedding_model}; the embedding engine '{name}' now "
            f"serves {engine.model}, whose vectors do not match its: rebuild it"
        )
    return engine


def measured_dimension(engine: EmbeddingEngine) -> int:
    """How many numbers the engine gives a text: one request (checked against a configured `dimension`)."""
    measured = _engine_vectors(engine, ["How many numbers make one vector?"], dimension=None).shape[1]
    if engine.dimension is not None and measured != engine.dimension:
        raise EngineError(
            f"the embedding engine '{engine.name}' returned {measured} numbers per text, and "
            f"KNOWLEDGE_EMBEDDING_ENGINES says {engine.dimension}: correct the setting, or the engine's model"
        )
    return measured


def embed_passages(embedding_model: str, texts: list[str], *, dimension: int) -> np.ndarray:
    """Unit vectors of passages for a knowledge base pinned to `embedding_model` and `dimension`:
    (N, D) float32, little-endian. The bundled model runs on torch (job workers only); an engine
    is asked in requests of REQUEST_TEXTS; a tuned embedder ("tuned:<id>") runs on torch from its
    folder. EngineError when an engine fails or does not match, or a tuned embedder's files are gone."""
    if tuned_embedders.is_tuned(embedding_model):
        try:
            return tuned_embedders.embed_passages(embedding_model, texts)  # (N, D)
        except tuned_embedders.TunedEmbedderMissing as exc:
            raise EngineError(exc.message, code=exc.code) from None
    engine = engine_of(embedding_model)
    if engine is None:
        from studio.llm.embeddings import load_embedder  # noqa: PLC0415 - torch: job workers only, never the web process

        return load_embedder().embed(texts).numpy().astype("<f4")  # (N, 384)
    return _engine_vectors(engine, texts, dimension=dimension)


def embed_query(embedding_model: str, text: str, *, dimension: int) -> np.ndarray:
    """A search query's unit vector (D,), in the calling process: the bundled model in numpy (no
    torch in the web process), or the engine. Raises QueryEmbeddingUnavailable (with the reason)
    when the engine fails, so a search can go on by keywords and say why; for QUERY_FAILURE_MEMORY_S
    after a failure the engine is not asked again (an engine that times out would make every search
    wait its timeout). A tuned embedder ("tuned:<id>") runs in numpy from its folder, as the bundled one."""
    if tuned_embedders.is_tuned(embedding_model):
        try:
            return tuned_embedders.embed_query(embedding_model, text)
        except tuned_embedders.TunedEmbedderMissing as exc:
            raise QueryEmbeddingUnavailable(exc.message) from exc
    try:
        engine = engine_of(embedding_model)
    except EngineError as exc:
        raise QueryEmbeddingUnavailable(exc.message) from exc
    if engine is None:
        return load_numpy_embedder().embed([text])[0]
    failed_at, reason = _query_failures.get(engine.name, (None, ""))
    if failed_at is not None and time.monotonic() - failed_at < QUERY_FAILURE_MEMORY_S:
        raise QueryEmbeddingUnavailable(reason)
    try:
        vector = _engine_vectors(engine, [text], dimension=dimension)[0]
    except EngineError as exc:
        _query_failures[engine.name] = (time.monotonic(), exc.message)
        raise QueryEmbeddingUnavailable(exc.message) from exc
    _query_failures.pop(engine.name, None)
    return vector


QUERY_FAILURE_MEMORY_S = 30.0
_query_failures: dict[str, tuple[float, str]] = {}  # engine name -> (when a query failed, why), this process


def _engine_vectors(engine: EmbeddingEngine, texts: list[str], *, dimension: int | None) -> np.ndarray:
    """(N, D) float32 unit rows from the engine, in the texts' order, REQUEST_TEXTS a request."""
    who = f"the embedding engine '{engine.name}'"
    rows = []
    for start in range(0, len(texts), REQUEST_TEXTS):
        batch = texts[start : start + REQUEST_TEXTS]
        answer = _post_json(
            f"{engine.url}/embeddings",
            {"input": batch, "model": engine.model},
            api_key=engine.api_key,
            timeout=engine.timeout,
            who=who,
        )
        vectors = _vectors_of(answer, len(batch), who=who)  # (B, D)
        if dimension is not None and vectors.shape[1] != dimension:
            raise EngineError(
                f"{who} returned {vectors.shape[1]} numbers per text; this knowledge base was built with "
                f"{dimension}: rebuild it, or point the engine back at the model it was built with"
            )
        dimension = vectors.shape[1]
        rows.append(vectors)
    if not rows:
        return np.zeros((0, dimension or 0), dtype="<f4")
    return np.concatenate(rows)


def _vectors_of(answer, count: int, *, who: str) -> np.ndarray:
    """OpenAI's {"data": [{"index", "embedding": [...]}]} as (count, D) unit rows, in index order."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise EngineError(f'{who} answered without a "data" list of embeddings: is its URL the /v1 one?')
    if len(data) != count:
        raise EngineError(f"{who} returned {len(data)} vectors for {count} texts")
    indices = [item.get("index", n) for n, item in enumerate(data)]
    if sorted(indices) != list(range(count)):
        raise EngineError(f"{who} numbered its vectors {indices[:10]}, not 0 to {count - 1}")
    ordered = [item.get("embedding") for _, item in sorted(zip(indices, data), key=lambda pair: pair[0])]
    if not all(isinstance(vector, list) and vector for vector in ordered) or len({len(v) for v in ordered}) != 1:
        raise EngineError(f"{who} returned embeddings that are not lists of numbers of one length")
    try:
        vectors = np.array(ordered, dtype=np.float64)  # (count, D)
    except (TypeError, ValueError):
        raise EngineError(f"{who} returned embeddings that are not lists of numbers") from None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if vectors.ndim != 2 or not np.isfinite(vectors).all() or not (norms > 0).all():
        raise EngineError(f"{who} returned an embedding that is zero, or not finite numbers")
    return (vectors / norms).astype("<f4")  # unit rows: cosine is their dot product, as for the bundled model


def _post_json(url: str, body: dict, *, api_key: str, timeout: float, who: str):
    """POST JSON, answer the parsed JSON; EngineError for anything else, saying what happened. The
    whole exchange is bounded by `timeout` (a server that trickles its answer is cut off too)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    deadline = time.monotonic() + timeout
    try:
        # No proxy from the environment, as the chat's external engine (studio/llm/remote.py): engines
        # are the team's own servers.
        with _OPENER.open(request, timeout=timeout) as response:
            raw = bytearray()
            while piece := response.read(64 * 1024):
                raw += piece
                if len(raw) > MAX_ANSWER_BYTES:
                    raise EngineError(f"{who} answered more than {MAX_ANSWER_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise TimeoutError
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        raise EngineError(f"{who} answered {exc.code}{': ' + detail if detail else ''}") from None
    except TimeoutError:
        raise EngineError(f"{who} did not answer within {timeout:g} s (at {url})") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise EngineError(f"{who} did not answer within {timeout:g} s (at {url})") from None
        raise EngineError(f"{who} could not be reached at {url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise EngineError(f"{who} answered something that is not JSON: {bytes(raw[:100])!r}") from None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The useful part of an error body: OpenAI's error.message, TEI's error, or the first characters."""
    try:
        raw = error.read(ERROR_DETAIL_CHARS * 4)
    except OSError:
        return ""
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:ERROR_DETAIL_CHARS]
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        message = inner.get("message") if isinstance(inner, dict) else inner or parsed.get("message")
        if isinstance(message, str):
            return message[:ERROR_DETAIL_CHARS]
    return text[:ERROR_DETAIL_CHARS]


# --- the reranker ----------------------------------------------------------------------------------


def reranker_configured() -> bool:
    return bool(settings.KNOWLEDGE_RERANKER_URL)


def rerank(query: str, texts: list[str]) -> list[float]:
    """A relevance score for each text (higher: more relevant), in the order given, from the
    reranker of KNOWLEDGE_RERANKER_URL, REQUEST_TEXTS a request. EngineError (code
    `reranker_failed`) on a timeout, an error status or an answer that does not score every text once."""
    url, api = settings.KNOWLEDGE_RERANKER_URL, settings.KNOWLEDGE_RERANKER_API
    if not url:
        raise EngineError("no reranker is configured (KNOWLEDGE_RERANKER_URL)", code="reranker_failed")
    scores: list[float] = []
    for start in range(0, len(texts), REQUEST_TEXTS):
        batch = texts[start : start + REQUEST_TEXTS]
        try:
            if api == "tei":
                answer = _post_json(f"{url}/rerank", {"query": query, "texts": batch}, **_reranker_call())
                scores += _scores_of(answer, len(batch), score_key="score")
            else:  # Jina's and Cohere's /v1/rerank; a URL given with its /v1 is taken as it is
                body = {"query": query, "documents": batch, "top_n": len(batch)}
                if settings.KNOWLEDGE_RERANKER_MODEL:
                    body["model"] = settings.KNOWLEDGE_RERANKER_MODEL
                endpoint = f"{url}/rerank" if url.endswith("/v1") else f"{url}/v1/rerank"
                answer = _post_json(endpoint, body, **_reranker_call())
                results = answer.get("results") if isinstance(answer, dict) else None
                scores += _scores_of(results, len(batch), score_key="relevance_score")
        except EngineError as exc:
            raise EngineError(exc.message, code="reranker_failed") from None
    return scores


def _reranker_call() -> dict:
    return {
        "api_key": settings.KNOWLEDGE_RERANKER_API_KEY,
        "timeout": settings.KNOWLEDGE_RERANKER_TIMEOUT,
        "who": "the reranker",
    }


def _scores_of(results, count: int, *, score_key: str) -> list[float]:
    """[{"index", score_key}] (any order) as one score per text, in the texts' order."""
    if not isinstance(results, list) or not all(isinstance(item, dict) for item in results):
        raise EngineError(f'the reranker answered without a list of {{"index", "{score_key}"}}')
    scores: dict[int, float] = {}
    for item in results:
        index, score = item.get("index"), item.get(score_key)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count or index in scores:
            raise EngineError(f"the reranker answered index {index!r} for {count} texts")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise EngineError(f"the reranker answered {score_key} {score!r} for text {index}")
        scores[index] = float(score)
    if len(scores) != count:
        raise EngineError(f"the reranker scored {len(scores)} of {count} texts")
    return [scores[index] for index in range(count)]
