"""Documents ingested as a job worker ingests them (the Celery task's function, on the real
embedder): progress, a bad file failing alone, cancel, deletion midway, and a job whose worker died
resumed from the chunks it stored."""

from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from knowledge import services
from knowledge.ingestion import ingest_document
from knowledge.models import Chunk, Document, IngestionJob
from studio.jobs import JobStatus
from studio.llm.embeddings import load_embedder

from .conftest import docx_bytes, pdf_bytes, upload

pytestmark = pytest.mark.django_db

LONG_MARKDOWN = "# Long guide\n\n" + "\n\n".join(
    f"## Step {n}\n\n" + f"In step {n} the operator checks valve {n} and writes the pressure in the log. " * 12
    for n in range(1, 9)
)


def keyword_rows(chunk_ids):
    with connection.cursor() as cursor:
        ids = ", ".join(str(i) for i in chunk_ids) or "0"
        cursor.execute(
            f"SELECT rowid FROM knowledge_chunk_fts WHERE knowledge_chunk_fts MATCH 'valve' AND rowid IN ({ids})"
        )
        return {row[0] for row in cursor.fetchall()}


def test_a_pdf_a_word_document_and_markdown_become_ready_with_their_chunks(handbook, alice, ingest):
    pdf, word, markdown = ingest(
        handbook,
        alice,
        [
            upload("hours.pdf", pdf_bytes(["Opening hours: 9 to 5", "Closed on Sundays"])),
            upload(
                "parts.docx",
                docx_bytes(
                    heading="Parts", paragraphs=["Spare parts list."], table=[["Part", "Code"], ["Valve", "ZX-4411"]]
                ),
            ),
            upload("guide.md", LONG_MARKDOWN),
        ],
    )
    assert [d.status for d in (pdf, word, markdown)] == ["ready"] * 3
    assert pdf.pages == 2 and [(c.page, c.text) for c in pdf.chunks.all()] == [
        (1, "Opening hours: 9 to 5"),
        (2, "Closed on Sundays"),
    ]
    assert "| Valve | ZX-4411 |" in word.chunks.get().text and word.chunks.get().heading == "Parts"
    chunks = list(markdown.chunks.all())
    assert markdown.chunk_count == len(chunks) > 4 and all(c.token_count <= 256 for c in chunks)
    assert {c.heading for c in chunks} >= {"Long guide", "Long guide › Step 2", "Long guide › Step 8"}
    # The stored vector is the embedder's, float32, of the chunk's heading trail and its text.
    first = np.frombuffer(chunks[0].embedding, dtype="<f4")
    embedded = f"{chunks[0].heading}\n\n{chunks[0].text}"
    assert first.shape == (384,) and np.allclose(first, load_embedder().embed([embedded])[0].numpy(), atol=1e-5)
    # The keyword index followed the inserts (by trigger).
    assert keyword_rows([c.pk for c in chunks]) == {c.pk for c in chunks if "valve" in c.text.lower()}
    job = IngestionJob.objects.get(pk=markdown.pk)
    assert job.status == JobStatus.FINISHED and job.done == job.total == len(chunks) and job.attempts == 1


def test_a_bad_file_fails_alone_with_its_reason(handbook, alice, ingest):
    good, encrypted, renamed = ingest(
        handbook,
        alice,
        [
            upload("good.md", "# Fine\n\nThis one is fine."),
            upload("locked.pdf", pdf_bytes(["secret"], password="pw")),
            upload("photo.pdf", b"\x89PNG\r\n\x1a\n not a pdf"),
        ],
    )
    assert good.status == "ready"
    assert encrypted.status == "failed" and "encrypted" in encrypted.error and not encrypted.chunks.exists()
    assert renamed.status == "failed" and "not a PDF" in renamed.error
    assert IngestionJob.objects.get(pk=encrypted.pk).status == JobStatus.FAILED


def test_a_text_that_is_not_utf8_is_indexed_with_its_note(handbook, alice, ingest):
    (document,) = ingest(handbook, alice, [upload("menu.txt", "Crème brûlée: 7 €".encode("cp1252"))])
    assert document.status == "ready" and "read as Windows-1252" in document.notes[0]
    assert document.chunks.get().text == "Crème brûlée: 7 €"


def test_cancel_of_a_queued_document_fails_it_at_once_and_the_job_never_runs(handbook, alice):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "# A\n\ntext")])
    services.document_cancel(user=alice, document=added.document)
    assert added.document.status == "failed" and added.document.error == services.CANCELLED
    ingest_document(added.document.pk)  # delivered anyway
    assert not Chunk.objects.exists() and IngestionJob.objects.get(pk=added.document.pk).status == JobStatus.CANCELLED


def test_cancel_while_embedding_stops_at_the_next_batch_and_keeps_no_chunks(handbook, alice, monkeypatch):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("long.md", LONG_MARKDOWN)])
    document = added.document
    embedder = load_embedder()
    calls = []

    def embed_then_cancel(texts):
        calls.append(len(texts))
        services.document_cancel(user=alice, document=document)  # a person presses cancel meanwhile
        return type(embedder).embed(embedder, texts)

    monkeypatch.setattr("knowledge.ingestion.EMBED_BATCH", 2)
    monkeypatch.setattr(embedder, "embed", embed_then_cancel)
    ingest_document(document.pk)
    document.refresh_from_db()
    assert len(calls) == 1 and document.status == "failed" and document.error == services.CANCELLED
    assert not document.chunks.exists() and IngestionJob.objects.get(pk=document.pk).status == JobStatus.CANCELLED


def test_a_document_deleted_while_it_is_embedded_stops_quietly(handbook, alice, monkeypatch):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("long.md", LONG_MARKDOWN)])
    embedder = load_embedder()

    def embed_then_delete(texts):
        services.document_delete(user=alice, document=Document.objects.get(pk=added.document.pk))
        return type(embedder).embed(embedder, texts)

    monkeypatch.setattr(embedder, "embed", embed_then_delete)
    ingest_document(added.document.pk)
    assert not Document.objects.exists() and not Chunk.objects.exists() and not IngestionJob.objects.exists()


def test_a_job_whose_worker_died_is_resumed_from_the_chunks_it_stored(handbook, alice, monkeypatch, settings):
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 60
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("long.md", LONG_MARKDOWN)])
    document = added.document
    monkeypatch.setattr("knowledge.ingestion.EMBED_BATCH", 3)
    embedder = load_embedder()
    embedded = []

    def embed_then_die(texts):
        if len(embedded) == 2:
            raise SystemExit("killed")  # the worker process dies: nothing after this line runs
        embedded.append(texts)
        return type(embedder).embed(embedder, texts)

    monkeypatch.setattr(embedder, "embed", embed_then_die)
    with pytest.raises(SystemExit):
        ingest_document(document.pk)
    job = IngestionJob.objects.get(pk=document.pk)
    assert job.status == JobStatus.RUNNING and job.done == 6 and document.chunks.count() == 6
    stored = {c.ordinal: c.pk for c in document.chunks.all()}

    IngestionJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append(job_id))
    services.ingestion_sweep()
    job.refresh_from_db()
    document.refresh_from_db()
    assert job.status == JobStatus.QUEUED and dispatched == [document.pk] and document.status == "queued"

    monkeypatch.setattr(
        embedder, "embed", lambda texts: embedded.append(texts) or type(embedder).embed(embedder, texts)
    )
    ingest_document(document.pk)
    document.refresh_from_db()
    assert document.status == "ready" and document.chunk_count == document.chunks.count() > 6
    assert {c.ordinal: c.pk for c in document.chunks.filter(ordinal__lt=6)} == stored  # kept, not embedded again
    assert sum(len(texts) for texts in embedded[2:]) == document.chunk_count - 6
    assert IngestionJob.objects.get(pk=document.pk).attempts == 2


def test_a_document_that_kills_its_worker_every_time_is_failed_after_three_tries(handbook, alice, monkeypatch):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "# A\n\ntext")])
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: None)
    stale = timezone.now() - timedelta(hours=1)
    IngestionJob.objects.filter(pk=added.document.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=stale, attempts=services.MAX_ATTEMPTS
    )
    Document.objects.filter(pk=added.document.pk).update(status="processing", stage="embedding")
    services.ingestion_sweep()
    document = Document.objects.get(pk=added.document.pk)
    assert document.status == "failed" and "stopped 3 times" in document.error
    assert IngestionJob.objects.get(pk=document.pk).status == JobStatus.FAILED


def test_a_queued_job_the_queue_never_got_is_sent_again(handbook, alice, monkeypatch):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "# A\n\ntext")])
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append((model.TASK, job_id)))
    services.ingestion_sweep()
    assert dispatched == [("knowledge.ingest", added.document.pk)]


def test_a_rebuild_pins_the_new_chunk_settings_and_ingests_every_document_again(
    handbook, alice, ingest, settings, django_capture_on_commit_callbacks, monkeypatch
):
    (document,) = ingest(handbook, alice, [upload("long.md", LONG_MARKDOWN)])
    before = document.chunk_count
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 60, 10
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append(job_id))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.knowledge_base_rebuild(user=alice, knowledge_base=handbook) == 1
    assert (handbook.building_chunk_tokens, handbook.building_chunk_overlap) == (60, 10) and dispatched == [document.pk]
    document.refresh_from_db()
    assert document.status == "ready"  # its current chunks answer until the switch
    ingest_document(document.pk)
    document.refresh_from_db()
    handbook.refresh_from_db()
    assert (handbook.chunk_tokens, handbook.chunk_overlap, handbook.rebuilding) == (60, 10, False)
    assert document.status == "ready" and document.chunk_count == document.chunks.count() > before
    assert max(document.chunks.values_list("token_count", flat=True)) <= 62


def test_a_rebuild_waits_for_documents_still_being_indexed(handbook, alice):
    services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "# A\n\ntext")])
    with pytest.raises(services.KnowledgeError, match="still being indexed"):
        services.knowledge_base_rebuild(user=alice, knowledge_base=handbook)
