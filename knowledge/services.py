"""Writes of knowledge bases: create one, add documents (stored within their owner's quota,
deduplicated by content, queued for ingestion on the job workers), cancel or delete them, fail
one (its file deleted, its reason kept), rebuild a base with new settings while its index keeps
answering (or cancel the rebuild), and the sweeper's part that resumes ingestions a job worker
lost. Ingestion itself is knowledge/ingestion.py; search is search.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from studio import jobs
from studio.errors import Forbidden, StudioError
from studio.input_checks import InputError, number_in_range, unstorable_reason
from studio.jobs import JobStatus
from studio.llm.numpy_embedder import EMBEDDING_MODEL

from . import engines, retrieval_tests, storage, tuned_embedders
from .models import Chunk, Document, IngestionJob, KnowledgeBase
from .parsing import DocumentError, kind_of

log = logging.getLogger("knowledge")

EMBEDDING_DIMENSION = engines.BUNDLED_DIMENSION  # all-MiniLM-L6-v2
# Chunk sizes a rebuild accepts, in the embedder's tokens: it reads 256, two of them its own
# (studio/settings.py checks KNOWLEDGE_CHUNK_TOKENS against the same bounds).
MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS = 16, 254
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
# A job worker that dies while ingesting a document: the document is resumed this many times in
# all, then failed (a file that kills its worker every time must not loop forever).
MAX_ATTEMPTS = 3
CANCELLED = "Cancelled before it was ready; upload it again to index it."
WORKER_LOST_READING = (
    "The job worker stopped while reading this file (killed, or out of memory): it is not tried "
    "again, since reading it again would most likely do the same. If the worker was stopped for "
    "another reason, upload the file again."
)


class KnowledgeError(StudioError):
    pass


@dataclass(frozen=True)
class DocumentAdded:
    document: Document
    duplicate: bool  # the same content was already in this knowledge base: this is that document
    retried: bool = False  # that document had failed: queued again with this file


class QuotaExceeded(KnowledgeError):
    """The upload would take its owner past KNOWLEDGE_QUOTA_BYTES_PER_PERSON: nothing was stored."""

    status = 413

    def __init__(self, message: str, field: str = ""):
        super().__init__(message, field)
        self.code = "quota_exceeded"


@dataclass(frozen=True)
class StorageUse:
    """What a person's documents take in the studio's storage, against their quota."""

    used: int  # bytes of the files kept (failed documents keep none)
    quota: int  # KNOWLEDGE_QUOTA_BYTES_PER_PERSON; 0: no quota

    @property
    def available(self) -> int | None:
        return None if not self.quota else max(self.quota - self.used, 0)

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.quota)) if self.quota else 0


def _text(value, field: str, *, limit: int, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise KnowledgeError("must be text", field)
    value = value.strip()
    if required and not value:
        raise KnowledgeError("must not be empty", field)
    if len(value) > limit:
        raise KnowledgeError(f"is {len(value):,} characters long; at most {limit:,}", field)
    reason = unstorable_reason(value)
    if reason:
        raise KnowledgeError(reason, field)
    return value


def embedder_choice(asked) -> tuple[str, int]:
    """What a base pins for the embedder a person asked for: (embedding_model, dimension). The
    bundled model by its name; an engine of KNOWLEDGE_EMBEDDING_ENGINES by its name (or as a base
    pins it, "<name>:<model>"), its dimension measured with one request (502 when it fails)."""
    if asked == EMBEDDING_MODEL:
        return EMBEDDING_MODEL, EMBEDDING_DIMENSION
    configured = engines.embedding_engines()
    name = asked.partition(":")[0] if isinstance(asked, str) else None
    engine = configured.get(name)
    if engine is None or asked not in (engine.name, engine.pinned_name):
        others = f"an engine of KNOWLEDGE_EMBEDDING_ENGINES ({', '.join(configured)})" if configured else ""
        raise KnowledgeError(
            f"must be {EMBEDDING_MODEL}{' or ' + others if others else ' (KNOWLEDGE_EMBEDDING_ENGINES names no engine)'}",
            "embedding_model",
        )
    try:
        return engine.pinned_name, engines.measured_dimension(engine)
    except engines.EngineError as exc:
        raise KnowledgeError(exc.message, "embedding_model", status=exc.status, code=exc.code) from None


def knowledge_base_create(
    *,
    owner,
    name,
    description="",
    shared=False,
    embedding_model=None,
    chunk_tokens=None,
    chunk_overlap=None,
    ranking: dict | None = None,
) -> KnowledgeBase:
    """A new base pinning its chunk settings (those in force unless given) and its embedder (the
    bundled one unless `embedding_model` names an engine); `ranking`: some of RANKING_FIELDS."""
    if not isinstance(shared, bool):
        raise KnowledgeError("must be true or false", "shared")
    name = _text(name, "name", limit=MAX_NAME_CHARS, required=True)
    description = _text(description, "description", limit=MAX_DESCRIPTION_CHARS)
    chunk_tokens, chunk_overlap = _chunk_settings(chunk_tokens, chunk_overlap)
    embedding_model, dimension = embedder_choice(embedding_model or EMBEDDING_MODEL)
    with transaction.atomic():
        knowledge_base = KnowledgeBase.objects.create(
            owner=owner,
            name=name,
            description=description,
            shared=shared,
            embedding_model=embedding_model,
            dimension=dimension,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            fusion_weight=settings.KNOWLEDGE_FUSION_WEIGHT,
        )
        if ranking:
            knowledge_base_ranking_update(user=owner, knowledge_base=knowledge_base, **ranking)
    return knowledge_base


def _chunk_settings(chunk_tokens, chunk_overlap) -> tuple[int, int]:
    """A chunk size and overlap from a request (those in force where left out), checked."""
    chunk_tokens = _whole_number(
        settings.KNOWLEDGE_CHUNK_TOKENS if chunk_tokens in (None, "") else chunk_tokens,
        "chunk_tokens",
        low=MIN_CHUNK_TOKENS,
        high=MAX_CHUNK_TOKENS,
    )
    chunk_overlap = _whole_number(
        settings.KNOWLEDGE_CHUNK_OVERLAP if chunk_overlap in (None, "") else chunk_overlap,
        "chunk_overlap",
        low=0,
        high=chunk_tokens - 1,
    )
    return chunk_tokens, chunk_overlap


RANKING_FIELDS = ("fusion_weight", "collapse_duplicates", "rerank", "expand_query")


def knowledge_base_ranking_update(*, user, knowledge_base: KnowledgeBase, **fields) -> KnowledgeBase:
    """Change how searches rank the base (no rebuild: the index stays as it is). The owner only;
    fields left out (or None) keep their value."""
    require_owner(knowledge_base, user)
    changes = {}
    for name, value in fields.items():
        if name not in RANKING_FIELDS:
            raise KnowledgeError(f"is not a ranking setting (they are {', '.join(RANKING_FIELDS)})", name)
        if value is None:
            continue
        if name == "fusion_weight":
            try:
                changes[name] = float(number_in_range(value, low=0.0, high=1.0))
            except InputError as exc:
                raise KnowledgeError(str(exc), name) from None
        elif isinstance(value, bool):
            changes[name] = value
        else:
            raise KnowledgeError("must be true or false", name)
    if changes.get("rerank") and not engines.reranker_configured():
        raise KnowledgeError(
            "no reranker is configured: set KNOWLEDGE_RERANKER_URL (a TEI /rerank or a /v1/rerank endpoint)",
            "rerank",
        )
    if changes:
        for name, value in changes.items():
            setattr(knowledge_base, name, value)
        knowledge_base.save(update_fields=list(changes))
        # Its retrieval tests measured again with the new ranking (retrieval_tests.version_of).
        knowledge_base_id = knowledge_base.pk
        transaction.on_commit(lambda: retrieval_tests.measurements_queue_for(knowledge_base_id))
    return knowledge_base


def require_owner(knowledge_base: KnowledgeBase, user) -> None:
    if knowledge_base.owner_id != user.pk:
        raise Forbidden("Only the owner of this knowledge base can change its documents.")


def knowledge_base_delete(*, user, knowledge_base: KnowledgeBase) -> None:
    require_owner(knowledge_base, user)
    knowledge_base_id = knowledge_base.pk
    with transaction.atomic():
        knowledge_base.delete()  # its documents, jobs and chunks (and, by trigger, their keyword index)
        transaction.on_commit(lambda: storage.remove_folder(knowledge_base_id))


def _file_name(raw_name) -> str:
    name = PurePath(str(raw_name or "").replace("\\", "/")).name.strip()
    name = "".join(ch for ch in name if ch.isprintable() and not unstorable_reason(ch))
    return name[:255] or "unnamed"


def storage_use(*, user) -> StorageUse:
    """The bytes of the files a person's documents keep (in every knowledge base they own)."""
    used = (
        Document.objects.filter(knowledge_base__owner=user).exclude(file="").aggregate(total=Sum("size"))["total"] or 0
    )
    return StorageUse(used=used, quota=settings.KNOWLEDGE_QUOTA_BYTES_PER_PERSON)


def quota_refusal(*, use: StorageUse, incoming: int) -> str:
    """The sentence of a refusal when `incoming` more bytes would not fit (else "")."""
    if not use.quota or use.used + incoming <= use.quota:
        return ""
    size = lambda count: filesizeformat(count).replace("\xa0", " ")  # as the pages say it  # noqa: E731
    return (
        f"This upload needs {size(incoming)}, and {size(use.available)} of your {size(use.quota)} for "
        "documents is left (KNOWLEDGE_QUOTA_BYTES_PER_PERSON): nothing was stored. Delete documents you no "
        "longer need, or upload fewer files."
    )


def documents_add(*, user, knowledge_base: KnowledgeBase, files) -> list[DocumentAdded]:
    """Store each uploaded file and queue its ingestion; nothing is parsed here. A file over
    KNOWLEDGE_MAX_FILE_BYTES, or of a kind the studio does not read, becomes a failed document with
    the reason, unread; the others go on. The same content as a document already in the base is
    that document (`duplicate`); if that one had failed, it is queued again with this file. The
    files to store must fit in what is left of their owner's quota, all together, or none is
    stored (QuotaExceeded)."""
    require_owner(knowledge_base, user)
    files = list(files)
    if not files:
        raise KnowledgeError("send one or more files (multipart/form-data fields named “file”)", "file")
    if len(files) > settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD:
        raise KnowledgeError(
            f"{len(files):,} files at once; at most {settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD:,}", "file"
        )
    # Checked before a file is stored, without a lock: each file's row commits on its own (a
    # transaction held while 200 MB are written would stop every other writer on SQLite), so two
    # uploads of one person at the same moment may pass it together, by one upload at most.
    incoming = sum(upload.size for upload in files if _storable(upload))  # a duplicate counts too: not read yet
    refusal = quota_refusal(use=storage_use(user=user), incoming=incoming)
    if refusal:
        raise QuotaExceeded(refusal, "file")
    added = [_document_add(user=user, knowledge_base=knowledge_base, upload=upload) for upload in files]
    queued = [
        item.document.pk
        for item in added
        if item.document.status == Document.Status.QUEUED and (not item.duplicate or item.retried)
    ]
    # One callback for the whole upload, after the commit: a job worker never looks for a row it cannot see yet.
    transaction.on_commit(lambda: [jobs.dispatch(IngestionJob, document_id) for document_id in queued])
    return added


def _storable(upload) -> bool:
    """Whether an upload will be stored (not refused unread by its name or declared size)."""
    try:
        kind_of(_file_name(getattr(upload, "name", "")))
    except DocumentError:
        return False
    return upload.size <= settings.KNOWLEDGE_MAX_FILE_BYTES


def _document_add(*, user, knowledge_base: KnowledgeBase, upload) -> DocumentAdded:
    name = _file_name(getattr(upload, "name", ""))
    common = {
        "knowledge_base": knowledge_base,
        "name": name,
        "size": upload.size,
        "uploaded_by": user,
        "content_type": str(getattr(upload, "content_type", "") or "")[:100],
    }
    try:
        kind = kind_of(name)
    except DocumentError as exc:
        return DocumentAdded(
            Document.objects.create(**common, status=Document.Status.FAILED, error=str(exc), error_code=exc.code), False
        )
    if upload.size > settings.KNOWLEDGE_MAX_FILE_BYTES:  # refused by its declared size, before a byte is read
        error = (
            f"too large: {upload.size / 2**20:,.1f} MiB; a document may be at most "
            f"{settings.KNOWLEDGE_MAX_FILE_BYTES / 2**20:,.1f} MiB (KNOWLEDGE_MAX_FILE_BYTES)"
        )
        return DocumentAdded(
            Document.objects.create(
                **common, kind=kind, status=Document.Status.FAILED, error=error, error_code="file_too_large"
            ),
            False,
        )
    path, content_hash = storage.store(upload, knowledge_base_id=knowledge_base.pk, kind=kind)
    existing = knowledge_base.documents.filter(content_hash=content_hash).first()
    if existing is None:
        try:
            with transaction.atomic():
                document = Document.objects.create(**common, kind=kind, content_hash=content_hash, file=path)
                IngestionJob.objects.create(document=document)
            return DocumentAdded(document, False)
        except IntegrityError:  # the same content in a simultaneous upload won the race: that one is it
            existing = knowledge_base.documents.get(content_hash=content_hash)
    if existing.status == Document.Status.FAILED and not existing.file:
        return DocumentAdded(_document_retry(existing, name=name, kind=kind, path=path), True, retried=True)
    if existing.file != path:  # the same bytes under another extension: one copy is enough
        storage.remove(path)
    return DocumentAdded(existing, True)


def _document_retry(document: Document, *, name: str, kind: str, path: str) -> Document:
    """A failed document (its file deleted) uploaded again: queued again with the new file, under the
    name and kind it has now."""
    with transaction.atomic():
        Document.objects.filter(pk=document.pk, status=Document.Status.FAILED).update(
            name=name,
            kind=kind,
            file=path,
            status=Document.Status.QUEUED,
            stage="",
            error="",
            error_code="",
            notes=[],
            pages=None,
            chunk_count=0,
            rebuilt_chunk_count=None,
            updated_at=timezone.now(),
        )
        IngestionJob.objects.update_or_create(
            document=document,
            defaults={
                "status": JobStatus.QUEUED,
                "done": 0,
                "total": 0,
                "note": "",
                "error": "",
                "cancel_requested": False,
                "worker": "",
                "dispatched_at": None,
                "started_at": None,
                "heartbeat_at": None,
                "finished_at": None,
                "attempts": 0,
            },
        )
    document.refresh_from_db()
    return document


def document_delete(*, user, document: Document) -> None:
    """Deleted with its chunks; a running ingestion finds its job gone and stops at its next batch."""
    knowledge_base = document.knowledge_base
    require_owner(knowledge_base, user)
    path = document.file
    with transaction.atomic():
        was_ready = document.status == Document.Status.READY
        document.delete()
        if was_ready:
            knowledge_base.chunks_changed()
        transaction.on_commit(lambda: storage.remove(path))
    rebuild_switch_if_built(knowledge_base.pk)  # it may have been the last one a rebuild waited for


def document_cancel(*, user, document: Document) -> None:
    """A queued ingestion is cancelled at once, a running one at its next batch; either way the
    document ends failed, saying it was cancelled, with no chunks."""
    require_owner(document.knowledge_base, user)
    job = IngestionJob.objects.filter(pk=document.pk).first()
    if job is None or not job.active:
        raise KnowledgeError("this document is not being processed", "status")
    if document.status == Document.Status.READY:
        raise KnowledgeError(
            "this document is being indexed again by a rebuild of its knowledge base; it stays searchable meanwhile",
            "status",
        )
    with transaction.atomic():
        jobs.job_cancel(job)
        if job.status == JobStatus.CANCELLED and document.status == Document.Status.QUEUED:  # it was still queued
            document_fail(document.pk, CANCELLED, code="cancelled")
    document.refresh_from_db()


def _whole_number(value, field: str, *, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise KnowledgeError("must be a whole number", field)
    if not low <= value <= high:
        raise KnowledgeError(f"must be from {low:,} to {high:,}", field)
    return value


def knowledge_base_rebuild(
    *, user, knowledge_base: KnowledgeBase, chunk_tokens=None, chunk_overlap=None, embedding_model=None
) -> int:
    """Index every document again with new settings (by default those in force now:
    KNOWLEDGE_CHUNK_TOKENS, KNOWLEDGE_CHUNK_OVERLAP, and the base's own embedder; `embedding_model`
    may name one tuned for this base, or the bundled one again: _building_embedder), in the background:
    the chunks go to a new generation while the active one keeps answering searches, and the
    switch happens when every ready document has its new chunks (rebuild_switch_if_built). Returns
    how many documents were queued."""
    require_owner(knowledge_base, user)
    chunk_tokens, chunk_overlap = _chunk_settings(chunk_tokens, chunk_overlap)
    building_embedder = _building_embedder(knowledge_base, embedding_model)
    with transaction.atomic():
        # Locked: two rebuilds asked at once start one, and no switch-over runs meanwhile.
        locked = KnowledgeBase.objects.select_for_update().get(pk=knowledge_base.pk)
        if locked.rebuilding:
            raise KnowledgeError("a rebuild is already running: wait for it to finish", "status", status=409)
        if IngestionJob.objects.filter(document__knowledge_base=knowledge_base, status__in=jobs.ACTIVE).exists():
            raise KnowledgeError(
                "documents are still being indexed: wait for them (or cancel them) first", "status", status=409
            )
        generation = locked.active_generation + 1
        # Chunks of an earlier generation (none in the steady state) never come back.
        Chunk.objects.filter(knowledge_base=knowledge_base).exclude(generation=locked.active_generation).delete()
        KnowledgeBase.objects.filter(pk=knowledge_base.pk).update(
            building_generation=generation,
            building_chunk_tokens=chunk_tokens,
            building_chunk_overlap=chunk_overlap,
            building_embedding_model=building_embedder,
        )
        # Failed ones kept no file: they stay failed (uploading the file again retries one).
        documents = knowledge_base.documents.exclude(status=Document.Status.FAILED)
        documents.update(rebuilt_chunk_count=None)
        document_ids = list(documents.values_list("pk", flat=True))
        # Ready ones stay ready (searched through their active chunks).
        documents.exclude(status=Document.Status.READY).update(
            status=Document.Status.QUEUED, stage="", error="", notes=[], updated_at=timezone.now()
        )
        IngestionJob.objects.bulk_create(
            [IngestionJob(document_id=document_id) for document_id in document_ids], ignore_conflicts=True
        )  # a document stored without one (generated)
        IngestionJob.objects.filter(pk__in=document_ids).update(
            status=JobStatus.QUEUED,
            done=0,
            total=0,
            note="",
            error="",
            cancel_requested=False,
            worker="",
            dispatched_at=None,
            started_at=None,
            heartbeat_at=None,
            finished_at=None,
            attempts=0,
        )
        transaction.on_commit(lambda: [jobs.dispatch(IngestionJob, document_id) for document_id in document_ids])
    rebuild_switch_if_built(knowledge_base.pk)  # nothing to index: switched at once
    knowledge_base.refresh_from_db()
    return len(document_ids)


def _building_embedder(knowledge_base: KnowledgeBase, asked) -> str:
    """The embedder a rebuild changes the base to, "" when it keeps its own. A base may change to an
    embedder tuned for it ("tuned:<id>", finetune/: its files must be there, and tuned for this base),
    and from a tuned one back to the bundled model; anything else keeps the base's embedder
    (_require_embedder_kept)."""
    pinned = knowledge_base.embedding_model
    if asked in (None, "") or asked == pinned:
        if tuned_embedders.is_tuned(pinned):
            _tuned_dimension(knowledge_base, pinned)  # its files are still there
            return ""
    elif tuned_embedders.is_tuned(asked):
        if _tuned_dimension(knowledge_base, asked) != knowledge_base.dimension:
            raise KnowledgeError(
                f"{asked} gives vectors of another size than this knowledge base's ({knowledge_base.dimension})",
                "embedding_model",
            )
        return asked
    elif asked == EMBEDDING_MODEL and tuned_embedders.is_tuned(pinned):
        return EMBEDDING_MODEL  # back to the bundled model it was tuned from
    _require_embedder_kept(knowledge_base, asked)
    return ""


def _tuned_dimension(knowledge_base: KnowledgeBase, embedding_model: str) -> int:
    try:
        return tuned_embedders.dimension_for(embedding_model, knowledge_base.pk)
    except StudioError as exc:
        raise KnowledgeError(exc.message, "embedding_model", status=409, code=exc.code) from None


def _require_embedder_kept(knowledge_base: KnowledgeBase, asked) -> None:
    """A rebuild keeps the base's embedder (asked by its name, or not at all). An engine's is asked
    for its dimension first: an engine that is down, or now gives another dimension, is refused here
    rather than failing every document of the base."""
    if asked in (None, "") and knowledge_base.embedding_model == EMBEDDING_MODEL:
        return
    embedding_model, dimension = embedder_choice(asked or knowledge_base.embedding_model)
    if embedding_model != knowledge_base.embedding_model:
        raise KnowledgeError(
            f"this knowledge base embeds with {knowledge_base.embedding_model}; a rebuild keeps it (to use "
            f"{embedding_model}, create a knowledge base with it)",
            "embedding_model",
        )
    if dimension != knowledge_base.dimension:
        raise KnowledgeError(
            f"{embedding_model} now returns {dimension} numbers per text; this knowledge base was built with "
            f"{knowledge_base.dimension}: point the engine back at its model, or create a knowledge base with it",
            "embedding_model",
        )


def knowledge_base_rebuild_cancel(*, user, knowledge_base: KnowledgeBase) -> None:
    """Stop a rebuild: the index in use keeps answering as it did, with its settings; the passages
    written for the new one are deleted. Documents being indexed again for it stop at their next
    batch and stay ready. A document that was not ready (uploaded during the rebuild, or failed
    before it) goes on being indexed, for the index in use."""
    require_owner(knowledge_base, user)
    with transaction.atomic():
        locked = KnowledgeBase.objects.select_for_update().get(pk=knowledge_base.pk)
        if not locked.rebuilding:
            raise KnowledgeError("no rebuild is running", "status", status=409)
        # The ready documents' rows locked: a batch of their new passages being written finishes
        # before this, or waits and then finds its job ended (ingestion's locked_and_mine).
        ready = list(
            Document.objects.select_for_update()
            .filter(knowledge_base=knowledge_base, status=Document.Status.READY)
            .values_list("pk", flat=True)
        )
        # Ended here, not asked to cancel: a cancelled ingestion fails its document, and these stay ready.
        IngestionJob.objects.filter(pk__in=ready, status__in=jobs.ACTIVE).update(
            status=JobStatus.CANCELLED, note="rebuild cancelled", finished_at=timezone.now()
        )
        Chunk.objects.filter(knowledge_base=knowledge_base).exclude(generation=locked.active_generation).delete()
        knowledge_base.documents.update(rebuilt_chunk_count=None)
        KnowledgeBase.objects.filter(pk=knowledge_base.pk).update(
            building_generation=None,
            building_chunk_tokens=None,
            building_chunk_overlap=None,
            building_embedding_model="",
        )
    log.info("knowledge base %s: rebuild cancelled", knowledge_base.pk)
    knowledge_base.refresh_from_db()


def rebuild_switch_if_built(knowledge_base_id: int) -> bool:
    """Switch a rebuild over when it is complete: no document of the base is being indexed and
    every ready one has its chunks in the building generation. One transaction makes the building
    generation the active one (with its settings), counts the new chunks and deletes the old ones,
    so a search reads one generation or the other, never a mix. True when it switched."""
    if not KnowledgeBase.objects.filter(pk=knowledge_base_id, building_generation__isnull=False).exists():
        return False  # the usual case: one query
    with transaction.atomic():
        # Locked: the last two documents of a rebuild ending at once switch it once.
        knowledge_base = KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base_id).first()
        if knowledge_base is None or not knowledge_base.rebuilding:
            return False
        documents = knowledge_base.documents
        if (
            IngestionJob.objects.filter(document__knowledge_base=knowledge_base, status__in=jobs.ACTIVE).exists()
            or documents.filter(status=Document.Status.READY, rebuilt_chunk_count__isnull=True).exists()
        ):
            return False
        generation = knowledge_base.building_generation
        Chunk.objects.filter(knowledge_base=knowledge_base).exclude(generation=generation).delete()
        documents.filter(status=Document.Status.READY).update(
            chunk_count=F("rebuilt_chunk_count"), rebuilt_chunk_count=None
        )
        documents.exclude(status=Document.Status.READY).update(rebuilt_chunk_count=None)
        KnowledgeBase.objects.filter(pk=knowledge_base.pk).update(
            active_generation=generation,
            building_generation=None,
            chunk_tokens=knowledge_base.building_chunk_tokens,
            chunk_overlap=knowledge_base.building_chunk_overlap,
            building_chunk_tokens=None,
            building_chunk_overlap=None,
            # The embedder of the generation that answers now.
            embedding_model=knowledge_base.embedder_for(generation),
            building_embedding_model="",
        )
        knowledge_base.chunks_changed()
        # Its retrieval tests' figures were for the old index: measured again, in the background.
        transaction.on_commit(lambda: retrieval_tests.measurements_queue_for(knowledge_base_id))
    log.info("knowledge base %s: rebuilt, generation %s answers now", knowledge_base_id, generation)
    return True


def document_fail(document_id: int, error: str, *, code: str) -> None:
    """The document failed: its reason kept (a sentence and a code), its chunks gone (of every
    generation: a document that fails during a rebuild leaves search, as any failed one), and its
    file deleted once this commits (it would only take its owner's storage; uploading the same file
    again retries it)."""
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            return
        was_ready = document.status == Document.Status.READY
        document.chunks.all().delete()
        Document.objects.filter(pk=document_id).update(
            status=Document.Status.FAILED,
            stage="",
            error=error,
            error_code=code[:32],
            chunk_count=0,
            rebuilt_chunk_count=None,
            file="",
            updated_at=timezone.now(),
        )
        if was_ready:
            document.knowledge_base.chunks_changed()
        path = document.file
        transaction.on_commit(lambda: storage.remove(path))


def ingestion_sweep() -> None:
    """The sweeper's part (studio.sweeping): ingestions the job queue never got are sent again, and
    those whose job worker died (heartbeat older than JOB_HEARTBEAT_TIMEOUT_SECONDS) are queued
    again to resume (the chunks they stored are kept), up to MAX_ATTEMPTS deliveries; then failed.
    Each change is a conditional update, so sweepers running at once act once."""
    for job_id in IngestionJob.objects.filter(status=JobStatus.QUEUED, dispatched_at=None).values_list("pk", flat=True):
        jobs.dispatch(IngestionJob, job_id)
    stale = timezone.now() - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    lost = IngestionJob.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale)
    for job_id, attempts, stage in lost.values_list("pk", "attempts", "document__stage"):
        still_lost = IngestionJob.objects.filter(pk=job_id, status=JobStatus.RUNNING, heartbeat_at__lt=stale)
        if stage == "parsing":
            # Reading the file beats the heart too (every PDF page, every 100,000 XML elements of a
            # .docx): a worker lost there most likely died of the file, and would again.
            if still_lost.update(
                status=JobStatus.FAILED, error=WORKER_LOST_READING, note="", finished_at=timezone.now()
            ):
                document_fail(job_id, WORKER_LOST_READING, code="worker_lost_reading")
        elif attempts < MAX_ATTEMPTS:
            if still_lost.update(
                status=JobStatus.QUEUED, dispatched_at=None, worker="", note="resuming: its job worker stopped"
            ):
                Document.objects.filter(pk=job_id, status=Document.Status.PROCESSING).update(
                    status=Document.Status.QUEUED, stage=""
                )
                jobs.dispatch(IngestionJob, job_id)
        else:
            error = (
                f"The job worker stopped {attempts} times while indexing this document (killed, or out of "
                "memory): it was not indexed. Split it, or upload it again when the workers have more memory."
            )
            if still_lost.update(status=JobStatus.FAILED, error=error, note="", finished_at=timezone.now()):
                document_fail(job_id, error, code="worker_lost")
    # A rebuild whose last document ended where the switch could not run (a worker that died).
    for knowledge_base_id in KnowledgeBase.objects.filter(building_generation__isnull=False).values_list(
        "pk", flat=True
    ):
        rebuild_switch_if_built(knowledge_base_id)
