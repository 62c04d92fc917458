"""Ingestion yields to chat: between embedding batches it waits while chat replies are being
written (studio.chat_activity, which the chat app answers), saying so in its job's note, and goes
on when they are done; a cancel still stops it while it waits."""

import pytest

from knowledge import ingestion, services
from knowledge.models import IngestionJob
from studio import chat_activity
from studio.jobs import JobStatus

from .conftest import upload
from .test_ingestion import LONG_MARKDOWN

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat(monkeypatch, settings):
    """Chat's answer, played by the test: replies are in progress while `busy` has turns left."""
    state = {"busy": 0, "notes": [], "meanwhile": lambda: None}

    def replies_in_progress():
        if state["busy"]:
            state["busy"] -= 1
            state["meanwhile"]()
            return True
        return False

    monkeypatch.setattr(chat_activity, "_check", replies_in_progress)
    settings.JOB_HEARTBEAT_SECONDS = 0.01  # how often a paused ingestion looks again
    monkeypatch.setattr(ingestion, "_has_gpu", lambda: False)
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: None)
    real_progress = ingestion.job_progress

    def progress(job, **fields):
        state["notes"].append(fields.get("note"))
        return real_progress(job, **fields)

    monkeypatch.setattr(ingestion, "job_progress", progress)
    return state


def test_it_pauses_between_batches_while_chat_replies_are_written(handbook, alice, chat, monkeypatch):
    monkeypatch.setattr(ingestion, "EMBED_BATCH", 4)
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("long.md", LONG_MARKDOWN)])
    chat["busy"] = 3
    ingestion.ingest_document(added.document.pk)
    added.document.refresh_from_db()
    assert added.document.status == "ready"
    assert chat["notes"].count(ingestion.PAUSED) == 3 and chat["busy"] == 0
    # It paused before embedding a batch, after the embedder was loaded.
    assert chat["notes"].index(ingestion.PAUSED) > max(
        i for i, note in enumerate(chat["notes"]) if note and note.startswith("embedding 0 of")
    )


def test_a_cancel_stops_it_while_it_waits(handbook, alice, chat):
    (added,) = services.documents_add(user=alice, knowledge_base=handbook, files=[upload("long.md", LONG_MARKDOWN)])
    chat["busy"] = 10**9  # chat never lets go
    chat["meanwhile"] = lambda: (
        ingestion.PAUSED in chat["notes"]  # a person cancels while it waits
        and services.document_cancel(user=alice, document=added.document)
    )
    ingestion.ingest_document(added.document.pk)
    added.document.refresh_from_db()
    assert added.document.status == "failed" and added.document.error == services.CANCELLED
    assert ingestion.PAUSED in chat["notes"]
    assert IngestionJob.objects.get(pk=added.document.pk).status == JobStatus.CANCELLED


def test_nothing_waits_where_chat_registered_nothing(monkeypatch):
    monkeypatch.setattr(chat_activity, "_check", None)
    assert chat_activity.replies_in_progress() is False
