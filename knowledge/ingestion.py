"""Ingesting one document on a job worker: parse → chunk → embed in batches → store the chunks
(the keyword index follows by trigger, knowledge/keyword_index.py; the pgvector column, where
there is one, is written beside them) → ready.

A delivery of `knowledge.ingest` takes the queued document that is fairest between owners
(selectors.next_ingestion), not necessarily the one its message named.

Progress lives in the document's IngestionJob (studio.jobs): the stage on the document ("parsing",
"embedding"), chunks embedded of the total on the job, a heartbeat after every PDF page, every
100,000 XML elements of a .docx and every batch, and a cancel checked as often. A failure fails this
document alone, for good, with a reason its uploader can act on and a code (its file is deleted). A delivery after a job worker died (knowledge.services.ingestion_sweep)
resumes: the text is parsed and cut again (the same file and settings give the same chunks), the
chunks already stored are kept and only the rest are embedded. On a job worker without a GPU it
pauses between batches while chat replies are being written (studio.chat_activity; the job's note
says "paused: chat replies come first").

During a rebuild (services.knowledge_base_rebuild) a ready document is cut again with the
building generation's settings and its chunks stored in that generation, while it stays ready
and its active chunks keep answering; a document uploaded meanwhile gets both generations. When
the last one is done, the rebuild switches over (services.rebuild_switch_if_built).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F

from studio import chat_activity
from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.llm.loading import ModelLoadError

from . import storage
from .chunking import Chunker, Piece, document_title
from .engines import EngineError, embed_passages
from .models import Chunk, Document, IngestionJob, KnowledgeBase
from .parsing import DocumentError, Limits, parse
from .pgvector import store_vectors
from .selectors import next_ingestion
from .services import CANCELLED, document_fail, rebuild_switch_if_built

log = logging.getLogger("knowledge")

EMBED_BATCH = 32  # chunks embedded (and stored) at a time: about 2 s on 2 CPU cores
PAUSED = "paused: chat replies come first"


class Stopped(Exception):
    """Cancelled, deleted, or taken back by the sweeper (its job worker looked dead) meanwhile."""


@dataclass(frozen=True)
class Cut:
    """One generation's chunks of the document: the settings it is cut with, the pieces."""

    generation: int
    pieces: list[Piece]


def ingest_next_document() -> None:
    """One delivery of `knowledge.ingest`: the queued document that is fairest to take next
    (selectors.next_ingestion: its owner has the fewest being ingested, then was served least
    recently), whichever document the message named. Every queued document has a message of its
    own, and each delivery takes at most one, so every one is taken; but one person's thousand
    files no longer hold another's one file back until they are all done."""
    for _ in range(10):  # another job worker may claim the same one first: then the next
        document_id = next_ingestion()
        if document_id is None or ingest_document(document_id):
            return


def ingest_document(document_id: int) -> bool:
    """Ingest this document, if its job is still queued. False when it was not (deleted, cancelled
    while queued, or taken by another delivery)."""
    job = IngestionJob.objects.select_related("document__knowledge_base").filter(pk=document_id).first()
    if job is None or not job_claim(job):
        return False
    IngestionJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)
    job.refresh_from_db(fields=["attempts"])
    # This delivery's hold on the job: lost when the job is deleted, ended, or queued again by the
    # sweeper (a worker that only looked dead must not write beside the one that resumes it).
    mine = IngestionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)
    knowledge_base_id = job.document.knowledge_base_id
    try:
        _ingest(job, job.document, mine)
    except Stopped:
        if mine.filter(cancel_requested=True).exists():
            document_fail(job.pk, CANCELLED, code="cancelled")
            job_end(job, JobStatus.CANCELLED)
    except DocumentError as exc:
        _fail(job, mine, str(exc), code=exc.code)
    except ModelLoadError as exc:
        _fail(job, mine, str(exc), code="embedder_unavailable")
    except EngineError as exc:  # its chunks stored so far go with it (document_fail): none was searchable
        _fail(job, mine, exc.message, code="embedding_engine_failed")
    except Exception as exc:
        log.exception("ingesting document %s failed", job.pk)
        _fail(
            job,
            mine,
            f"It could not be indexed ({type(exc).__name__}: {str(exc)[:300]}); the studio's log has the details.",
            code="internal",
        )
    # A rebuild waits for its last document, whichever way that one ended.
    rebuild_switch_if_built(knowledge_base_id)
    return True


def _fail(job: IngestionJob, mine, error: str, *, code: str) -> None:
    """Failed for good: a job that failed is never delivered again (the sweeper only resumes jobs
    whose worker died), so a file refused for its size is not read twice."""
    if mine.exists():
        document_fail(job.pk, error, code=code)
        job_end(job, JobStatus.FAILED, error=error)


def _ingest(job: IngestionJob, document: Document, mine) -> None:
    knowledge_base = KnowledgeBase.objects.get(pk=document.knowledge_base_id)  # as it is now, not at upload
    # A ready document queued again belongs to a rebuild: it stays ready (its active chunks answer)
    # while its chunks of the building generation are written.
    rebuild_only = document.status == Document.Status.READY and knowledge_base.rebuilding
    note_prefix = "rebuilding: " if rebuild_only else ""

    def beat(note: str, **fields) -> None:
        if job_progress(job, note=note_prefix + note, **fields) or not mine.exists():
            raise Stopped

    def yield_to_chat() -> None:
        """Between batches, on a job worker without a GPU: wait while chat replies are being
        written (people first; as training does, finetune/runner.py). Cancel still stops it."""
        while chat_activity.replies_in_progress() and not _has_gpu():
            if job_progress(job, note=PAUSED) or not mine.exists():
                raise Stopped
            time.sleep(settings.JOB_HEARTBEAT_SECONDS)  # then looks again, and beats its heart

    def locked_and_mine() -> bool:
        """Inside a transaction: the document's row locked (a delete waits), still ours to write."""
        status = Document.Status.READY if rebuild_only else Document.Status.PROCESSING
        return Document.objects.select_for_update().filter(pk=document.pk, status=status).exists() and mine.exists()

    def still_built(generation: int) -> bool:
        """The generation is the one in use, or a rebuild still builds it. A document indexed again
        for the rebuild needs no look: a cancel ends its job (locked_and_mine). The base's row is
        not locked: a cancel locks it and then updates every document, this would lock the other
        way round (a deadlock on PostgreSQL)."""
        return (
            generation == knowledge_base.active_generation
            or rebuild_only
            or KnowledgeBase.objects.filter(pk=knowledge_base.pk, building_generation=generation).exists()
        )

    if not rebuild_only:
        Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING, stage="parsing", error="")
    beat("parsing")
    try:
        raw = storage.read(document.file)
    except FileNotFoundError:
        raise DocumentError(
            "its file is gone from the studio's storage (KNOWLEDGE_FILES_DIR): upload it again", code="file_missing"
        ) from None
    parsed = parse(
        raw,
        kind=document.kind,
        limits=Limits(max_pages=settings.KNOWLEDGE_MAX_PAGES),
        progress=lambda page, pages: beat(f"parsing page {page} of {pages}"),
        heartbeat=lambda: beat("parsing"),
    )
    del raw  # the file's bytes: not held while it is embedded
    plain_text = document.kind == "text"
    title = document_title(document.name, parsed.sections[0].text if parsed.sections else "", plain_text=plain_text)

    def cut(capacity: int, overlap: int) -> list[Piece]:
        return Chunker(capacity=capacity, overlap=overlap).split(parsed.sections, plain_text=plain_text, title=title)

    cuts = []
    if not rebuild_only:
        cuts.append(
            Cut(knowledge_base.active_generation, cut(knowledge_base.chunk_tokens, knowledge_base.chunk_overlap))
        )
    if knowledge_base.rebuilding:
        cuts.append(
            Cut(
                knowledge_base.building_generation,
                cut(knowledge_base.building_chunk_tokens, knowledge_base.building_chunk_overlap),
            )
        )
    if not all(cut.pieces for cut in cuts):
        raise DocumentError("it has no text to index beyond its headings", code="no_text")
    total = sum(len(cut.pieces) for cut in cuts)
    kept = [_keep_stored_prefix(document, cut) for cut in cuts]
    if not rebuild_only:
        Document.objects.filter(pk=document.pk).update(stage="embedding", pages=parsed.pages, notes=parsed.notes)
    done = sum(kept)
    beat(f"embedding {done} of {total} chunks", done=done, total=total)

    for cut, first in zip(cuts, kept):
        for start in range(first, len(cut.pieces), EMBED_BATCH):
            yield_to_chat()
            batch = cut.pieces[start : start + EMBED_BATCH]
            # (B, D): the generation's embedder, bundled, tuned or an engine (EngineError fails the document)
            vectors = embed_passages(
                knowledge_base.embedder_for(cut.generation),
                [piece.embedding_text or piece.text for piece in batch],
                dimension=knowledge_base.dimension,
            )
            with transaction.atomic():
                if not locked_and_mine():
                    raise Stopped
                if not still_built(cut.generation):
                    break  # the rebuild was cancelled: its passages would be left behind
                chunks = Chunk.objects.bulk_create(
                    [_chunk(document, cut.generation, piece, vector) for piece, vector in zip(batch, vectors)]
                )
                store_vectors(chunks)
            done += len(batch)
            beat(f"embedding {done} of {total} chunks", done=done)

    counts = {cut.generation: len(cut.pieces) for cut in cuts}
    with transaction.atomic():
        if not locked_and_mine():
            raise Stopped
        # Counted for the rebuild only while that rebuild still runs (it may have been cancelled).
        still_building = knowledge_base.rebuilding and still_built(knowledge_base.building_generation)
        rebuilt = counts.get(knowledge_base.building_generation) if still_building else None
        if rebuild_only:
            Document.objects.filter(pk=document.pk).update(rebuilt_chunk_count=rebuilt)
        else:
            Document.objects.filter(pk=document.pk).update(
                status=Document.Status.READY,
                stage="",
                chunk_count=counts[knowledge_base.active_generation],
                rebuilt_chunk_count=rebuilt,
            )
            knowledge_base.chunks_changed()
    job_end(job, JobStatus.FINISHED)


def _has_gpu() -> bool:
    # torch: job workers only, never the web process
    import torch  # noqa: PLC0415

    return torch.cuda.is_available()


def _keep_stored_prefix(document: Document, cut: Cut) -> int:
    """Chunks of this generation a lost delivery stored that match this cut are kept (resume); the rest go."""
    mine = Chunk.objects.filter(document=document, generation=cut.generation)
    stored = dict(mine.values_list("ordinal", "text"))
    kept = 0
    while kept < len(cut.pieces) and stored.get(kept) == cut.pieces[kept].text:
        kept += 1
    mine.filter(ordinal__gte=kept).delete()
    return kept


def _chunk(document: Document, generation: int, piece: Piece, vector: np.ndarray) -> Chunk:
    return Chunk(
        knowledge_base_id=document.knowledge_base_id,
        document=document,
        generation=generation,
        ordinal=piece.ordinal,
        text=piece.text,
        page=piece.page,
        heading=piece.heading,
        start=piece.start,
        end=piece.end,
        token_count=piece.token_count,
        embedding=vector.tobytes(),
    )
