"""The notice of an upload follows its documents (issue 25: "3 documents queued." stayed after all
three were ready): it polls while one is queued or being indexed, then says how they ended and
stops; only someone who may see the base reads it."""

import re

import pytest
from django.test import Client

from knowledge.ingestion import ingest_document
from knowledge.models import Document
from knowledge.selectors import parse_id_ranges

from .conftest import upload

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def poll_url(page: str) -> str:
    found = re.search(r'id="upload-progress"[^>]*hx-get="([^"]+)"[^>]*hx-trigger="every 2s" hx-target="this"', page)
    return found.group(1).replace("&amp;", "&") if found else ""


def test_the_upload_notice_says_how_its_documents_end_and_stops_polling(alice, bob, handbook, monkeypatch):
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: None)
    client = client_for(alice)
    page = client.post(
        f"/knowledge/{handbook.pk}/documents/upload/",
        {"file": [upload("a.md", "# A\n\nAlpha."), upload("b.md", "# B\n\nBeta."), upload("c.pdf", b"not a pdf")]},
        **HTMX,
    ).content.decode()
    assert "3 documents queued." in page
    url = poll_url(page)
    ids = list(Document.objects.order_by("pk").values_list("pk", flat=True))
    assert url == f"/knowledge/{handbook.pk}/documents/uploaded/?ids={ids[0]}-{ids[2]}"

    ingest_document(ids[0])
    midway = client.get(url, **HTMX).content.decode()
    assert "3 documents: 1 ready, 2 still being indexed." in midway and poll_url(midway) == url

    ingest_document(ids[1])
    ingest_document(ids[2])  # not a PDF: fails
    done = client.get(url, **HTMX).content.decode()
    assert "3 documents done: 2 ready, 1 failed (the list says why)." in done
    assert "queued" not in done and "hx-trigger" not in done  # the notice stops polling

    assert client_for(bob).get(url, **HTMX).status_code == 404  # alice's private base: not bob's to follow


def test_all_ready_is_said_so():
    from knowledge.selectors import UploadProgress

    assert UploadProgress(document_ids=[1, 2, 3], ready=3, failed=0, waiting=0).sentence == "3 documents ready."
    assert UploadProgress(document_ids=[1], ready=1, failed=0, waiting=0).sentence == "The document is ready."


def test_the_ids_travel_as_short_ranges_and_are_read_within_bounds():
    from knowledge.selectors import UploadProgress

    assert UploadProgress(document_ids=[7, 3, 4, 5, 9], ready=0, failed=0, waiting=5).id_ranges == "3-5,7,9"
    assert parse_id_ranges("3-5,7,9") == [3, 4, 5, 7, 9]
    assert parse_id_ranges("1-99999999999,x,-3,5-") == list(range(1, 1001))  # at most a thousand
    assert parse_id_ranges("<script>") == []
