"""A document that fails keeps its row and reason (a sentence and a code) but not its file (issue
25: failed uploads kept 586 MB); one refused for its size is never read again (not by the sweeper,
not by a rebuild); a job worker lost while reading a file fails it instead of trying again; the same
file uploaded again tries it again."""

import functools
from datetime import timedelta

import pytest
from django.utils import timezone

from knowledge import services
from knowledge.ingestion import ingest_document, ingest_next_document
from knowledge.models import Document, IngestionJob
from knowledge.parsing import Limits, parse
from studio.jobs import JobStatus

from .conftest import upload
from .test_bounded_reading import empty_paragraphs, word_file

pytestmark = pytest.mark.django_db


def stored_file(document: Document):
    return services.storage.files_dir() / document.file


def test_a_document_that_fails_loses_its_file_and_keeps_its_reason(handbook, alice, django_capture_on_commit_callbacks):
    (added,) = services.documents_add(
        user=alice, knowledge_base=handbook, files=[upload("photo.pdf", b"\x89PNG\r\n\x1a\n not a pdf" * 1000)]
    )
    path = stored_file(added.document)
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        ingest_document(added.document.pk)
    document = Document.objects.get(pk=added.document.pk)
    assert document.status == "failed" and document.error_code == "not_pdf" and "not a PDF" in document.error
    assert document.file == "" and not path.exists() and document.size == 18_000  # the row says what it was
    assert services.storage_use(user=alice).used == 0
    assert document.to_dict()["error_code"] == "not_pdf"


def test_a_document_refused_for_its_size_is_never_read_again(
    handbook, alice, monkeypatch, settings, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("knowledge.ingestion.Limits", functools.partial(Limits, max_xml_elements=10_000))
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append(job_id))
    reads = []
    monkeypatch.setattr("knowledge.ingestion.parse", lambda *args, **kwargs: reads.append(1) or parse(*args, **kwargs))

    (added,) = services.documents_add(
        user=alice, knowledge_base=handbook, files=[upload("empty.docx", word_file(empty_paragraphs(30_000)))]
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest_next_document()
    document = Document.objects.get(pk=added.document.pk)
    assert document.status == "failed" and document.error_code == "too_many_elements" and document.file == ""
    job = IngestionJob.objects.get(pk=document.pk)
    assert job.status == JobStatus.FAILED and reads == [1]

    # Not by the sweeper (even once its heartbeat is long stale), nor by the next delivery, nor by a rebuild.
    IngestionJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    services.ingestion_sweep()
    ingest_next_document()
    assert services.knowledge_base_rebuild(user=alice, knowledge_base=handbook) == 0
    ingest_next_document()
    document.refresh_from_db()
    assert document.status == "failed" and reads == [1] and dispatched == []


def test_a_job_worker_lost_while_reading_a_file_fails_it_without_a_retry(handbook, alice, monkeypatch, settings):
    """Reading beats the heart (every PDF page, every 100,000 XML elements): a worker that stopped
    beating while it read most likely died of the file (out of memory), and would again."""
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 60
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append(job_id))
    reading, embedding = services.documents_add(
        user=alice, knowledge_base=handbook, files=[upload("huge.docx", b"PK..."), upload("long.md", "# Long\n\ntext")]
    )
    stale = timezone.now() - timedelta(seconds=61)
    for item, stage in ((reading, "parsing"), (embedding, "embedding")):
        IngestionJob.objects.filter(pk=item.document.pk).update(
            status=JobStatus.RUNNING, heartbeat_at=stale, attempts=1
        )
        Document.objects.filter(pk=item.document.pk).update(status="processing", stage=stage)
    services.ingestion_sweep()
    lost = Document.objects.get(pk=reading.document.pk)
    assert lost.status == "failed" and lost.error_code == "worker_lost_reading" and "not tried again" in lost.error
    assert IngestionJob.objects.get(pk=lost.pk).status == JobStatus.FAILED
    # One lost while embedding still resumes (its chunks so far are kept).
    assert Document.objects.get(pk=embedding.document.pk).status == "queued"
    assert dispatched == [embedding.document.pk]


def test_the_same_file_uploaded_again_tries_a_failed_document_again(handbook, alice, ingest):
    (failed,) = ingest(handbook, alice, [upload("notes.md", "")])  # empty: fails
    assert failed.status == "failed" and failed.error_code == "empty" and failed.file == ""
    (again,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("notes-v2.md", "")])
    assert again.duplicate and again.retried and again.document.pk == failed.pk
    document = Document.objects.get(pk=failed.pk)
    assert document.status == "queued" and document.name == "notes-v2.md" and document.error == "" and document.file
    assert IngestionJob.objects.get(pk=failed.pk).status == JobStatus.QUEUED


def test_a_cancelled_document_loses_its_file(handbook, alice, django_capture_on_commit_callbacks):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "# A\n\ntext")])
    path = stored_file(added.document)
    with django_capture_on_commit_callbacks(execute=True):
        services.document_cancel(user=alice, document=added.document)
    assert added.document.error_code == "cancelled" and added.document.file == "" and not path.exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_deletes_the_files_of_documents_that_had_failed(alice, knowledge_files):
    """Documents that failed before this change kept their files: the migration deletes those
    files, keeps their rows and reasons, and leaves every other document's file alone."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("knowledge", "0004_keyword_column")])
    old_apps = executor.loader.project_state([("knowledge", "0004_keyword_column")]).apps
    KnowledgeBase = old_apps.get_model("knowledge", "KnowledgeBase")
    OldDocument = old_apps.get_model("knowledge", "Document")
    base = KnowledgeBase.objects.create(
        owner_id=alice.pk, name="Old", embedding_model="m", dimension=384, chunk_tokens=200, chunk_overlap=30
    )
    folder = knowledge_files / f"kb-{base.pk}"
    folder.mkdir(parents=True)
    for name in ("failed.pdf", "ready.md"):
        (folder / name).write_bytes(b"x" * 100)
    OldDocument.objects.create(
        knowledge_base=base,
        name="failed.pdf",
        status="failed",
        error="not a PDF",
        file=f"kb-{base.pk}/failed.pdf",
        content_hash="a",
        size=100,
    )
    OldDocument.objects.create(
        knowledge_base=base, name="ready.md", status="ready", file=f"kb-{base.pk}/ready.md", content_hash="b", size=100
    )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    failed, ready = Document.objects.get(name="failed.pdf"), Document.objects.get(name="ready.md")
    assert failed.file == "" and failed.error == "not a PDF" and not (folder / "failed.pdf").exists()
    assert ready.file and (folder / "ready.md").exists()
