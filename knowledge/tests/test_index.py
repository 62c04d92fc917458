"""The indexes themselves: the keyword index follows every write to the chunks (triggers, put back
after a migration dropped them), and the vector matrix each process caches is bounded and ranks
by one matrix product."""

import numpy as np
import pytest
from django.db import connection

from knowledge import keyword_index, vectors
from knowledge.models import Chunk, Document

pytestmark = pytest.mark.django_db


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype="<f4")
    return vector / np.linalg.norm(vector)


def add_chunks(knowledge_base, texts, *, status="ready", dimension=3):
    document = Document.objects.create(
        knowledge_base=knowledge_base,
        name=f"{len(texts)}.md",
        status=status,
        content_hash=str(Document.objects.count()),
    )
    rng = np.random.default_rng(len(texts))
    return [
        Chunk.objects.create(
            knowledge_base=knowledge_base,
            document=document,
            ordinal=n,
            text=text,
            start=0,
            end=len(text),
            token_count=3,
            embedding=unit(rng.normal(size=dimension)).tobytes(),
        )
        for n, text in enumerate(texts)
    ]


def matching(word):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rowid FROM knowledge_chunk_fts WHERE knowledge_chunk_fts MATCH %s ORDER BY rowid", [f'"{word}"']
        )
        return [row[0] for row in cursor.fetchall()]


def test_the_keyword_index_follows_inserts_updates_and_deletes(handbook):
    first, second = add_chunks(handbook, ["alpha beta", "beta gamma"])
    assert matching("beta") == [first.pk, second.pk]
    Chunk.objects.filter(pk=first.pk).update(text="delta")
    assert matching("beta") == [second.pk] and matching("delta") == [first.pk]
    first.document.delete()  # Django's cascade: the delete trigger sees it
    assert matching("beta") == [] and matching("delta") == []


def test_a_migration_that_dropped_the_triggers_gets_them_back_and_the_index_refilled(handbook):
    (chunk,) = add_chunks(handbook, ["before"])
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER knowledge_chunk_fts_insert")
    (missed,) = add_chunks(handbook, ["while away"])
    assert matching("away") == []
    keyword_index.ensure_installed(using="default")
    assert matching("away") == [missed.pk] and matching("before") == [chunk.pk]


def test_keyword_candidates_are_only_the_ready_documents_of_one_base(handbook, alice):
    from knowledge.services import knowledge_base_create

    other = knowledge_base_create(owner=alice, name="Other")
    (ready,) = add_chunks(handbook, ["valve"])
    add_chunks(handbook, ["valve valve"], status="processing")
    add_chunks(other, ["valve"])
    assert [
        chunk_id
        for chunk_id, _ in keyword_index.keyword_candidates(knowledge_base_id=handbook.pk, query="Valve?", limit=50)
    ] == [ready.pk]


def test_dense_candidates_rank_by_cosine_and_scores_are_read_for_held_chunks_only():
    matrix = vectors.VectorMatrix(
        np.array([3, 5, 9], dtype=np.int64), np.stack([unit([1, 0, 0]), unit([0, 1, 0]), unit([1, 1, 0])])
    )
    query = unit([1, 0.2, 0])
    assert [chunk_id for chunk_id, _ in vectors.dense_candidates(matrix, query, limit=2)] == [3, 9]
    assert set(matrix.scores_of([5, 7, 99], query)) == {5}
    empty = vectors.VectorMatrix(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.float32))
    assert vectors.dense_candidates(empty, query, limit=5) == [] and empty.scores_of([1], query) == {}


def test_the_vector_cache_is_bounded_and_follows_the_version(handbook, alice, settings):
    from knowledge.services import knowledge_base_create

    vectors.cache_clear()
    other = knowledge_base_create(owner=alice, name="Other")
    add_chunks(handbook, ["a", "b"])
    add_chunks(other, ["c"])
    first = vectors.vector_matrix(handbook.pk, 3)
    assert first.vectors.shape == (2, 3) and vectors.vector_matrix(handbook.pk, 3) is first
    handbook.chunks_changed()
    assert vectors.vector_matrix(handbook.pk, 3) is not first  # read again after a change
    settings.KNOWLEDGE_VECTOR_CACHE_BYTES = first.nbytes + 1  # room for one base
    vectors.vector_matrix(other.pk, 3)
    assert list(vectors._cache) == [other.pk]
