"""Ingesting one document on a job worker: parse → chunk → embed in batches → store the chunks
(the keyword index follows by trigger, knowledge/index.py) → ready.

Progress lives in the document's IngestionJob (studio.jobs): the stage on the document ("parsing",
"embedding"), chunks embedded of the total on the job, a heartbeat after every PDF page and every
batch, and a cancel checked as often. A failure fails this document alone, with a reason its
uploader can act on. A delivery after a job worker died (knowledge.services.ingestion_sweep)
resumes: the text is parsed and cut again (the same file and settings give the same chunks), the
chunks already stored are kept and only the rest are embedded.
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F

from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.llm.loading import ModelLoadError

from . import storage
from .chunking import Chunker, Piece
from .models import Chunk, Document, IngestionJob
from .parsing import DocumentError, Limits, parse
from .services import CANCELLED, document_fail

log = logging.getLogger("knowledge")

EMBED_BATCH = 32  # chunks embedded (and stored) at a time: about 2 s on 2 CPU cores


class Stopped(Exception):
    """Cancelled, deleted, or taken back by the sweeper (its job worker looked dead) meanwhile."""


def ingest_document(document_id: int) -> None:
    job = IngestionJob.objects.select_related("document__knowledge_base").filter(pk=document_id).first()
    if job is None or not job_claim(job):
        return  # deleted, cancelled while queued, or delivered twice
    IngestionJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)
    job.refresh_from_db(fields=["attempts"])
    # This delivery's hold on the job: lost when the job is deleted, ended, or queued again by the
    # sweeper (a worker that only looked dead must not write beside the one that resumes it).
    mine = IngestionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)
    try:
        _ingest(job, job.document, mine)
    except Stopped:
        if mine.filter(cancel_requested=True).exists():
            document_fail(job.pk, CANCELLED)
            job_end(job, JobStatus.CANCELLED)
    except (DocumentError, ModelLoadError) as exc:
        _fail(job, mine, str(exc))
    except Exception as exc:
        log.exception("ingesting document %s failed", job.pk)
        _fail(job, mine, f"It could not be indexed ({type(exc).__name__}: {str(exc)[:300]}); the studio's log has "
                         "the details.")


def _fail(job: IngestionJob, mine, error: str) -> None:
    if mine.exists():
        document_fail(job.pk, error)
        job_end(job, JobStatus.FAILED, error=error)


def _ingest(job: IngestionJob, document: Document, mine) -> None:
    def beat(note: str, **fields) -> None:
        if job_progress(job, note=note, **fields) or not mine.exists():
            raise Stopped

    def locked_and_mine() -> bool:
        """Inside a transaction: the document's row locked (a delete waits), still ours to write."""
        return (Document.objects.select_for_update().filter(pk=document.pk, status=Document.Status.PROCESSING)
                .exists() and mine.exists())

    knowledge_base = document.knowledge_base
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING, stage="parsing", error="")
    beat("parsing")
    try:
        raw = storage.read(document.file)
    except FileNotFoundError:
        raise DocumentError("its file is gone from the studio's storage (KNOWLEDGE_FILES_DIR): upload it "
                            "again") from None
    parsed = parse(raw, kind=document.kind, limits=Limits(max_pages=settings.KNOWLEDGE_MAX_PAGES),
                   progress=lambda page, pages: beat(f"parsing page {page} of {pages}"))
    pieces = Chunker(capacity=knowledge_base.chunk_tokens, overlap=knowledge_base.chunk_overlap).split(parsed.sections)
    if not pieces:
        raise DocumentError("it has no text to index beyond its headings")
    kept = _keep_stored_prefix(document, pieces)
    Document.objects.filter(pk=document.pk).update(stage="embedding", pages=parsed.pages, notes=parsed.notes)
    beat(f"embedding {kept} of {len(pieces)} chunks", done=kept, total=len(pieces))

    from studio.llm.embeddings import load_embedder  # torch: job workers only, never the web process

    embedder = load_embedder()
    beat(f"embedding {kept} of {len(pieces)} chunks")  # loading it took a moment in a fresh worker
    for start in range(kept, len(pieces), EMBED_BATCH):
        batch = pieces[start:start + EMBED_BATCH]
        vectors = embedder.embed([piece.text for piece in batch]).numpy().astype("<f4")  # (B, 384)
        with transaction.atomic():
            if not locked_and_mine():
                raise Stopped
            Chunk.objects.bulk_create([_chunk(document, piece, vector) for piece, vector in zip(batch, vectors)])
        done = start + len(batch)
        beat(f"embedding {done} of {len(pieces)} chunks", done=done)

    with transaction.atomic():
        if not locked_and_mine():
            raise Stopped
        Document.objects.filter(pk=document.pk).update(status=Document.Status.READY, stage="", chunk_count=len(pieces))
        knowledge_base.chunks_changed()
    job_end(job, JobStatus.FINISHED)


def _keep_stored_prefix(document: Document, pieces: list[Piece]) -> int:
    """Chunks a lost delivery stored that match this cut are kept (resume); the rest go."""
    stored = dict(Chunk.objects.filter(document=document).values_list("ordinal", "text"))
    kept = 0
    while kept < len(pieces) and stored.get(kept) == pieces[kept].text:
        kept += 1
    Chunk.objects.filter(document=document, ordinal__gte=kept).delete()
    return kept


def _chunk(document: Document, piece: Piece, vector: np.ndarray) -> Chunk:
    return Chunk(knowledge_base_id=document.knowledge_base_id, document=document, ordinal=piece.ordinal,
                 text=piece.text, page=piece.page, heading=piece.heading, start=piece.start, end=piece.end,
                 token_count=piece.token_count, embedding=vector.tobytes())
