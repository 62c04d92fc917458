"""An in-memory twin of a knowledge base's index, for the tuning sweep (knowledge/sweep.py): the
base's ready documents cut with one chunk setting, embedded with the base's embedder, indexed by
keyword and by vector, and searched as knowledge/search.py searches the base itself, so a setting
can be measured without a rebuild.

- Its passages come either from the base's own index (`MemoryIndex.of_base`: the stored chunks and
  vectors of its active generation, nothing embedded) or from its documents read again from
  storage, parsed, titled and cut as ingestion does them, and embedded on this job worker
  (`MemoryIndex.cut`).
- Keywords: the base's own passages are ranked by the base's own keyword index (the database's);
  passages cut again, by an SQLite FTS5 table in memory with the index's tokenizer, columns and
  weights (keyword_index.SQLITE_FTS_*, HEADING_WEIGHT), asked the same way (every word first, then
  any word). Its BM25 statistics are those of this base alone, where the studio's table holds every
  base's (on a studio with one base the two rank alike), and a studio on PostgreSQL ranks keywords
  with ts_rank_cd: the twin of another chunk setting still ranks as SQLite does.
- Vectors: a numpy matrix (vectors.VectorMatrix, the ranking the studio's numpy path uses).
- Ranking: the top CANDIDATES of each fused (ranking.fuse), the fused top reranked when asked
  (engines.rerank; when it fails the order stays, with a note), near duplicates collapsed
  (ranking.collapse), each step as search.search does it.

A search is split in two: `candidates` (the keyword and vector candidates of a query, which no
ranking setting changes) and `rank` (one ranking setting over them), so a sweep asks the index once
per question and ranks many times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from . import engines, storage
from .chunking import Chunker, document_title
from .keyword_index import HEADING_WEIGHT, SQLITE_FTS_COLUMNS, SQLITE_FTS_TOKENIZE, keyword_candidates, query_terms
from .models import Chunk, Document, KnowledgeBase
from .parsing import DocumentError, Limits, parse
from .ranking import collapse, fuse
from .search import CANDIDATES, RERANK_CANDIDATES
from .vectors import VectorMatrix

EMBED_BATCH = 32  # passages embedded at a time, as ingestion does: progress and a cancel between batches


@dataclass(frozen=True)
class MemoryPassage:
    chunk_id: int  # the stored chunk's id (of_base), else its place in the twin, from 1
    text: str
    document: str  # its document's name
    document_id: int
    page: int | None
    heading: str  # the heading trail, indexed beside the text


@dataclass(frozen=True)
class MemoryHit:
    """One result, with what retrieval_tests.passage_matches reads of a search hit."""

    rank: int  # from 1
    chunk_id: int
    text: str
    document: str
    document_id: int
    page: int | None
    heading: str
    # Near duplicates ranked below it, as search.Hit lists them: [{"chunk", "document", "document_id", "page", "heading"}]
    also_in: list = field(default_factory=list)


@dataclass(frozen=True)
class Candidates:
    """A query's candidates, before any ranking setting: what search.search reads from the index."""

    query: str
    keyword: list[tuple[int, float]]  # [(chunk id, keyword score)], best first
    vector: list[tuple[int, float]]  # [(chunk id, cosine)], best first
    vector_scores: dict[int, float]  # the cosine of every candidate, keyword ones too (fusion's tie-break)


class MemoryIndex:
    def __init__(
        self,
        passages: list[MemoryPassage],
        vectors: np.ndarray,
        *,
        keywords: Callable[[str, int], list[tuple[int, float]]] | None = None,
    ):
        """`passages` in ascending chunk id, `vectors` (N, D) unit rows in the same order; `keywords`
        (query, limit) → [(chunk id, score)] ranks them by keyword where that is given (the base's own
        index, for its own passages), else an FTS5 table in memory does."""
        self.passages = {passage.chunk_id: passage for passage in passages}
        ids = np.fromiter((passage.chunk_id for passage in passages), dtype=np.int64, count=len(passages))
        self.matrix = VectorMatrix(ids, np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(passages), -1))
        self.keyword_source = keywords
        self.keywords = None
        if keywords is None:
            # Read by this job's thread only; check_same_thread off so a test may build it in one and search in another.
            self.keywords = sqlite3.connect(":memory:", check_same_thread=False)
            self.keywords.execute(
                f"CREATE VIRTUAL TABLE passages USING fts5({SQLITE_FTS_COLUMNS}, tokenize='{SQLITE_FTS_TOKENIZE}')"
            )
            self.keywords.executemany(
                "INSERT INTO passages(rowid, heading, text) VALUES (?, ?, ?)",
                [(passage.chunk_id, passage.heading, passage.text) for passage in passages],
            )

    def __len__(self) -> int:
        return len(self.passages)

    def close(self) -> None:
        if self.keywords is not None:
            self.keywords.close()

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def of_base(cls, knowledge_base: KnowledgeBase) -> MemoryIndex:
        """The base's index as it is: the chunks and vectors of its active generation (ready
        documents), ranked by keyword by the base's own keyword index (the database's, with its
        statistics and, on PostgreSQL, its ranking), so its figures are the test page's."""
        rows = list(
            Chunk.objects.active()
            .filter(knowledge_base=knowledge_base, document__status=Document.Status.READY)
            .order_by("pk")
            .values_list("pk", "text", "document__name", "document_id", "page", "heading", "embedding")
        )
        passages = [MemoryPassage(*row[:6]) for row in rows]
        vectors = np.frombuffer(b"".join(bytes(row[6]) for row in rows), dtype="<f4")
        return cls(
            passages,
            vectors.reshape(len(rows), knowledge_base.dimension),
            keywords=lambda query, limit: keyword_candidates(
                knowledge_base_id=knowledge_base.pk, query=query, limit=limit
            ),
        )

    @classmethod
    def cut(
        cls,
        knowledge_base: KnowledgeBase,
        *,
        chunk_tokens: int,
        chunk_overlap: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> MemoryIndex:
        """The base's ready documents cut with (chunk_tokens, chunk_overlap) and embedded with its
        embedder, as ingestion would index them (torch: job workers only). `progress(stage, done,
        total)` is called per document read ("reading"), per PDF page and every 100,000 XML elements
        of a .docx while one is parsed ("parsing": as ingestion beats its heart there; 0, 0 for the
        latter) and before each batch is embedded and at the end ("embedding"); it may raise to stop. Raises what ingestion
        would (DocumentError, engines.EngineError)."""
        chunker = Chunker(capacity=chunk_tokens, overlap=chunk_overlap)
        report = progress or (lambda stage, done, total: None)
        documents = list(
            knowledge_base.documents.filter(status=Document.Status.READY)
            .order_by("pk")
            .values_list("pk", "name", "kind", "file")
        )
        passages: list[MemoryPassage] = []
        texts: list[str] = []  # what is embedded: the heading trail and the text (Piece.embedding_text)
        for done, (document_id, name, kind, path) in enumerate(documents, start=1):
            try:
                raw = storage.read(path)
            except FileNotFoundError:
                raise DocumentError(
                    f"{name}: its file is gone from the studio's storage (KNOWLEDGE_FILES_DIR): upload it again",
                    code="file_missing",
                ) from None
            parsed = parse(
                raw,
                kind=kind,
                limits=Limits(max_pages=settings.KNOWLEDGE_MAX_PAGES),
                progress=lambda page, pages: report("parsing", page, pages),
                heartbeat=lambda: report("parsing", 0, 0),
            )
            del raw  # the file's bytes: not held while the rest is read
            plain_text = kind == "text"  # as ingestion titles and cuts a document
            title = document_title(name, parsed.sections[0].text if parsed.sections else "", plain_text=plain_text)
            for piece in chunker.split(parsed.sections, plain_text=plain_text, title=title):
                passages.append(
                    MemoryPassage(len(passages) + 1, piece.text, name, document_id, piece.page, piece.heading)
                )
                texts.append(piece.embedding_text or piece.text)
            report("reading", done, len(documents))
        rows = []
        for start in range(0, len(texts), EMBED_BATCH):
            report("embedding", start, len(texts))  # before each batch: the caller may wait (chat first) or stop
            rows.append(
                engines.embed_passages(
                    knowledge_base.embedding_model,
                    texts[start : start + EMBED_BATCH],
                    dimension=knowledge_base.dimension,
                )
            )  # (B, D)
        report("embedding", len(texts), len(texts))
        vectors = np.concatenate(rows) if rows else np.zeros((0, knowledge_base.dimension), dtype="<f4")
        return cls(passages, vectors)

    # --- searching --------------------------------------------------------------------------------

    def candidates(self, query: str, query_vector: np.ndarray) -> Candidates:
        """The keyword and vector candidates of a query (its vector by the base's embedder,
        engines.embed_query), as search.search reads them from the base's index."""
        if self.keyword_source is not None:  # a chunk stored since the twin was read is left out
            keyword = [row for row in self.keyword_source(query, CANDIDATES) if row[0] in self.passages]
        else:
            keyword = self._keywords(query, CANDIDATES)
        vector = self.matrix.candidates(query_vector, limit=CANDIDATES)
        vector_scores = dict(vector)
        vector_scores.update(self.matrix.scores_of([c for c, _ in keyword if c not in vector_scores], query_vector))
        return Candidates(query, keyword, vector, vector_scores)

    def _keywords(self, query: str, limit: int) -> list[tuple[int, float]]:
        """keyword_index._sqlite_keywords over the twin's table: the passages holding every word
        first; any word when fewer than `limit` hold every word."""
        terms = ['"' + term.replace('"', '""') + '"' for term in query_terms(query)]
        if not terms:
            return []
        found = self._fetch(" ".join(terms), limit) if len(terms) > 1 else []
        if len(found) < limit:
            found = self._fetch(" OR ".join(terms), limit)
        return found

    def _fetch(self, match: str, limit: int) -> list[tuple[int, float]]:
        rows = self.keywords.execute(
            f"SELECT rowid, -bm25(passages, {HEADING_WEIGHT}, 1.0) AS score FROM passages "
            "WHERE passages MATCH ? ORDER BY score DESC, rowid LIMIT ?",
            (match, limit),
        )
        return [(chunk_id, float(score)) for chunk_id, score in rows]

    def rank(
        self, found: Candidates, *, k: int, fusion_weight: float, collapse_duplicates: bool, rerank: bool
    ) -> tuple[list[MemoryHit], list[str]]:
        """The top k for one ranking setting, and notes on what did not run as asked (a reranker
        that failed). search.search's hybrid path: fusion_weight 0 ranks by keywords alone, 1 by
        vectors alone."""
        notes: list[str] = []
        fused = fuse(found.keyword, found.vector, fusion_weight)
        scores = found.vector_scores
        ranked = sorted(fused, key=lambda c: (-fused[c], -scores.get(c, -2.0), c))
        # As search: the candidates that may reach the top k (all of them when collapsing).
        depth = len(ranked) if collapse_duplicates else max(k, RERANK_CANDIDATES if rerank else k)
        ranked = ranked[:depth]
        if rerank:
            ranked = self._reranked(found.query, ranked, notes)
        if collapse_duplicates:
            groups = collapse(ranked, lambda chunk_id: self.passages[chunk_id].text, wanted=k)
        else:
            groups = [(chunk_id, []) for chunk_id in ranked[:k]]
        return [self._hit(rank, chunk_id, also) for rank, (chunk_id, also) in enumerate(groups, start=1)], notes

    def search(
        self,
        query: str,
        query_vector: np.ndarray,
        *,
        k: int,
        fusion_weight: float,
        collapse_duplicates: bool,
        rerank: bool,
    ) -> list[MemoryHit]:
        hits, _ = self.rank(
            self.candidates(query, query_vector),
            k=k,
            fusion_weight=fusion_weight,
            collapse_duplicates=collapse_duplicates,
            rerank=rerank,
        )
        return hits

    def _reranked(self, query: str, ranked: list[int], notes: list[str]) -> list[int]:
        """search._reranked: the top RERANK_CANDIDATES in the reranker's order, the rest after them;
        the order kept, with a note, when no reranker is configured or it fails."""
        if not engines.reranker_configured():
            notes.append("not reranked: no reranker is configured (KNOWLEDGE_RERANKER_URL)")
            return ranked
        head, tail = ranked[:RERANK_CANDIDATES], ranked[RERANK_CANDIDATES:]
        if not head:
            return ranked
        try:
            scores = engines.rerank(query, [self.passages[chunk_id].text for chunk_id in head])
        except engines.EngineError as exc:
            notes.append(f"not reranked: {exc.message}")
            return ranked
        order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
        return [head[i] for i in order] + tail

    def _hit(self, rank: int, chunk_id: int, also: list[int]) -> MemoryHit:
        passage = self.passages[chunk_id]
        return MemoryHit(
            rank=rank,
            chunk_id=chunk_id,
            text=passage.text,
            document=passage.document,
            document_id=passage.document_id,
            page=passage.page,
            heading=passage.heading,
            also_in=[
                {
                    "chunk": other,
                    "document": self.passages[other].document,
                    "document_id": self.passages[other].document_id,
                    "page": self.passages[other].page,
                    "heading": self.passages[other].heading,
                }
                for other in also
            ],
        )
