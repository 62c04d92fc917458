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
- PostgreSQL (scaled mode): a stored generated column `text_search = to_tsvector('simple', text)`
  with a GIN index (the text is parsed once, when written), scored with
  `ts_rank_cd` (cover density: term frequency and proximity, no inverse document frequency, so
  not BM25; hybrid search fuses ranks, not scores, so the two backends rank alike). 'simple' on
  both sides: no stemming, no stop words, any language.
A query reaches either index as its words (nothing a person types is read as FTS syntax): the
chunks holding every word first, any word when fewer than the candidates wanted hold every word;
on PostgreSQL the chunks ranked are bounded (KEYWORD_POOL).

Vectors, two ways:
- numpy (SQLite, and PostgreSQL without the `vector` extension): float32 blobs in
  knowledge_chunk.embedding, scanned with one matrix product (the default Python here cannot load
  SQLite extensions). A knowledge base's matrix is loaded once per process and kept while its
  `chunks_version` is unchanged; the cache holds at most KNOWLEDGE_VECTOR_CACHE_BYTES, least
  recently used first out.
- pgvector (PostgreSQL where the `vector` extension is available): the same vectors also in a
  `vector(384)` column, knowledge_chunk.embedding_vector, with an HNSW index (cosine). The column
  exists only where the extension does, so Django's models do not describe it: `ensure_installed`
  (post_migrate) creates the extension, the column and the index, and copies the vectors of the
  chunks stored before; ingestion writes the column beside the blob (`store_vectors`). A base with
  a chunk whose column is empty (written by a process that started before the column existed) is
  scanned with numpy until the sweeper has copied it (`vectors_sweep`).
Both answer `vectors_for(...)`: `candidates()` ranks a base by cosine, `scores_of()` scores given chunks.
Every read is of the knowledge base's active generation of chunks (models.KnowledgeBase).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

from studio.sqlite_fts import Fts5Index

log = logging.getLogger("knowledge")

MAX_QUERY_TERMS = 32

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
_SQLITE_INDEX = Fts5Index(
    content_table="knowledge_chunk",
    tables={"knowledge_chunk_fts": """CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_fts USING fts5(
        text, content='knowledge_chunk', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"""},
    triggers=_SQLITE_TRIGGERS, fill=_SQLITE_FILL)
# PostgreSQL: the words of each chunk parsed once, when it is written, into a stored generated
# column, and a GIN index on it. (It began as an expression index on to_tsvector(text): every
# candidate ranked, and every row a plan filtered outside the index, parsed its text again, about
# 0.1 ms a chunk.)
_POSTGRESQL_COLUMN = ("text_search", "tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED")
_POSTGRESQL_INDEX = ("knowledge_chunk_text_search", "ON knowledge_chunk USING gin (text_search)")


def install(connection) -> None:
    """Create the keyword index and fill it from the chunks stored so far (migrations knowledge/0002,
    and 0004 on PostgreSQL: the column replaces the expression index there)."""
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.install(connection)
    elif connection.vendor == "postgresql":
        (column, column_type), (name, definition) = _POSTGRESQL_COLUMN, _POSTGRESQL_INDEX
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS {column} {column_type}")
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
            row = cursor.fetchone()
            if row and "to_tsvector" in row[0]:  # the expression index of before
                cursor.execute(f"DROP INDEX {name}")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}")


def uninstall(connection) -> None:
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.uninstall(connection)
    elif connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {_POSTGRESQL_INDEX[0]}")
            cursor.execute(f"ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS {_POSTGRESQL_COLUMN[0]}")


def ensure_installed(*, using: str = "default", **kwargs) -> None:
    """After `migrate` (post_migrate): on SQLite, put back triggers a table rebuild dropped and refill
    the index (studio/sqlite_fts.py); on PostgreSQL, the pgvector column and its index where the
    extension is available."""
    db = connections[using]
    if db.vendor == "postgresql":
        install_pgvector(db)
    elif db.vendor == "sqlite":
        _SQLITE_INDEX.repair(using)


# --- Keyword candidates ---------------------------------------------------------------------------

# Chunks ranked at most for one query, PostgreSQL. Ranking every chunk that held a query's common
# word grew with the base (1.2 s at 10,000 chunks, 12 s at 100,000, `make bench`); the pool bounds
# that work at any size (see keyword_candidates).
KEYWORD_POOL = 1000


def query_terms(query: str) -> list[str]:
    """The words of a query, lower-cased, each once, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:MAX_QUERY_TERMS]


def keyword_candidates(*, knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    """[(chunk id, keyword score)], best first, of the ready documents of one knowledge base (its
    active generation of chunks).

    Chunks holding every word of the query come first: when at least `limit` do, they are the
    candidates; otherwise a chunk matches when it holds any word. Each database cuts the query into
    words with the tokenizer that cut the text (PostgreSQL's parser reads "ZX-4411" as 'zx' and
    '-4411', SQLite's as "zx" and "4411"). On PostgreSQL at most KEYWORD_POOL matching chunks are
    ranked: with every word the first ones the index gives, with any word an equal share per word,
    so a rare word's few chunks are all ranked beside a common word's first ones."""
    if connection.vendor == "sqlite":
        return _sqlite_keywords(knowledge_base_id, query, limit)
    return _postgresql_keywords(knowledge_base_id, query, limit)


_SQLITE_KEYWORDS = (
    "SELECT c.id, -bm25(knowledge_chunk_fts) AS score FROM knowledge_chunk_fts "
    "JOIN knowledge_chunk c ON c.id = knowledge_chunk_fts.rowid "
    "JOIN knowledge_document d ON d.id = c.document_id "
    "JOIN knowledge_knowledgebase kb ON kb.id = c.knowledge_base_id "
    "WHERE knowledge_chunk_fts MATCH %s AND c.knowledge_base_id = %s AND c.generation = kb.active_generation "
    "AND d.status = 'ready' ORDER BY score DESC, c.id LIMIT %s")


def _sqlite_keywords(knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    terms = ['"' + term.replace('"', '""') + '"' for term in query_terms(query)]
    if not terms:
        return []
    # FTS5 scores every chunk that matches: holding every word is the narrower question, asked first.
    found = _fetch(_SQLITE_KEYWORDS, [" ".join(terms), knowledge_base_id, limit]) if len(terms) > 1 else []
    if len(found) < limit:
        found = _fetch(_SQLITE_KEYWORDS, [" OR ".join(terms), knowledge_base_id, limit])
    return found


# Candidates of the ready documents of one base, in its active generation.
_POSTGRESQL_SEARCHED = ("knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id "
                        "JOIN knowledge_knowledgebase kb ON kb.id = c.knowledge_base_id "
                        "WHERE c.knowledge_base_id = %(knowledge_base)s AND c.generation = kb.active_generation "
                        "AND d.status = 'ready'")
_POSTGRESQL_RANKED = """SELECT c.id, ts_rank_cd(c.text_search, %(any_word)s::tsquery) AS score
    FROM pool JOIN knowledge_chunk c ON c.id = pool.id
    ORDER BY score DESC, c.id LIMIT %(limit)s"""
_POSTGRESQL_EVERY_WORD = f"""WITH pool AS (SELECT c.id FROM {_POSTGRESQL_SEARCHED}
    AND c.text_search @@ %(every_word)s::tsquery LIMIT %(pool)s)
{_POSTGRESQL_RANKED}"""


def _postgresql_keywords(knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    # The query's words as PostgreSQL's parser cuts them; each one a quoted tsquery word, so nothing
    # is read as tsquery syntax. They reach the SQL as constants (Django's psycopg binds on the
    # client), so the planner weighs each word by its frequency: a rare word's chunks through the
    # GIN index, a common word's first ones from wherever they come cheapest.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT lexeme FROM unnest(to_tsvector('simple'::regconfig, %s)) "
                       f"LIMIT {MAX_QUERY_TERMS}", [query])
        words = ["'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for (lexeme,) in cursor.fetchall()]
    if not words:
        return []
    params = {"knowledge_base": knowledge_base_id, "limit": limit, "pool": KEYWORD_POOL,
              "every_word": " & ".join(words), "any_word": " | ".join(words)}
    found = _fetch(_POSTGRESQL_EVERY_WORD, params) if len(words) > 1 else []
    if len(found) < limit:
        # An equal share of the pool per word: a rare word's few chunks are all ranked beside a
        # common word's first ones.
        share = max(limit, KEYWORD_POOL // len(words))
        pools = " UNION ".join(f"(SELECT c.id FROM {_POSTGRESQL_SEARCHED} AND c.text_search @@ %(word{n})s::tsquery "
                               f"LIMIT {share})" for n in range(len(words)))
        found = _fetch(f"WITH pool AS ({pools})\n{_POSTGRESQL_RANKED}",
                       {**params, **{f"word{n}": word for n, word in enumerate(words)}})
    return found


def _fetch(sql: str, params) -> list[tuple[int, float]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]


# --- Vector candidates: numpy ---------------------------------------------------------------------

@dataclass(frozen=True)
class VectorMatrix:
    chunk_ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32, unit rows

    @property
    def nbytes(self) -> int:
        return self.chunk_ids.nbytes + self.vectors.nbytes

    def candidates(self, query_vector: np.ndarray, *, limit: int) -> list[tuple[int, float]]:
        """[(chunk id, cosine similarity)], best first: one matrix product over the whole base."""
        if not len(self.chunk_ids):
            return []
        scores = self.vectors @ query_vector  # (N,)
        top = np.argpartition(-scores, limit - 1)[:limit] if len(scores) > limit else np.arange(len(scores))
        top = top[np.lexsort((self.chunk_ids[top], -scores[top]))]  # best first; ties by id
        return [(int(self.chunk_ids[row]), float(scores[row])) for row in top]

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
    """The vectors of the ready documents of a knowledge base (its active generation), from this
    process's cache while its `chunks_version` is unchanged. The version is read before the rows: a
    change committed between the two reads is cached under the old version, which the next search
    finds out of date."""
    from .models import Chunk, KnowledgeBase

    version, generation = KnowledgeBase.objects.filter(pk=knowledge_base_id).values_list(
        "chunks_version", "active_generation").first() or (None, None)
    with _cache_lock:
        cached = _cache.get(knowledge_base_id)
        if cached is not None and cached[0] == version:
            _cache.move_to_end(knowledge_base_id)
            return cached[1]
    rows = list(Chunk.objects.filter(knowledge_base_id=knowledge_base_id, generation=generation,
                                     document__status="ready").order_by("id").values_list("id", "embedding"))
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


def dense_candidates(vectors, query_vector: np.ndarray, *, limit: int) -> list[tuple[int, float]]:
    """[(chunk id, cosine similarity)], best first, from a VectorMatrix or a PgVectorIndex."""
    return vectors.candidates(query_vector, limit=limit)


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


# --- Vector candidates: pgvector ------------------------------------------------------------------

PGVECTOR_DIMENSION = 384  # all-MiniLM-L6-v2; an HNSW index needs one dimension for the whole column
PGVECTOR_COLUMN = "embedding_vector"
_PGVECTOR_INDEXES = {
    # Finds the chunks still without a vector in one index probe (empty in the steady state).
    "knowledge_chunk_embedding_missing": f"ON knowledge_chunk (knowledge_base_id) WHERE {PGVECTOR_COLUMN} IS NULL",
    # Cosine distance (<=>) on unit vectors; m and ef_construction are pgvector's defaults.
    "knowledge_chunk_embedding_hnsw": f"ON knowledge_chunk USING hnsw ({PGVECTOR_COLUMN} vector_cosine_ops)",
}
# Candidates HNSW keeps while it searches (pgvector's default is 40): recall of the top 50 wanted
# here. With iterative scans (pgvector 0.8+, relaxed order), a search whose filter (one base, its
# active generation, ready documents) leaves fewer than LIMIT of those goes on through the graph
# instead of answering short; hnsw.max_scan_tuples (20,000 by default) bounds it.
HNSW_EF_SEARCH = 100
BACKFILL_BATCH = 500

_pgvector: dict[str, tuple[int, ...] | None] = {}  # database alias -> pgvector's version when in use, else None
_pgvector_lock = threading.Lock()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def pgvector_version(using: str = "default") -> tuple[int, ...] | None:
    """pgvector's version where this database's chunks have their pgvector column (and so search
    uses it), else None. Read once per process and database: enabling pgvector takes a `migrate`
    and a restart (README: Enabling pgvector)."""
    db = connections[using]
    if db.vendor != "postgresql":
        return None
    with _pgvector_lock:
        if using in _pgvector:
            return _pgvector[using]
    with db.cursor() as cursor:
        cursor.execute("SELECT e.extversion FROM pg_extension e WHERE e.extname = 'vector' AND EXISTS ("
                       "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('knowledge_chunk') "
                       "AND attname = %s AND NOT attisdropped) AND to_regclass(%s) IS NOT NULL",
                       [PGVECTOR_COLUMN, "knowledge_chunk_embedding_hnsw"])
        row = cursor.fetchone()
    version = _version(row[0]) if row else None
    with _pgvector_lock:
        _pgvector[using] = version
    return version


def pgvector_forget() -> None:
    """Read the state again at the next search (after an install, or in tests)."""
    with _pgvector_lock:
        _pgvector.clear()


def install_pgvector(db) -> bool:
    """Where PostgreSQL has the `vector` extension (0.5 or later: HNSW): create it, add the column,
    copy the vectors of the chunks stored so far, build the HNSW index. Where it is missing, or
    this database role may not create it, nothing changes and search scans with numpy. True when
    pgvector is in use."""
    with db.cursor() as cursor:
        cursor.execute("SELECT to_regclass('knowledge_chunk') IS NOT NULL, "
                       "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), "
                       "(SELECT extversion FROM pg_extension WHERE extname = 'vector')")
        table, available, installed = cursor.fetchone()
    if not table or not (available or installed):
        pgvector_forget()
        return False
    if _version(installed or available) < (0, 5):
        log.warning("knowledge: pgvector %s is too old for HNSW indexes (0.5 or later): vectors are scanned with "
                    "numpy", installed or available)
        return False
    if not installed:
        try:
            with transaction.atomic(using=db.alias), db.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except DatabaseError as exc:  # the role may not create extensions
            log.warning("knowledge: the pgvector extension is available but was not created (%s): a superuser can "
                        "run CREATE EXTENSION vector; in this database; until then vectors are scanned with numpy",
                        str(exc).strip().splitlines()[0])
            pgvector_forget()
            return False
    missing_index, hnsw_index = _PGVECTOR_INDEXES.items()
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(f"ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS {PGVECTOR_COLUMN} "
                       f"vector({PGVECTOR_DIMENSION})")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {missing_index[0]} {missing_index[1]}")  # the copy's batches
    copied = backfill_vectors(db)
    if copied:
        log.info("knowledge: copied %s chunk vectors into the pgvector column", copied)
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        # The graph is built much faster when it fits in maintenance_work_mem (~1 kB a chunk).
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {hnsw_index[0]} {hnsw_index[1]}")
    pgvector_forget()
    return pgvector_version(db.alias) is not None


def uninstall_pgvector(db) -> None:
    with db.cursor() as cursor:
        cursor.execute(f"ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS {PGVECTOR_COLUMN}")  # and its indexes
    pgvector_forget()


def _vector_literal(vector: np.ndarray) -> str:
    # pgvector's text form; repr of a float32 widened to float64 reads back as the same float32.
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def store_vectors(chunks) -> None:
    """Write the pgvector column of chunks just created (their blobs hold the same vectors); nothing
    where pgvector is not in use. Call in the transaction that created them."""
    if not chunks or pgvector_version() is None:
        return
    ids = [chunk.pk for chunk in chunks]
    literals = [_vector_literal(np.frombuffer(bytes(chunk.embedding), dtype="<f4")) for chunk in chunks]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE knowledge_chunk SET {PGVECTOR_COLUMN} = v.vector::vector "
                       "FROM unnest(%s::bigint[], %s::text[]) AS v(id, vector) WHERE knowledge_chunk.id = v.id",
                       [ids, literals])


def backfill_vectors(db=None, *, limit: int | None = None) -> int:
    """Copy the blob of chunks whose pgvector column is empty into it, in batches; how many were."""
    db = db or connection
    copied = 0
    while limit is None or copied < limit:
        with transaction.atomic(using=db.alias), db.cursor() as cursor:
            cursor.execute(f"SELECT id, embedding FROM knowledge_chunk WHERE {PGVECTOR_COLUMN} IS NULL "
                           f"AND octet_length(embedding) = %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                           [PGVECTOR_DIMENSION * 4, BACKFILL_BATCH])
            rows = cursor.fetchall()
            if not rows:
                break
            cursor.execute(f"UPDATE knowledge_chunk SET {PGVECTOR_COLUMN} = v.vector::vector "
                           "FROM unnest(%s::bigint[], %s::text[]) AS v(id, vector) WHERE knowledge_chunk.id = v.id",
                           [[chunk_id for chunk_id, _ in rows],
                            [_vector_literal(np.frombuffer(bytes(blob), dtype="<f4")) for _, blob in rows]])
        copied += len(rows)
    return copied


def vectors_sweep() -> None:
    """The sweeper's part (studio.sweeping): vectors a process wrote before pgvector was enabled
    for it get their column filled, a batch at a time (one index probe when there are none)."""
    if pgvector_version() is not None:
        backfill_vectors(limit=BACKFILL_BATCH * 4)


@dataclass(frozen=True)
class PgVectorIndex:
    """A knowledge base's vectors in PostgreSQL: ranked by the HNSW index, in SQL."""

    knowledge_base_id: int
    generation: int
    iterative_scan: bool  # pgvector 0.8+
    # Its documents that are not ready (being indexed, failed: few or none), left out by id: a
    # query on the chunks alone lets the planner weigh the HNSW index against reading a small base
    # (a join to the documents made it read the base through them and sort, whatever its size).
    not_ready: tuple[int, ...] = ()

    def params(self, query_vector: np.ndarray, limit: int) -> dict:
        return {"query": _vector_literal(query_vector), "knowledge_base": self.knowledge_base_id,
                "generation": self.generation, "not_ready": list(self.not_ready), "limit": limit}

    def candidates(self, query_vector: np.ndarray, *, limit: int) -> list[tuple[int, float]]:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, limit)}")
            if self.iterative_scan:
                cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute(self.sql(), self.params(query_vector, limit))
            rows = cursor.fetchall()
        # Relaxed order: nearly sorted by distance; sorted here, ties by id.
        return sorted(((chunk_id, 1.0 - float(distance)) for chunk_id, distance in rows), key=lambda r: (-r[1], r[0]))

    @staticmethod
    def sql() -> str:
        return (f"SELECT c.id, c.{PGVECTOR_COLUMN} <=> %(query)s::vector AS distance FROM knowledge_chunk c "
                "WHERE c.knowledge_base_id = %(knowledge_base)s AND c.generation = %(generation)s "
                f"AND c.document_id <> ALL(%(not_ready)s::bigint[]) "
                f"ORDER BY c.{PGVECTOR_COLUMN} <=> %(query)s::vector LIMIT %(limit)s")

    def scores_of(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        if not chunk_ids:
            return {}
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, 1 - ({PGVECTOR_COLUMN} <=> %s::vector) FROM knowledge_chunk "
                           f"WHERE id = ANY(%s) AND {PGVECTOR_COLUMN} IS NOT NULL",
                           [_vector_literal(query_vector), list(chunk_ids)])
            return {chunk_id: float(score) for chunk_id, score in cursor.fetchall()}


def vectors_for(knowledge_base_id: int, dimension: int):
    """What ranks a knowledge base by vector: its pgvector index where pgvector is in use and every
    chunk of its active generation has its vector there, else its numpy matrix."""
    version = pgvector_version()
    if version is not None and dimension == PGVECTOR_DIMENSION:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT kb.active_generation, EXISTS (SELECT 1 FROM knowledge_chunk c WHERE "
                           f"c.knowledge_base_id = kb.id AND c.{PGVECTOR_COLUMN} IS NULL "
                           "AND c.generation = kb.active_generation), ARRAY(SELECT d.id FROM knowledge_document d "
                           "WHERE d.knowledge_base_id = kb.id AND d.status <> 'ready') "
                           "FROM knowledge_knowledgebase kb WHERE kb.id = %s", [knowledge_base_id])
            row = cursor.fetchone()
        if row is not None and not row[1]:
            return PgVectorIndex(knowledge_base_id, row[0], iterative_scan=version >= (0, 8), not_ready=tuple(row[2]))
    return vector_matrix(knowledge_base_id, dimension)
