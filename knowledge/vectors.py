"""The vectors behind knowledge search, and what ranks a knowledge base by them.

- numpy (SQLite, and PostgreSQL without the `vector` extension): float32 blobs in
  knowledge_chunk.embedding, scanned with one matrix product (the default Python here cannot load
  SQLite extensions). A knowledge base's matrix is loaded once per process and kept while its
  `chunks_version` is unchanged; the cache holds at most KNOWLEDGE_VECTOR_CACHE_BYTES, least
  recently used first out.
- pgvector (PostgreSQL where the `vector` extension is available; set up in knowledge/pgvector.py):
  the same vectors in a column with an HNSW index, ranked in SQL.
Both answer `vectors_for(...)`: `candidates()` ranks a base by cosine, `scores_of()` scores given chunks.
Every read is of the knowledge base's active generation of chunks (models.KnowledgeBase).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from .models import Chunk, KnowledgeBase
from .pgvector import PGVECTOR_COLUMN, PGVECTOR_DIMENSION, PgVectorIndex, pgvector_version


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
    version, generation = KnowledgeBase.objects.filter(pk=knowledge_base_id).values_list(
        "chunks_version", "active_generation"
    ).first() or (None, None)
    with _cache_lock:
        cached = _cache.get(knowledge_base_id)
        if cached is not None and cached[0] == version:
            _cache.move_to_end(knowledge_base_id)
            return cached[1]
    rows = list(
        Chunk.objects.filter(knowledge_base_id=knowledge_base_id, generation=generation, document__status="ready")
        .order_by("id")
        .values_list("id", "embedding")
    )
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


def vectors_for(knowledge_base_id: int, dimension: int):
    """What ranks a knowledge base by vector: its pgvector index where pgvector is in use and every
    chunk of its active generation has its vector there, else its numpy matrix."""
    version = pgvector_version()
    if version is not None and dimension == PGVECTOR_DIMENSION:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT kb.active_generation, EXISTS (SELECT 1 FROM knowledge_chunk c WHERE "
                f"c.knowledge_base_id = kb.id AND c.{PGVECTOR_COLUMN} IS NULL "
                "AND c.generation = kb.active_generation), ARRAY(SELECT d.id FROM knowledge_document d "
                "WHERE d.knowledge_base_id = kb.id AND d.status <> 'ready') "
                "FROM knowledge_knowledgebase kb WHERE kb.id = %s",
                [knowledge_base_id],
            )
            row = cursor.fetchone()
        if row is not None and not row[1]:
            return PgVectorIndex(knowledge_base_id, row[0], iterative_scan=version >= (0, 8), not_ready=tuple(row[2]))
    return vector_matrix(knowledge_base_id, dimension)
