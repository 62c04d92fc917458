"""Searching a knowledge base: keyword (BM25), dense (cosine of all-MiniLM-L6-v2 vectors), or
hybrid, the default: the top CANDIDATES of each fused by reciprocal rank fusion (Cormack et al.,
2009: score = Σ 1 / (RRF_K + rank), k = 60), so a rare exact code found only by keywords and a
paraphrase found only by meaning both reach the top.

Keywords are ranked by the database's full-text index (knowledge/keyword_index.py); vectors by
pgvector's HNSW index where PostgreSQL has the extension, else by numpy (knowledge/vectors.py,
knowledge/pgvector.py). The query is embedded in the calling process with the torch-free twin of
the embedder (studio/llm/numpy_embedder.py): the web process holds no model code. Only ready documents are
searched. `score` is the mode's own: the keyword score (bm25), the cosine similarity (dense) or the
fused score (hybrid); `min_score` is compared with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from studio.errors import NotFound, StudioError

from .engines import embed_query
from .keyword_index import keyword_candidates
from .models import Chunk, KnowledgeBase
from .vectors import dense_candidates, vectors_for

MODES = ("hybrid", "bm25", "dense")
DEFAULT_K, MAX_K = 5, 50
CANDIDATES = 50  # from each retriever, before fusion
RRF_K = 60
MAX_QUERY_CHARS = 2000  # about 400 words; the embedder reads the first 256 tokens of a query anyway


class SearchError(StudioError):
    pass


@dataclass(frozen=True)
class Hit:
    rank: int  # from 1
    chunk_id: int
    text: str
    document_id: int
    document: str  # its name
    page: int | None
    heading: str
    score: float  # the mode's score: keyword, vector or fused
    keyword_score: float | None  # None: not among the keyword candidates
    vector_score: float | None  # None in bm25 mode
    fused_score: float | None  # hybrid only

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "chunk": self.chunk_id,
            "text": self.text,
            "document": self.document,
            "document_id": self.document_id,
            "page": self.page,
            "heading": self.heading,
            "score": _round(self.score),
            "keyword_score": _round(self.keyword_score),
            "vector_score": _round(self.vector_score),
            "fused_score": _round(self.fused_score),
        }


@dataclass
class SearchAnswer:
    hits: list[Hit]
    mode: str
    k: int
    clamped: dict = field(default_factory=dict)  # {"k": {"asked": 10**9, "used": 50}} when a value was clamped


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def search(
    *,
    user,
    knowledge_base: KnowledgeBase,
    query: str,
    k: int = DEFAULT_K,
    mode: str = "hybrid",
    min_score: float | None = None,
) -> SearchAnswer:
    """The top k chunks of a knowledge base for a query; NotFound unless the user may see the base."""
    if not knowledge_base.visible_to(user):
        raise NotFound("There is no such knowledge base, or it is not shared with you.")
    if mode not in MODES:
        raise SearchError(f"must be one of {', '.join(MODES)}", "mode")
    if not isinstance(query, str) or not query.strip():
        raise SearchError("must be some text", "query")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(
            f"is {len(query):,} characters long; at most {MAX_QUERY_CHARS:,} (ask in fewer words)", "query"
        )
    clamped = {}
    if not 1 <= k <= MAX_K:
        clamped["k"] = {"asked": k, "used": min(max(k, 1), MAX_K)}
        k = clamped["k"]["used"]

    keyword, vector, vectors, query_vector = [], [], None, None
    if mode in ("bm25", "hybrid"):
        keyword = keyword_candidates(knowledge_base_id=knowledge_base.pk, query=query, limit=CANDIDATES)
    if mode in ("dense", "hybrid"):
        vectors, query_vector = _query_vector_and_vectors(knowledge_base, query)
        vector = dense_candidates(vectors, query_vector, limit=CANDIDATES)

    keyword_scores, vector_scores = dict(keyword), dict(vector)
    if mode == "bm25":
        ranked = [(chunk_id, score, None) for chunk_id, score in keyword]
    elif mode == "dense":
        ranked = [(chunk_id, score, None) for chunk_id, score in vector]
    else:
        fused = {}
        for candidates in (keyword, vector):
            for rank, (chunk_id, _) in enumerate(candidates, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
        # Every keyword candidate gets its vector score too: one row of the matrix (or pgvector) each.
        vector_scores.update(vectors.scores_of([c for c in keyword_scores if c not in vector_scores], query_vector))
        order = sorted(fused, key=lambda c: (-fused[c], -vector_scores.get(c, -2.0), c))
        ranked = [(chunk_id, fused[chunk_id], fused[chunk_id]) for chunk_id in order]
    if min_score is not None:
        ranked = [row for row in ranked if row[1] >= min_score]
    ranked = ranked[:k]

    chunks = Chunk.objects.filter(pk__in=[chunk_id for chunk_id, _, _ in ranked]).select_related("document")
    by_id = {chunk.pk: chunk for chunk in chunks}
    hits = []
    for chunk_id, score, fused_score in ranked:
        chunk = by_id.get(chunk_id)
        if chunk is None:  # deleted since the candidates were read
            continue
        hits.append(
            Hit(
                rank=len(hits) + 1,
                chunk_id=chunk_id,
                text=chunk.text,
                document_id=chunk.document_id,
                document=chunk.document.name,
                page=chunk.page,
                heading=chunk.heading,
                score=score,
                keyword_score=keyword_scores.get(chunk_id),
                vector_score=vector_scores.get(chunk_id) if mode != "bm25" else None,
                fused_score=fused_score,
            )
        )
    return SearchAnswer(hits=hits, mode=mode, k=k, clamped=clamped)


def _query_vector_and_vectors(knowledge_base: KnowledgeBase, query: str):
    """The query's vector by the base's own embedder (the bundled model, or an engine of
    KNOWLEDGE_EMBEDDING_ENGINES), and what ranks the base's vectors. Raises
    engines.QueryEmbeddingUnavailable (`reason`: a sentence for people) when the engine fails or the
    settings no longer have it: the dense part cannot run, the keywords still can."""
    query_vector = _query_vector(knowledge_base.embedding_model, knowledge_base.dimension, query)
    return vectors_for(knowledge_base.pk, knowledge_base.dimension), query_vector


@lru_cache(maxsize=256)
def _query_vector(embedding_model: str, dimension: int, query: str):
    """The query's vector (D,), read-only. Cached (a failure is not): a chat with several bases
    attached, and an evaluation asking the same question per version, embed it once."""
    vector = embed_query(embedding_model, query, dimension=dimension)
    vector.flags.writeable = False
    return vector
