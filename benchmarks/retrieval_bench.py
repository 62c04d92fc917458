"""Retrieval quality and the reranking stage's cost, for `make bench` (benchmarks/__main__.py runs it
in a throwaway data folder):

- recall@5 and MRR@10 of retrieval test sets with every ranking stage, and without each one: the loop
  demo's corpus (finetune/demo_corpus, its 20 questions, chunks of 64 tokens as the demo cuts them)
  and the long articles written for these measurements (benchmarks/retrieval_sets/lm_articles, at
  the default chunk settings). The stages measured here are the query-time ones (fusion weight,
  near-duplicate collapse, reranking); the index-time ones (the heading trail, stemming) are in
  every base the studio builds now.
- query expansion (off by default): recall@5 of the long articles with the served model's rewrites
  fused in, and the time a search waits for them (the bundled model in an in-process model worker).
- `reranked/plain search p95 latency ratio`: searches with the reranking stage against without it.
  No package ships a cross-encoder that runs offline, so the reranker is a stand-in on loopback
  with TEI's /rerank shape that scores the top 20 passages with the bundled MiniLM (query and
  passage embedded on every request, with torch in its own thread: about the work of a MiniLM
  cross-encoder over 20 pairs).

    .venv/bin/python -m benchmarks.retrieval_bench [--queries 40]

prints the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import django

from benchmarks.retrieval_quality import build_base, questions_of
from studio.data_dir import prepare

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "loop demo corpus": (ROOT / "finetune" / "demo_corpus", 64, 8),
    "long articles": (ROOT / "benchmarks" / "retrieval_sets" / "lm_articles", None, None),
}
# Each stage turned off alone, against all of them (the base's settings: the studio's defaults).
WITHOUT = {
    "every stage": {},
    "without near-duplicate collapse": {"collapse_duplicates": False},
    "keywords and meaning weighted equally (0.5)": {"fusion_weight": 0.5},
    "meaning only": {"mode": "dense"},
    "keywords only": {"mode": "bm25"},
}


def recall(owner, name: str, folder: Path, chunk_tokens, chunk_overlap) -> dict:
    from knowledge import retrieval_tests

    knowledge_base = build_base(owner, name, folder, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
    test = retrieval_tests.retrieval_test_create(
        user=owner, knowledge_base=knowledge_base, name=name, questions=questions_of(folder)
    )
    figures = {}
    for label, options in WITHOUT.items():
        measured = retrieval_tests.measure(test, user=owner, search_options=options)
        figures[label] = {"recall_at_5": measured["recall_at_5"], "mrr_at_10": measured["mrr_at_10"]}
    return {
        "questions": test.questions.count(),
        "chunk_tokens": knowledge_base.chunk_tokens,
        "chunk_overlap": knowledge_base.chunk_overlap,
        "fusion_weight": knowledge_base.fusion_weight,
        "stages": figures,
        "knowledge_base": knowledge_base,
    }


def stand_in_reranker():
    """A TEI-shaped reranker on loopback that scores with the bundled MiniLM (see the docstring)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from studio.llm.embeddings import load_embedder  # torch, as a reranking server would run it

    embedder = load_embedder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            vectors = embedder.embed([body["query"], *body["texts"]]).numpy()
            scores = (vectors[1:] @ vectors[0]).tolist()
            raw = json.dumps(
                sorted(({"index": n, "score": s} for n, s in enumerate(scores)), key=lambda r: -r["score"])
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def p95(times: list[float]) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, int(0.95 * len(times)))]


def rerank_latency(owner, knowledge_base, queries: list[str]) -> dict:
    from django.conf import settings

    from knowledge.search import search

    server = stand_in_reranker()
    settings.KNOWLEDGE_RERANKER_URL = f"http://127.0.0.1:{server.server_address[1]}"
    settings.KNOWLEDGE_RERANKER_API = "tei"
    try:
        timings = {False: [], True: []}
        search(user=owner, knowledge_base=knowledge_base, query="warm up", rerank=True)
        for query in queries:
            for reranked in (False, True):
                started = time.perf_counter()
                answer = search(user=owner, knowledge_base=knowledge_base, query=query, rerank=reranked)
                timings[reranked].append((time.perf_counter() - started) * 1000)
                if reranked and answer.notes:
                    raise RuntimeError(f"the stand-in reranker failed: {answer.notes}")
    finally:
        server.shutdown()
    plain, reranked = p95(timings[False]), p95(timings[True])
    return {
        "queries": len(queries),
        "plain_p95_ms": plain,
        "reranked_p95_ms": reranked,
        "plain_p50_ms": statistics.median(timings[False]),
        "reranked_p50_ms": statistics.median(timings[True]),
        "ratio": reranked / plain,
    }


def expansion(owner, knowledge_base) -> dict:
    """recall@5 of the long articles with query expansion, and what it costs a search."""
    from django.conf import settings

    from chat.serving.worker import WorkerThread
    from knowledge import retrieval_tests
    from knowledge.search import search

    settings.LLM_QUEUE_POLL_SECONDS = 0.05
    test = knowledge_base.retrieval_tests.get()
    with WorkerThread():
        measured = retrieval_tests.measure(test, user=owner, search_options={"expand_query": True})
        waits = []
        for question in test.questions.values_list("question", flat=True)[:10]:
            answer = search(user=owner, knowledge_base=knowledge_base, query=question, expand_query=True)
            waits.append(answer.expansion.ms)
    return {
        "recall_at_5": measured["recall_at_5"],
        "mrr_at_10": measured["mrr_at_10"],
        "p50_ms": statistics.median(waits),
        "model": settings.LLM_MODEL,
    }


def measure(queries: int, with_expansion: bool) -> dict:
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("retrieval-bench")
    sets, articles = {}, None
    for name, (folder, chunk_tokens, chunk_overlap) in SETS.items():
        measured = recall(owner, name, folder, chunk_tokens, chunk_overlap)
        articles = measured.pop("knowledge_base")
        sets[name] = measured
    questions = [row["question"] for row in questions_of(SETS["long articles"][0])][:queries]
    figures = {"sets": sets, "rerank": rerank_latency(owner, articles, questions)}
    if with_expansion:
        figures["expansion"] = expansion(owner, articles)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=40, help="searches timed with and without reranking")
    parser.add_argument("--no-expansion", action="store_true", help="leave out query expansion (loads the model)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    prepare()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(json.dumps(measure(args.queries, not args.no_expansion)), flush=True)


if __name__ == "__main__":
    main()
