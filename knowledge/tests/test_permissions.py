"""Who sees what: alice's private knowledge base is not found for bob (through the service and the
API); a shared one he searches but cannot change."""

import pytest
from django.test import Client

from accounts.services import api_token_create
from knowledge import services
from knowledge.search import search
from knowledge.selectors import knowledge_bases_for
from studio.errors import Forbidden, NotFound

from .conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared_base(alice, ingest):
    knowledge_base = services.knowledge_base_create(owner=alice, name="Team handbook", shared=True)
    ingest(knowledge_base, alice, [upload("leave.md", "# Leave\n\nEveryone gets 30 days of vacation.")])
    return knowledge_base


@pytest.fixture
def private_base(alice, ingest):
    knowledge_base = services.knowledge_base_create(owner=alice, name="Alice's notes")
    ingest(knowledge_base, alice, [upload("salary.md", "# Salary\n\nMy salary review is in March.")])
    return knowledge_base


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def test_bob_cannot_search_alices_private_knowledge_base(bob, private_base):
    with pytest.raises(NotFound):
        search(user=bob, knowledge_base=private_base, query="salary")
    answer = Client().post(
        f"/api/knowledge/{private_base.pk}/search/", {"query": "salary"}, content_type="application/json", **bearer(bob)
    )
    assert answer.status_code == 404 and "salary" not in answer.content.decode().lower()


def test_bob_does_not_see_alices_private_documents_or_list_her_base(bob, private_base):
    document = private_base.documents.get()
    answer = Client().get(f"/api/knowledge/{private_base.pk}/documents/{document.pk}/", **bearer(bob))
    assert answer.status_code == 404
    assert private_base not in knowledge_bases_for(user=bob)


def test_bob_searches_a_shared_knowledge_base(bob, shared_base):
    hits = search(user=bob, knowledge_base=shared_base, query="How many vacation days?").hits
    assert hits and hits[0].document == "leave.md"
    answer = Client().post(
        f"/api/knowledge/{shared_base.pk}/search/",
        {"query": "vacation"},
        content_type="application/json",
        **bearer(bob),
    )
    assert answer.status_code == 200 and answer.json()["results"][0]["document"] == "leave.md"
    assert shared_base in knowledge_bases_for(user=bob)


def test_bob_cannot_change_a_shared_knowledge_base(bob, shared_base):
    document = shared_base.documents.get()
    with pytest.raises(Forbidden):
        services.documents_add(user=bob, knowledge_base=shared_base, files=[upload("spam.md", "spam")])
    with pytest.raises(Forbidden):
        services.document_delete(user=bob, document=document)
    with pytest.raises(Forbidden):
        services.knowledge_base_delete(user=bob, knowledge_base=shared_base)
    client, headers = Client(), bearer(bob)
    upload_answer = client.post(
        f"/api/knowledge/{shared_base.pk}/documents/", {"file": upload("spam.md", "spam")}, **headers
    )
    assert upload_answer.status_code == 403
    delete_answer = client.delete(f"/api/knowledge/{shared_base.pk}/documents/{document.pk}/", **headers)
    assert delete_answer.status_code == 403
    assert shared_base.documents.count() == 1


def test_deleting_a_knowledge_base_takes_its_documents_chunks_and_files(
    alice, shared_base, knowledge_files, django_capture_on_commit_callbacks
):
    from knowledge.models import Chunk, Document

    assert (knowledge_files / f"kb-{shared_base.pk}").is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        services.knowledge_base_delete(user=alice, knowledge_base=shared_base)
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert not (knowledge_files / f"kb-{shared_base.pk}").exists()
