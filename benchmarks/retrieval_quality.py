"""Retrieval quality on the test sets written for it (benchmarks/retrieval_sets/<set>), and what the
tuning sweep recommends for them. For each set: a knowledge base built through the studio's
services with the default settings, in a throwaway data folder (SQLite; each document ingested by
the job workers' function in this process, as `make loop-demo` does), the set's questions imported
as a retrieval test and measured as its page measures them, then a sweep of the default grid
(knowledge/sweep.py, 36 settings) run by the job workers' runner in this process. It prints the
sweep's table and

    retrieval set <name>: recall@5 <x> (MRR@10 <y>) with default settings
    retrieval set <name>: best: <settings> recall@5 <x> (MRR@10 <y>)

    .venv/bin/python -m benchmarks.retrieval_quality --set lm_articles [--set field_manual] [--minutes 20]
        [--grid '{"chunk": [[128, 24]], "fusion_weight": [0.5, 0.7]}']

Not part of `make bench` (minutes per set: every chunk setting but the default one is embedded again).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import django

from studio.data_dir import prepare

SETS = Path(__file__).resolve().parent / "retrieval_sets"


def build_base(owner, name: str, folder: Path, *, chunk_tokens=None, chunk_overlap=None):
    """A knowledge base of the folder's documents, with the default settings (or the chunk settings
    given), each document ingested here."""
    from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: PLC0415 - after django.setup()

    from knowledge import services  # noqa: PLC0415
    from knowledge.ingestion import ingest_document  # noqa: PLC0415
    from knowledge.models import Document  # noqa: PLC0415

    knowledge_base = services.knowledge_base_create(
        owner=owner, name=name, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap
    )
    files = [
        SimpleUploadedFile(path.name, path.read_bytes(), "text/markdown" if path.suffix == ".md" else "text/plain")
        for path in sorted(folder.iterdir())
        if path.suffix in (".md", ".txt")
    ]
    for added in services.documents_add(user=owner, knowledge_base=knowledge_base, files=files):
        ingest_document(added.document.pk)  # the job workers' task, here in this process
    failed = knowledge_base.documents.exclude(status=Document.Status.READY)
    if failed.exists():
        raise RuntimeError("documents not ingested: " + "; ".join(f"{d.name}: {d.error}" for d in failed))
    knowledge_base.refresh_from_db()
    return knowledge_base


def questions_of(folder: Path) -> list[dict]:
    """A set's questions as the retrieval-test API takes them: its questions.jsonl, or a
    questions.csv of question, expected and passage (the loop demo's)."""
    if (folder / "questions.jsonl").exists():
        return [
            {"question": row["question"], "passages": row["passages"]}
            for row in map(json.loads, (folder / "questions.jsonl").read_text().splitlines())
            if row
        ]
    with open(folder / "questions.csv", newline="") as handle:
        return [{"question": row["question"], "passages": [row["passage"]]} for row in csv.DictReader(handle)]


def describe(row: dict) -> str:
    return (
        f"{row['chunk_tokens']} tokens (overlap {row['chunk_overlap']}), fusion weight {row['fusion_weight']:g}, "
        f"near-duplicates {'collapsed' if row['collapse_duplicates'] else 'kept'}, "
        f"reranking {'on' if row['rerank'] else 'off'}"
    )


def table(tuning_sweep, knowledge_base) -> str:
    from knowledge.sweep import in_use  # noqa: PLC0415

    ks = tuning_sweep.grid.get("k", [])
    header = ["#", "chunk", "overlap", "fusion", "collapse", "rerank", "r@1", "r@5", "r@10"]
    header += [f"r@{k}" for k in ks] + ["MRR@10", "p95 ms", ""]
    lines = [header]
    figure = lambda value: "—" if value is None else f"{value:.2f}"  # noqa: E731
    for index, row in enumerate(tuning_sweep.rows):
        cells = [
            str(index + 1),
            str(row["chunk_tokens"]),
            str(row["chunk_overlap"]),
            f"{row['fusion_weight']:g}",
            "on" if row["collapse_duplicates"] else "off",
            "on" if row["rerank"] else "off",
        ]
        if row["status"] == "measured":
            cells += [figure(row[name]) for name in ("recall_at_1", "recall_at_5", "recall_at_10")]
            cells += [figure(row["recall_at_k"].get(str(k))) for k in ks]
            cells += [figure(row["mrr_at_10"]), f"{row['p95_ms']:.1f}"]
        else:
            cells += [f"skipped: {row.get('reason', '')}"] + [""] * (len(header) - len(cells) - 2)
        marks = (["best"] if index == tuning_sweep.best_row else []) + (
            ["default"] if in_use(row, knowledge_base) else []
        )
        lines.append(cells + [", ".join(marks)])
    widths = [max(len(line[n]) for line in lines) for n in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def measure_set(owner, name: str, *, grid, minutes: int) -> dict:
    from knowledge import retrieval_tests, sweep  # noqa: PLC0415

    folder = SETS / name
    started = time.perf_counter()
    knowledge_base = build_base(owner, name, folder)
    ingest_s = time.perf_counter() - started
    test = retrieval_tests.retrieval_test_create(
        user=owner, knowledge_base=knowledge_base, name=name, questions=questions_of(folder)
    )
    state = retrieval_tests.retrieval_test_state(test, user=owner)  # as the test's page measures it
    if state.status != "ready":
        raise RuntimeError(f"the test could not be measured: {state.error}")
    test.refresh_from_db()
    defaults = test.figures
    started = time.perf_counter()
    tuning_sweep = sweep.sweep_create(user=owner, knowledge_base=knowledge_base, test=test, grid=grid, minutes=minutes)
    sweep.sweep_run(tuning_sweep.pk)  # the job workers' task, here in this process
    tuning_sweep.refresh_from_db()
    sweep_s = time.perf_counter() - started
    if tuning_sweep.status != "finished":
        raise RuntimeError(f"the sweep ended {tuning_sweep.status}: {tuning_sweep.error}")
    best = tuning_sweep.best
    print(
        f"retrieval set {name}: {test.questions.count()} questions, {knowledge_base.documents.count()} documents, "
        f"ingested in {ingest_s:.0f} s; the sweep measured {tuning_sweep.done} of {tuning_sweep.total} "
        f"settings in {sweep_s:.0f} s",
        flush=True,
    )
    print(table(tuning_sweep, knowledge_base), flush=True)
    print(
        f"retrieval set {name}: recall@5 {defaults['recall_at_5']:.2f} (MRR@10 {defaults['mrr_at_10']:.2f}) "
        f"with default settings ({knowledge_base.chunk_tokens} tokens, overlap {knowledge_base.chunk_overlap}, "
        f"fusion weight {knowledge_base.fusion_weight:g}, near-duplicates "
        f"{'collapsed' if knowledge_base.collapse_duplicates else 'kept'})",
        flush=True,
    )
    print(
        f"retrieval set {name}: best: {describe(best)} recall@5 {best['recall_at_5']:.2f} "
        f"(MRR@10 {best['mrr_at_10']:.2f})",
        flush=True,
    )
    return {"defaults": defaults, "best": best, "rows": tuning_sweep.rows}


def main(argv=None) -> None:
    names = sorted(path.name for path in SETS.iterdir() if (path / "questions.jsonl").exists())
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", choices=names, help="a folder of benchmarks/retrieval_sets (repeat)")
    parser.add_argument("--minutes", type=int, default=20, help="each sweep's budget")
    parser.add_argument("--grid", type=json.loads, default=None, help="the sweep's grid as the API takes it (JSON)")
    args = parser.parse_args(argv)
    # A throwaway data folder: the bases, files and database of this run go with it.
    folder = tempfile.mkdtemp(prefix="retrieval-quality-")
    os.environ["STUDIO_DATA_DIR"] = folder
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    prepare()  # reads STUDIO_DATA_DIR, set just above
    django.setup()
    try:
        from django.contrib.auth import get_user_model  # noqa: PLC0415
        from django.core.management import call_command  # noqa: PLC0415

        call_command("migrate", verbosity=0)
        owner = get_user_model().objects.create_user("retrieval-quality")
        for name in args.set or ["lm_articles"]:
            measure_set(owner, name, grid=args.grid, minutes=args.minutes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
