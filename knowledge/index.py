"""The two indexes behind knowledge search, and the reads that use them.

Keyword (BM25), per database backend:
- SQLite (embedded mode): an FTS5 table with external content, `knowledge_chunk_fts(text)`, rowid =
  knowledge_chunk.id, so the text is stored once, in knowledge_chunk. Kept by triggers on that
  table (insert, delete, a change of text), not by the ingestion service: Django deletes chunks
  from several paths (a document or a whole knowledge base deleted, a document ingested again),
  and a trigger sees every one of them. As in chat/search_index.py, each trigger touches only its
  table and its FTS table, and `ensure_installed` (after every `migrate`) puts back triggers that a
  table rebuild dropped. Scored with FTS5's `bm25()` (negated: higher is better). Its statistics
  (document frequencies, average length) are those of every knowledge base together; the ranking
  within one base is what search uses, and it is filtered to that base.
- PostgreSQL (scaled mode): a GIN expression index on `to_tsvector('simple', text)`, scored with
  `ts_rank_cd` (cover density: term frequency and proximity, no inverse document frequency, so
  not BM25; hybrid search fuses ranks, not scores, so the two backends rank alike). 'simple' on
  both sides: no stemming, no stop words, any language.
A query reaches either index as its words, OR-ed: on SQLite each one quoted, on PostgreSQL through
`plainto_tsquery`; nothing a person types is read as FTS syntax.

Vectors: float32 blobs in knowledge_chunk.embedding, scanned with numpy (the default Python here
cannot load SQLite extensions). A knowledge base's matrix is loaded once per process and kept while
its `chunks_version` is unchanged; the cache holds at most KNOWLEDGE_VECTOR_CACHE_BYTES, least
recently used first out. Seam for pgvector: `dense_candidates` is the one function that ranks by
vector; a pgvector column and its index would answer it in SQL where the extension exists.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, connections, transaction

MAX_QUERY_TERMS = 32

_SQLITE_TABLE = """CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_fts USING fts5(
    text, content='knowledge_chunk', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"""
_SQLITE_TRIGGERS = {
    "knowledge_chunk_fts_insert": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk
        BEGIN
            INSERT INTO knowledge_chunk_fts(rowid, text) VALUES (new.id, new.text);
        END""",
    "knowledge_chunk_fts_delete": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk
        BEGIN
            INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
    "knowledge_chunk_fts_update": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_update AFTER UPDATE OF text ON knowledge_chunk
        WHEN old.text IS NOT new.text
        BEGIN
            INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO knowledge_chunk_fts(rowid, text) VALUES (new.id, new.text);
        END""",
}
_SQLITE_FILL = (
    "INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts) VALUES ('delete-all')",
    "INSERT INTO knowledge_chunk_fts(rowid, text) SELECT id, text FROM knowledge_chunk",
)
_POSTGRESQL_INDEX = ("knowledge_chunk_text_search",
                     "ON knowledge_chunk USING gin (to_tsvector('simple'::regconfig, text))")


def install(connection) -> None:
    """Create the keyword index and fill it from the chunks stored so far (migration knowledge/0002)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            with transaction.atomic(using=connection.alias):
                for statement in (_SQLITE_TABLE, *_SQLITE_TRIGGERS.values(), *_SQLITE_FILL):
                    cursor.execute(statement)
        elif connection.vendor == "postgresql":
            name, definition = _POSTGRESQL_INDEX
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}")


def uninstall(connection) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name in _SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute("DROP TABLE IF EXISTS knowledge_chunk_fts")
        elif connection.vendor == "postgresql":
            cursor.execute(f"DROP INDEX IF EXISTS {_POSTGRESQL_INDEX[0]}")


def ensure_installed(*, using: str = "default", **kwargs) -> None:
    """After `migrate` (post_migrate): on SQLite, put back triggers a table rebuild dropped and refill
    the index, which missed whatever changed meanwhile. One query when nothing is missing."""
    db = connections[using]
    if db.vendor != "sqlite":
        return
    with db.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        present = {row[0] for row in cursor.fetchall()}
        if "knowledge_chunk" not in present or "knowledge_chunk_fts" not in present or set(_SQLITE_TRIGGERS) <= present:
            return
        with transaction.atomic(using=using):
            for statement in (*_SQLITE_TRIGGERS.values(), *_SQLITE_FILL):
                cursor.execute(statement)


# --- Keyword candidates ---------------------------------------------------------------------------

def query_terms(query: str) -> list[str]:
    """The words of a query, lower-cased, each once, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:MAX_QUERY_TERMS]


def keyword_candidates(*, knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    """[(chunk id, keyword score)], best first, of the ready documents of one knowledge base; a chunk
    matches when it holds any word of the query. Each database cuts the query into words with the
    tokenizer that cut the text (PostgreSQL's parser reads "ZX-4411" as 'zx' and '-4411', SQLite's
    as "zx" and "4411")."""
    if connection.vendor == "sqlite":
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        sql = ("SELECT c.id, -bm25(knowledge_chunk_fts) AS score FROM knowledge_chunk_fts "
               "JOIN knowledge_chunk c ON c.id = knowledge_chunk_fts.rowid "
               "JOIN knowledge_document d ON d.id = c.document_id "
               "WHERE knowledge_chunk_fts MATCH %s AND c.knowledge_base_id = %s AND d.status = 'ready' "
               "ORDER BY score DESC, c.id LIMIT %s")
        params = [match, knowledge_base_id, limit]
    else:
        # plainto_tsquery reads no operators from the text and AND-s its words; its output quotes each
        # word, and a 'simple' word holds no space, so " & " only ever joins two words: made OR here.
        tsquery = "replace(plainto_tsquery('simple'::regconfig, %s)::text, ' & ', ' | ')::tsquery"
        sql = (f"SELECT c.id, ts_rank_cd(to_tsvector('simple'::regconfig, c.text), q.query) AS score "
               f"FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id, "
               f"(SELECT {tsquery} AS query) q "
               "WHERE c.knowledge_base_id = %s AND d.status = 'ready' "
               "AND to_tsvector('simple'::regconfig, c.text) @@ q.query "
               "ORDER BY score DESC, c.id LIMIT %s")
        params = [query, knowledge_base_id, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]


# --- Vector candidates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VectorMatrix:
    chunk_ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32, unit rows

    @property
    def nbytes(self) -> int:
        return self.chunk_ids.nbytes + self.vectors.nbytes

    def scores_of(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        """Cosine similarity of the query to some chunks of the matrix (those it holds)."""
        if not len(self.chunk_ids) or not chunk_ids:
            return {}
        wanted = np.asarray(chunk_ids, dtype=np.int64)
        rows = np.searchsorted(self.chunk_ids, wanted)
        found = (rows < len(self.chunk_ids)) & (self.chunk_ids[np.minimum(rows, len(self.chunk_ids) - 1)] == wanted)
        rows, wanted = rows[found], wanted[found]
        return dict(zip(wanted.tolist(), (self.vectors[rows] @ query_vector).tolist()))


_cache: OrderedDict[int, tuple[int, VectorMatrix]] = OrderedDict()  # knowledge base id -> (chunks_version, matrix)
_cache_lock = threading.Lock()


def vector_matrix(knowledge_base_id: int, dimension: int) -> VectorMatrix:
    """The vectors of the ready documents of a knowledge base, from this process's cache while its
    `chunks_version` is unchanged. The version is read before the rows: a change committed between
    the two reads is cached under the old version, which the next search finds out of date."""
    from .models import Chunk, KnowledgeBase

    version = KnowledgeBase.objects.filter(pk=knowledge_base_id).values_list("chunks_version", flat=True).first()
    with _cache_lock:
        cached = _cache.get(knowledge_base_id)
        if cached is not None and cached[0] == version:
            _cache.move_to_end(knowledge_base_id)
            return cached[1]
    rows = list(Chunk.objects.filter(knowledge_base_id=knowledge_base_id, document__status="ready")
                .order_by("id").values_list("id", "embedding"))
    chunk_ids = np.fromiter((chunk_id for chunk_id, _ in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(bytes(blob) for _, blob in rows), dtype="<f4").reshape(len(rows), dimension)
    matrix = VectorMatrix(chunk_ids, vectors)
    with _cache_lock:
        _cache[knowledge_base_id] = (version, matrix)
        _cache.move_to_end(knowledge_base_id)
        while len(_cache) > 1 and sum(m.nbytes for _, m in _cache.values()) > settings.KNOWLEDGE_VECTOR_CACHE_BYTES:
            _cache.popitem(last=False)
        if matrix.nbytes > settings.KNOWLEDGE_VECTOR_CACHE_BYTES:
            _cache.pop(knowledge_base_id, None)  # larger than the whole cache: used once, not kept
    return matrix


def dense_candidates(matrix: VectorMatrix, query_vector: np.ndarray, *, limit: int) -> list[tuple[int, float]]:
    """[(chunk id, cosine similarity)], best first: one matrix product over the whole base."""
    if not len(matrix.chunk_ids):
        return []
    scores = matrix.vectors @ query_vector  # (N,)
    top = np.argpartition(-scores, limit - 1)[:limit] if len(scores) > limit else np.arange(len(scores))
    top = top[np.lexsort((matrix.chunk_ids[top], -scores[top]))]  # best first; ties by id
    return [(int(matrix.chunk_ids[row]), float(scores[row])) for row in top]


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
