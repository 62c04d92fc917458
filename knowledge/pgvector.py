"""pgvector, where PostgreSQL has the `vector` extension: the chunks' vectors also in a
`vector(384)` column, knowledge_chunk.embedding_vector, with an HNSW index (cosine), and the search
that ranks through it (PgVectorIndex). The column exists only where the extension does, so Django's
models do not describe it: `ensure_installed` (post_migrate) creates the extension, the column and
the index, and copies the vectors of the chunks stored before; ingestion writes the column beside
the blob (`store_vectors`). A base with a chunk whose column is empty (written by a process that
started before the column existed) is scanned with numpy (knowledge/vectors.py) until the sweeper
has copied it (`vectors_sweep`).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

import numpy as np
from django.db import DatabaseError, connection, connections, transaction

log = logging.getLogger("knowledge")

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
        cursor.execute(
            "SELECT e.extversion FROM pg_extension e WHERE e.extname = 'vector' AND EXISTS ("
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('knowledge_chunk') "
            "AND attname = %s AND NOT attisdropped) AND to_regclass(%s) IS NOT NULL",
            [PGVECTOR_COLUMN, "knowledge_chunk_embedding_hnsw"],
        )
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
        cursor.execute(
            "SELECT to_regclass('knowledge_chunk') IS NOT NULL, "
            "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        )
        table, available, installed = cursor.fetchone()
    if not table or not (available or installed):
        pgvector_forget()
        return False
    if _version(installed or available) < (0, 5):
        log.warning(
            "knowledge: pgvector %s is too old for HNSW indexes (0.5 or later): vectors are scanned with numpy",
            installed or available,
        )
        return False
    if not installed:
        try:
            with transaction.atomic(using=db.alias), db.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except DatabaseError as exc:  # the role may not create extensions
            log.warning(
                "knowledge: the pgvector extension is available but was not created (%s): a superuser can "
                "run CREATE EXTENSION vector; in this database; until then vectors are scanned with numpy",
                str(exc).strip().splitlines()[0],
            )
            pgvector_forget()
            return False
    missing_index, hnsw_index = _PGVECTOR_INDEXES.items()
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS {PGVECTOR_COLUMN} vector({PGVECTOR_DIMENSION})"
        )
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
    # The column holds 384 numbers (an HNSW index takes one dimension): a base embedded by an engine
    # of another dimension keeps its vectors in the blobs only, and is scanned with numpy (vectors.py).
    chunks = [chunk for chunk in chunks if len(chunk.embedding) == PGVECTOR_DIMENSION * 4]
    if not chunks or pgvector_version() is None:
        return
    ids = [chunk.pk for chunk in chunks]
    literals = [_vector_literal(np.frombuffer(bytes(chunk.embedding), dtype="<f4")) for chunk in chunks]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE knowledge_chunk SET {PGVECTOR_COLUMN} = v.vector::vector "
            "FROM unnest(%s::bigint[], %s::text[]) AS v(id, vector) WHERE knowledge_chunk.id = v.id",
            [ids, literals],
        )


def backfill_vectors(db=None, *, limit: int | None = None) -> int:
    """Copy the blob of chunks whose pgvector column is empty into it, in batches; how many were."""
    db = db or connection
    copied = 0
    while limit is None or copied < limit:
        with transaction.atomic(using=db.alias), db.cursor() as cursor:
            cursor.execute(
                f"SELECT id, embedding FROM knowledge_chunk WHERE {PGVECTOR_COLUMN} IS NULL "
                f"AND octet_length(embedding) = %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                [PGVECTOR_DIMENSION * 4, BACKFILL_BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            cursor.execute(
                f"UPDATE knowledge_chunk SET {PGVECTOR_COLUMN} = v.vector::vector "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, vector) WHERE knowledge_chunk.id = v.id",
                [
                    [chunk_id for chunk_id, _ in rows],
                    [_vector_literal(np.frombuffer(bytes(blob), dtype="<f4")) for _, blob in rows],
                ],
            )
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
        return {
            "query": _vector_literal(query_vector),
            "knowledge_base": self.knowledge_base_id,
            "generation": self.generation,
            "not_ready": list(self.not_ready),
            "limit": limit,
        }

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
        return (
            f"SELECT c.id, c.{PGVECTOR_COLUMN} <=> %(query)s::vector AS distance FROM knowledge_chunk c "
            "WHERE c.knowledge_base_id = %(knowledge_base)s AND c.generation = %(generation)s "
            f"AND c.document_id <> ALL(%(not_ready)s::bigint[]) "
            f"ORDER BY c.{PGVECTOR_COLUMN} <=> %(query)s::vector LIMIT %(limit)s"
        )

    def scores_of(self, chunk_ids: list[int], query_vector: np.ndarray) -> dict[int, float]:
        if not chunk_ids:
            return {}
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, 1 - ({PGVECTOR_COLUMN} <=> %s::vector) FROM knowledge_chunk "
                f"WHERE id = ANY(%s) AND {PGVECTOR_COLUMN} IS NOT NULL",
                [_vector_literal(query_vector), list(chunk_ids)],
            )
            return {chunk_id: float(score) for chunk_id, score in cursor.fetchall()}


def ensure_installed(*, using: str = "default", **kwargs) -> None:
    """After `migrate` (post_migrate), on PostgreSQL: the pgvector column and its index where the
    extension is available."""
    db = connections[using]
    if db.vendor == "postgresql":
        install_pgvector(db)
