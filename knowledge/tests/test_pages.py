"""The knowledge pages: the list and a new base, a base's documents (live while they are indexed),
uploads and deletes by the owner only, the search box, and a document's passages."""

import pytest
from django.test import Client

from knowledge.ingestion import ingest_document
from knowledge.models import Document, KnowledgeBase
from knowledge.services import documents_add, knowledge_base_create

from .conftest import pdf_bytes, upload

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shared_base(alice):
    return knowledge_base_create(owner=alice, name="Team wiki", description="Everyone reads it", shared=True)


@pytest.fixture
def no_dispatch(monkeypatch):
    """The job queue's sends, kept: the documents stay queued, as before a job worker takes them."""
    dispatched = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: dispatched.append(job_id))
    return dispatched


def test_it_lists_own_and_shared_bases_but_not_someone_elses_private_one(
    alice, bob, handbook, shared_base, django_assert_num_queries
):
    knowledge_base_create(owner=bob, name="Bob's notes")
    client = client_for(alice)
    client.get("/knowledge/")  # the session's first request loads the user
    with django_assert_num_queries(4):  # session, user, the bases with their counts, the storage they use
        page = client.get("/knowledge/").content.decode()
    assert "Handbook" in page and "Team wiki" in page and "Bob's notes" not in page
    assert "private" in page and "shared" in page and "0 of 0" in page
    bobs_page = client_for(bob).get("/knowledge/").content.decode()
    assert "Team wiki" in bobs_page and "Bob&#x27;s notes" in bobs_page and "Handbook" not in bobs_page


def test_it_needs_a_login(handbook):
    assert Client().get("/knowledge/").status_code == 302
    assert Client().get(f"/knowledge/{handbook.pk}/").status_code == 302


def test_it_creates_a_knowledge_base_and_opens_it(alice):
    answer = client_for(alice).post("/knowledge/", {"name": "Manuals", "description": "Press manuals", "shared": "on"})
    knowledge_base = KnowledgeBase.objects.get(name="Manuals")
    assert answer.status_code == 302 and answer.url == f"/knowledge/{knowledge_base.pk}/"
    assert (knowledge_base.owner, knowledge_base.description, knowledge_base.shared) == (alice, "Press manuals", True)


def test_it_shows_a_bad_name_at_its_field(alice):
    answer = client_for(alice).post("/knowledge/", {"name": "  ", "description": "kept"})
    page = answer.content.decode()
    assert answer.status_code == 400 and not KnowledgeBase.objects.exists()
    assert 'id="kb-name-error"' in page and "must not be empty" in page and 'value="kept"' in page


def test_an_upload_through_the_page_queues_the_documents(
    alice, handbook, no_dispatch, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"/knowledge/{handbook.pk}/documents/upload/",
            {
                "file": [
                    upload("faq.md", "# FAQ\n\nAsk us."),
                    upload("notes.txt", "Plain notes."),
                    upload("setup.exe", b"MZ"),
                ]
            },
            **HTMX,
        )
    page = answer.content.decode()
    queued = list(Document.objects.filter(status=Document.Status.QUEUED).values_list("pk", flat=True))
    assert answer.status_code == 200 and len(queued) == 2 and sorted(no_dispatch) == sorted(queued)
    assert "2 documents queued." in page and "Refused: setup.exe" in page
    assert 'hx-swap-oob="true"' in page and 'hx-trigger="every 2s"' in page  # the list, polling, swapped in

    again = client.post(
        f"/knowledge/{handbook.pk}/documents/upload/", {"file": [upload("faq-copy.md", "# FAQ\n\nAsk us.")]}, **HTMX
    )
    assert "Already in this knowledge base (the same content): faq.md." in again.content.decode()
    assert Document.objects.count() == 3


def test_an_upload_without_files_is_refused_at_the_field(alice, handbook):
    answer = client_for(alice).post(f"/knowledge/{handbook.pk}/documents/upload/", {}, **HTMX)
    assert answer.status_code == 400 and 'id="upload-error"' in answer.content.decode()


def test_another_persons_private_base_is_not_found(bob, handbook):
    client = client_for(bob)
    assert client.get(f"/knowledge/{handbook.pk}/").status_code == 404
    assert client.get(f"/knowledge/{handbook.pk}/search/", {"q": "anything"}).status_code == 404
    assert (
        client.post(f"/knowledge/{handbook.pk}/documents/upload/", {"file": [upload("a.md", "a")]}).status_code == 404
    )


def test_a_shared_base_is_readable_but_not_changeable_by_others(alice, bob, shared_base, ingest):
    [document] = ingest(shared_base, alice, [upload("faq.md", "# FAQ\n\nThe office opens at nine.")])
    client = client_for(bob)
    page = client.get(f"/knowledge/{shared_base.pk}/").content.decode()
    assert "faq.md" in page and 'id="upload"' not in page and "Delete" not in page
    assert client.get(f"/knowledge/{shared_base.pk}/documents/{document.pk}/").status_code == 200
    refused = client.post(f"/knowledge/{shared_base.pk}/documents/upload/", {"file": [upload("b.md", "b")]})
    assert refused.status_code == 403
    assert client.post(f"/knowledge/{shared_base.pk}/documents/{document.pk}/delete/").status_code == 403
    assert Document.objects.filter(knowledge_base=shared_base).count() == 1


def test_the_owner_deletes_a_document(alice, handbook, ingest):
    [document] = ingest(handbook, alice, [upload("faq.md", "# FAQ\n\nThe office opens at nine.")])
    answer = client_for(alice).post(f"/knowledge/{handbook.pk}/documents/{document.pk}/delete/", **HTMX)
    assert answer.status_code == 200 and not Document.objects.exists() and "No documents yet" in answer.content.decode()


def test_the_search_box_shows_ranked_passages_with_their_scores(alice, bob, shared_base, ingest):
    ingest(
        shared_base,
        alice,
        [
            upload("hours.pdf", pdf_bytes(["Opening hours: 9 to 5 on weekdays", "Closed on Sundays and holidays"])),
            upload("parts.md", "# Parts\n\nValve ZX-4411 fits the model B press."),
        ],
    )
    answer = client_for(bob).get(
        f"/knowledge/{shared_base.pk}/search/", {"q": "ZX-4411", "mode": "hybrid", "k": "2"}, **HTMX
    )
    page = answer.content.decode()
    assert answer.status_code == 200 and page.startswith('<section class="card knowledge-search" id="search">')
    first = page.index("#1")
    assert "parts.md" in page[first:] and "Valve ZX-4411 fits the model B press." in page
    assert "keyword 0.9" in page and "vector 0.4" in page and "fused 0.03" in page and "keyword —" in page
    assert '<span class="muted">Parts</span>' in page and "page 1" in page  # its heading, the PDF's page

    whole = client_for(bob).get(f"/knowledge/{shared_base.pk}/search/", {"q": "closed on sunday", "mode": "bm25"})
    assert whole.status_code == 200 and "page 2" in whole.content.decode() and "<h1>" in whole.content.decode()


def test_the_search_box_shows_its_errors_at_the_fields(alice, handbook):
    client = client_for(alice)
    bad_mode = client.get(f"/knowledge/{handbook.pk}/search/", {"q": "x", "mode": "fuzzy"}, **HTMX)
    assert bad_mode.status_code == 400 and "must be one of hybrid, bm25, dense" in bad_mode.content.decode()
    bad_k = client.get(f"/knowledge/{handbook.pk}/search/", {"q": "x", "k": "many"}, **HTMX)
    assert bad_k.status_code == 400 and "must be a whole number" in bad_k.content.decode()


def test_the_list_polls_while_a_document_is_processing_and_stops_after(alice, handbook, no_dispatch):
    client = client_for(alice)
    [added] = documents_add(user=alice, knowledge_base=handbook, files=[upload("faq.md", "# FAQ\n\nAsk us.")])
    Document.objects.filter(pk=added.document.pk).update(status=Document.Status.PROCESSING, stage="embedding")
    busy = client.get(f"/knowledge/{handbook.pk}/documents/").content.decode()
    assert 'hx-trigger="every 2s"' in busy and ">embedding<" in busy

    Document.objects.filter(pk=added.document.pk).update(status=Document.Status.QUEUED, stage="")
    ingest_document(added.document.pk)
    done = client.get(f"/knowledge/{handbook.pk}/documents/").content.decode()
    assert "every" not in done and "hx-get" not in done and ">ready<" in done
    assert "every 2s" not in client.get(f"/knowledge/{handbook.pk}/").content.decode()


def test_a_failed_document_says_why(alice, handbook, ingest):
    ingest(handbook, alice, [upload("empty.md", "")])
    page = client_for(alice).get(f"/knowledge/{handbook.pk}/").content.decode()
    assert ">failed<" in page and Document.objects.get().error in page


def test_a_documents_passages_are_listed_fifty_a_page(alice, handbook, ingest):
    text = "\n\n".join(f"## Section {n}\n\n" + " ".join(f"word{n}x{i}" for i in range(120)) for n in range(20))
    [document] = ingest(handbook, alice, [upload("long.md", text)])
    assert document.chunk_count > 50
    client = client_for(alice)
    first = client.get(f"/knowledge/{handbook.pk}/documents/{document.pk}/").content.decode()
    assert "Page 1 of" in first and "Section 0" in first and first.count('<td class="knowledge-chunks__text">') == 50
    second = client.get(f"/knowledge/{handbook.pk}/documents/{document.pk}/", {"page": 2}).content.decode()
    assert second.count('<td class="knowledge-chunks__text">') == document.chunk_count - 50 > 0
    assert client_for(alice).get(f"/knowledge/{handbook.pk}/documents/999999/").status_code == 404


def test_the_upload_page_takes_as_much_as_the_upload_api(settings):
    from studio.request_limits import body_limit_for

    assert (
        body_limit_for("/knowledge/7/documents/upload/")
        == body_limit_for("/api/knowledge/7/documents/")
        > settings.KNOWLEDGE_MAX_UPLOAD_BYTES
    )
