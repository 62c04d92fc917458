"""The job workers take documents fairly between people (issue 25: one person's 1,000-file upload,
80 minutes of ingestion, held another's one-paragraph document queued for over five minutes): the
owner with the fewest being ingested goes first, then the one served least recently, then that
owner's oldest document; whichever document a delivery's message named."""

import pytest
from django.utils import timezone

from knowledge import services
from knowledge.ingestion import ingest_next_document
from knowledge.models import IngestionJob
from knowledge.selectors import next_ingestion
from knowledge.services import knowledge_base_create
from studio.jobs import JobStatus

from .conftest import upload

pytestmark = pytest.mark.django_db


def add(user, knowledge_base, count, prefix):
    return [
        item.document.pk
        for item in services.documents_add(
            user=user,
            knowledge_base=knowledge_base,
            files=[upload(f"{prefix}-{n}.md", f"# {prefix} {n}\n\nText {n}.") for n in range(count)],
        )
    ]


def take(document_id):
    """What a job worker does when it starts a document (the rest of its work does not matter here)."""
    now = timezone.now()
    IngestionJob.objects.filter(pk=document_id).update(status=JobStatus.RUNNING, started_at=now, heartbeat_at=now)


def finish(document_id):
    IngestionJob.objects.filter(pk=document_id).update(status=JobStatus.FINISHED, finished_at=timezone.now())


def test_one_persons_big_upload_alternates_with_anothers_single_file(handbook, alice, bob):
    alices = add(alice, handbook, 6, "manual")
    bobs = add(bob, knowledge_base_create(owner=bob, name="Bob's"), 1, "note")
    taken = []
    # One job worker: it takes a document, finishes it, takes the next.
    for _ in range(7):
        document_id = next_ingestion()
        taken.append(document_id)
        take(document_id)
        finish(document_id)
    assert next_ingestion() is None
    # alice's first (oldest), then bob's at once (served least recently), then the rest of alice's in order.
    assert taken == [alices[0], bobs[0], *alices[1:]]


def test_the_owner_with_fewer_documents_being_ingested_goes_first(handbook, alice, bob):
    alices = add(alice, handbook, 3, "manual")
    bobs = add(bob, knowledge_base_create(owner=bob, name="Bob's"), 2, "note")
    take(bobs[0])  # a second job worker is on bob's first
    assert next_ingestion() == alices[0]
    take(alices[0])
    finish(bobs[0])  # bob has none running now, alice one
    assert next_ingestion() == bobs[1]


def test_a_delivery_takes_the_fairest_document_not_the_one_its_message_named(handbook, alice, bob, monkeypatch):
    alices = add(alice, handbook, 3, "manual")
    take(alices[0])
    finish(alices[0])
    bobs = add(bob, knowledge_base_create(owner=bob, name="Bob's"), 1, "note")
    ingested = []
    monkeypatch.setattr("knowledge.ingestion.ingest_document", lambda document_id: ingested.append(document_id) or True)
    from knowledge.tasks import ingest_task

    ingest_task(alices[1])  # the message of alice's second file
    assert ingested == [bobs[0]]


def test_a_document_another_worker_claimed_first_is_passed_over(handbook, alice, monkeypatch):
    first, second = add(alice, handbook, 2, "manual")
    claimed = []

    def claim(document_id):  # another job worker took the first meanwhile
        claimed.append(document_id)
        if document_id == first:
            take(first)
            return False
        return True

    monkeypatch.setattr("knowledge.ingestion.ingest_document", claim)
    ingest_next_document()
    assert claimed == [first, second]
