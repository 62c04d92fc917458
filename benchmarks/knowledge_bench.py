"""Measures knowledge bases for `make bench` (benchmarks/__main__.py runs it in a throwaway data
folder, and again on PostgreSQL for the scaled figures): the whole ingestion of a corpus against
embedding its chunks alone, and search latency at sizes of 10,000 and 100,000 chunks.

    .venv/bin/python -m benchmarks.knowledge_bench [--chunks 2000] [--sizes 10000,100000]

runs it alone on the configured database (the data folder of STUDIO_DATA_DIR, DATABASE_URL; migrated
first) and prints the figures as one JSON line.

Search latency does not depend on what the vectors mean, so the large knowledge bases are filled
with generated text and random unit vectors (their keyword index is built as usual); the query is
embedded for real on every search, as a person's would be.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import django
import numpy as np

from studio.data_dir import prepare

# A vocabulary shaped like a language's: a few very common words and thousands of rarer ones,
# drawn with Zipf-like frequencies (the n-th most common word about 1/n as often as the first), so
# that a query's words match as many chunks as real words would. (The first bench drew from 40
# words: every chunk held every word, and keyword ranking measured the worst case only.)
COMMON = (
    "the of and to a in is it for on that with as be this by are or at from can your if when "
    "not you will an each its has have was before after then into"
).split()
VOCABULARY_SIZE = 6000
ZIPF_EXPONENT = 1.07


def vocabulary(size: int = VOCABULARY_SIZE) -> list[str]:
    """COMMON, then made-up words of 1 to 4 syllables, all distinct; the same list every run."""
    rng, words, seen = random.Random(1), list(COMMON), set(COMMON)
    onsets, vowels, codas = (
        "b c d f g h k l m n p r s t v w z br tr st pl gr ch sh".split(),
        "a e i o u ai ou".split(),
        ["", "", "n", "r", "s", "t", "l", "m"],
    )
    while len(words) < size:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = vocabulary()
_WEIGHTS = np.arange(1, len(WORDS) + 1, dtype=np.float64) ** -ZIPF_EXPONENT
_CUMULATIVE = np.cumsum(_WEIGHTS / _WEIGHTS.sum())


def words(rng: random.Random, count: int) -> list[str]:
    """`count` words drawn with the vocabulary's frequencies."""
    picks = np.searchsorted(_CUMULATIVE, [rng.random() for _ in range(count)], side="right")
    return [WORDS[min(pick, len(WORDS) - 1)] for pick in picks]


def paragraph(rng: random.Random, count: int) -> str:
    return " ".join(words(rng, count)).capitalize() + "."


def corpus(chunks: int, rng: random.Random) -> list[tuple[str, str]]:
    """Markdown documents of about `chunks` chunks (one ~120-word paragraph each, under headings)."""
    documents, per_document = [], 100
    for number in range(max(1, chunks // per_document)):
        sections = [f"# Handbook {number}\n"]
        for section in range(per_document):
            if section % 10 == 0:
                sections.append(f"## Part {section // 10}\n")
            sections.append(paragraph(rng, 120) + "\n")
        documents.append((f"handbook-{number}.md", "\n".join(sections)))
    return documents


# The studio's Django modules are imported inside the measuring functions: they need Django set
# up, which main() does first.


def measure(*, chunks: int, sizes: str, queries: int, skip_ingestion: bool) -> dict:
    from django.contrib.auth import get_user_model

    from knowledge import services
    from knowledge.pgvector import pgvector_version

    rng = random.Random(7)
    owner, _ = get_user_model().objects.get_or_create(username="knowledge-bench")
    results = {}
    if not skip_ingestion:
        results["ingestion"] = ingestion(owner, corpus(chunks, rng))
    results["search"] = []
    for size in [int(n) for n in sizes.split(",") if n.strip()]:
        knowledge_base = services.knowledge_base_create(owner=owner, name=f"Search {size}")
        fill(knowledge_base, size, rng)
        for mode in ("hybrid", "dense"):
            results["search"].append(
                {"chunks": size, "mode": mode, **latency(owner, knowledge_base, mode, queries, rng)}
            )
    results["vectors"] = "pgvector" if pgvector_version() else "numpy"
    return results


def ingestion(owner, documents) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from knowledge import services
    from knowledge.ingestion import ingest_document
    from knowledge.models import Chunk, Document
    from studio.llm.embeddings import load_embedder

    embedder = load_embedder()
    embedder.embed(["warm up"])  # loading is not part of either figure
    knowledge_base = services.knowledge_base_create(owner=owner, name="Ingestion")
    started = time.perf_counter()
    services.documents_add(
        user=owner,
        knowledge_base=knowledge_base,
        files=[SimpleUploadedFile(name, text.encode(), content_type="text/markdown") for name, text in documents],
    )
    for document_id in Document.objects.filter(knowledge_base=knowledge_base).values_list("pk", flat=True):
        ingest_document(document_id)  # what the job worker runs: parse, split, embed, index
    ingest_s = time.perf_counter() - started
    failed = list(
        Document.objects.filter(knowledge_base=knowledge_base).exclude(status="ready").values_list("name", "error")
    )
    texts = list(Chunk.objects.filter(knowledge_base=knowledge_base).values_list("text", flat=True))
    started = time.perf_counter()
    for start in range(0, len(texts), 32):  # the ingestion's own batch size
        embedder.embed(texts[start : start + 32])
    embed_s = time.perf_counter() - started
    return {
        "chunks": len(texts),
        "ingestion_s": ingest_s,
        "embedding_s": embed_s,
        "ingestion_chunks_per_s": len(texts) / ingest_s,
        "embedding_chunks_per_s": len(texts) / embed_s,
        "failed": failed,
    }


def fill(knowledge_base, size: int, rng: random.Random) -> None:
    from django.db import connection, transaction

    from knowledge.models import Chunk, Document
    from knowledge.pgvector import store_vectors

    document = Document.objects.create(
        knowledge_base=knowledge_base,
        name="generated.md",
        kind="markdown",
        status=Document.Status.READY,
        chunk_count=size,
    )
    vectors = np.random.default_rng(7).standard_normal((size, knowledge_base.dimension)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, size, 2000):
        with transaction.atomic():
            store_vectors(
                Chunk.objects.bulk_create(
                    [  # and their pgvector column, where there is one
                        Chunk(
                            knowledge_base=knowledge_base,
                            document=document,
                            ordinal=n,
                            text=paragraph(rng, 60),
                            start=0,
                            end=0,
                            token_count=80,
                            embedding=vectors[n].tobytes(),
                        )
                        for n in range(start, min(size, start + 2000))
                    ]
                )
            )
    knowledge_base.chunks_changed()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE knowledge_chunk")  # as autovacuum would soon: the plans of a settled table


def latency(owner, knowledge_base, mode: str, queries: int, rng: random.Random) -> dict:
    from knowledge.search import search

    search(user=owner, knowledge_base=knowledge_base, query="warm up the cache", mode=mode)  # loads the matrix
    times = []
    for _ in range(queries):
        query = " ".join(words(rng, 4))  # as a person types: common words and rarer ones
        started = time.perf_counter()
        search(user=owner, knowledge_base=knowledge_base, query=query, mode=mode)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.knowledge_bench",
        description="Knowledge-base figures for make bench (JSON on stdout).",
    )
    parser.add_argument("--chunks", type=int, default=2000, help="chunks in the ingested corpus")
    parser.add_argument("--sizes", default="10000,100000", help="knowledge-base sizes for search latency")
    parser.add_argument("--queries", type=int, default=40, help="searches per size and mode")
    parser.add_argument("--skip-ingestion", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    prepare()  # the data folder and its secret key, which the settings read
    django.setup()
    print(
        json.dumps(
            measure(chunks=args.chunks, sizes=args.sizes, queries=args.queries, skip_ingestion=args.skip_ingestion)
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
