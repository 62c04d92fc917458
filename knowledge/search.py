"""Searching a knowledge base: keyword (BM25), dense (cosine of all-MiniLM-L6-v2 vectors), or
hybrid, the default: the top CANDIDATES of each fused by weighted reciprocal rank fusion
(knowledge/ranking.py; the base's `fusion_weight` is the vector ranking's share), so a rare exact
code found only by keywords and a paraphrase found only by meaning both reach the top. Then, as the
base is set: the fused top RERANK_CANDIDATES reordered by an external reranker (engines.rerank;
when it fails the order stays, with a note), and near-duplicate passages collapsed into the best of
them, the others listed under it (`also_in`), so copies of one document do not fill the top k.

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

from .engines import EngineError, QueryEmbeddingUnavailable, embed_query, reranker_configured
from .engines import rerank as engine_rerank
from .expansion import Expansion, expand
from .keyword_index import keyword_candidates
from .models import Chunk, KnowledgeBase
from .ranking import RRF_K, collapse, fuse
from .vectors import dense_candidates, vectors_for

MODES = ("hybrid", "bm25", "dense")
DEFAULT_K, MAX_K = 5, 50
CANDIDATES = 50  # from each retriever, before fusion
RERANK_CANDIDATES = 20  # the fused top sent to the reranker
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
    rerank_score: float | None = None  # when the reranker ordered it
    # Near duplicates ranked below it (a copy of its document, an overlapping chunk), shown once:
    # [{"chunk", "document", "document_id", "page", "heading"}]
    also_in: list = field(default_factory=list)

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
            "rerank_score": _round(self.rerank_score),
            "also_in": self.also_in,
        }


@dataclass
class SearchAnswer:
    hits: list[Hit]
    mode: str
    k: int
    clamped: dict = field(default_factory=dict)  # {"k": {"asked": 10**9, "used": 50}} when a value was clamped
    notes: list[str] = field(default_factory=list)  # what did not run as asked, and why (a reranker down)
    ranking: dict = field(default_factory=dict)  # the ranking settings used
    expansion: Expansion | None = None  # the question's rewrites, when the ranking expands it


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def ranking_of(knowledge_base: KnowledgeBase, **overrides) -> dict:
    """The base's ranking settings, with the overrides that are not None (a sweep's, a request's)."""
    ranking = {
        "fusion_weight": knowledge_base.fusion_weight,
        "collapse_duplicates": knowledge_base.collapse_duplicates,
        "rerank": knowledge_base.rerank,
        "expand_query": knowledge_base.expand_query,
    }
    ranking.update({name: value for name, value in overrides.items() if name in ranking and value is not None})
    return ranking


def search(
    *,
    user,
    knowledge_base: KnowledgeBase,
    query: str,
    k: int = DEFAULT_K,
    mode: str = "hybrid",
    min_score: float | None = None,
    fusion_weight: float | None = None,
    collapse_duplicates: bool | None = None,
    rerank: bool | None = None,
    expand_query: bool | None = None,
) -> SearchAnswer:
    """The top k chunks of a knowledge base for a query; NotFound unless the user may see the base.
    The ranking settings are the base's (models.KnowledgeBase) unless given."""
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
    ranking = ranking_of(
        knowledge_base,
        fusion_weight=fusion_weight,
        collapse_duplicates=collapse_duplicates,
        rerank=rerank,
        expand_query=expand_query,
    )
    notes: list[str] = []

    keyword, vector, vectors, query_vector = [], [], None, None
    if mode in ("dense", "hybrid"):
        try:
            vectors, query_vector = _query_vector_and_vectors(knowledge_base, query)
        except QueryEmbeddingUnavailable as exc:
            notes.append(f"searched by keywords only: {exc.message}")
            mode = "bm25"
        else:
            vector = dense_candidates(vectors, query_vector, limit=CANDIDATES)
    if mode in ("bm25", "hybrid"):
        keyword = keyword_candidates(knowledge_base_id=knowledge_base.pk, query=query, limit=CANDIDATES)

    keyword_scores, vector_scores = dict(keyword), dict(vector)
    if mode == "bm25":
        ranked = [(chunk_id, score, None) for chunk_id, score in keyword]
    elif mode == "dense":
        ranked = [(chunk_id, score, None) for chunk_id, score in vector]
    else:
        fused = fuse(keyword, vector, ranking["fusion_weight"])
        # Every keyword candidate gets its vector score too: one row of the matrix (or pgvector) each.
        vector_scores.update(vectors.scores_of([c for c in keyword_scores if c not in vector_scores], query_vector))
        order = sorted(fused, key=lambda c: (-fused[c], -vector_scores.get(c, -2.0), c))
        ranked = [(chunk_id, fused[chunk_id], fused[chunk_id]) for chunk_id in order]
    expansion = None
    if ranking["expand_query"]:
        expansion = expand(query, user=user)
        if expansion.note:
            notes.append(expansion.note)
        elif expansion.rewrites:
            ranked = _with_rewrites(knowledge_base, mode, ranking, ranked, expansion.rewrites, vectors)
    if min_score is not None:
        ranked = [row for row in ranked if row[1] >= min_score]

    # The texts of every candidate that may reach the top k: reranking and collapsing read them.
    depth = len(ranked) if ranking["collapse_duplicates"] else max(k, RERANK_CANDIDATES if ranking["rerank"] else k)
    chunks = Chunk.objects.filter(pk__in=[chunk_id for chunk_id, _, _ in ranked[:depth]]).select_related("document")
    by_id = {chunk.pk: chunk for chunk in chunks}
    ranked = [row for row in ranked[:depth] if row[0] in by_id]  # one deleted since the candidates were read

    rerank_scores: dict[int, float] = {}
    if ranking["rerank"]:
        ranked, rerank_scores = _reranked(query, ranked, by_id, notes)
    if ranking["collapse_duplicates"]:
        groups = collapse([row[0] for row in ranked], lambda chunk_id: by_id[chunk_id].text, wanted=k)
    else:
        groups = [(row[0], []) for row in ranked[:k]]

    scores = {chunk_id: (score, fused_score) for chunk_id, score, fused_score in ranked}
    hits = []
    for chunk_id, duplicates in groups:
        chunk = by_id[chunk_id]
        score, fused_score = scores[chunk_id]
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
                rerank_score=rerank_scores.get(chunk_id),
                also_in=[_also_in(by_id[other]) for other in duplicates],
            )
        )
    return SearchAnswer(hits=hits, mode=mode, k=k, clamped=clamped, notes=notes, ranking=ranking, expansion=expansion)


def _with_rewrites(knowledge_base, mode: str, ranking: dict, ranked: list, rewrites: list[str], vectors) -> list:
    """The question's ranking fused with each rewrite's (reciprocal rank fusion over the rankings,
    the question's counted twice: it is what the person asked). Scores are the fused ones."""
    rankings = [([row[0] for row in ranked], 2.0)]
    for rewrite in rewrites:
        keyword = (
            keyword_candidates(knowledge_base_id=knowledge_base.pk, query=rewrite, limit=CANDIDATES)
            if mode != "dense"
            else []
        )
        vector = []
        if mode != "bm25" and vectors is not None:
            try:
                vector = dense_candidates(
                    vectors, _query_vector_and_vectors(knowledge_base, rewrite)[1], limit=CANDIDATES
                )
            except QueryEmbeddingUnavailable:
                pass
        weight = {"bm25": 0.0, "dense": 1.0}.get(mode, ranking["fusion_weight"])
        fused = fuse(keyword, vector, weight)
        rankings.append((sorted(fused, key=lambda c: (-fused[c], c)), 1.0))
    combined: dict[int, float] = {}
    for order, share in rankings:
        for rank, chunk_id in enumerate(order, start=1):
            combined[chunk_id] = combined.get(chunk_id, 0.0) + share / (RRF_K + rank)
    return [(c, combined[c], combined[c]) for c in sorted(combined, key=lambda c: (-combined[c], c))]


def _also_in(chunk: Chunk) -> dict:
    return {
        "chunk": chunk.pk,
        "document": chunk.document.name,
        "document_id": chunk.document_id,
        "page": chunk.page,
        "heading": chunk.heading,
    }


def _reranked(query: str, ranked: list, by_id: dict, notes: list[str]) -> tuple[list, dict[int, float]]:
    """The fused top RERANK_CANDIDATES in the reranker's order, the rest after them as they were.
    A reranker that is not configured, times out or answers wrongly leaves the order as it was,
    with a note saying why."""
    if not reranker_configured():
        notes.append("not reranked: no reranker is configured (KNOWLEDGE_RERANKER_URL)")
        return ranked, {}
    head, tail = ranked[:RERANK_CANDIDATES], ranked[RERANK_CANDIDATES:]
    if not head:
        return ranked, {}
    try:
        scores = engine_rerank(query, [by_id[chunk_id].text for chunk_id, _, _ in head])
    except EngineError as exc:
        notes.append(f"not reranked: {exc.message}")
        return ranked, {}
    order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
    return [head[i] for i in order] + tail, {head[i][0]: scores[i] for i in range(len(head))}


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
