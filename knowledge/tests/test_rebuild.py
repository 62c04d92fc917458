"""Rebuilding a knowledge base with new chunk settings: its documents are indexed again in a new
generation while the current one keeps answering, and search switches over when the last one is
done; the page's form and the API start it (its owner only) and show its progress."""

import pytest
from django.test import Client

from accounts.services import api_token_create
from knowledge import services, vectors
from knowledge.ingestion import ingest_document
from knowledge.models import Chunk, Document, IngestionJob, KnowledgeBase
from knowledge.search import search
from studio.jobs import JobStatus
from studio.llm.embeddings import load_embedder

from .conftest import upload
from .test_search import NETWORK, OFFICE, PARTS

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
CODE_QUERY, PARAPHRASE = "ZX-4411", "How can I reboot my modem?"


@pytest.fixture
def plant(alice, ingest, settings):
    """One paragraph a chunk (24 tokens, no overlap), so that a rebuild to 200 tokens shows."""
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant", shared=True)
    documents = ingest(
        knowledge_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]
    )
    assert all(d.status == "ready" for d in documents)
    return knowledge_base


@pytest.fixture
def dispatched(monkeypatch):
    """The job queue's sends, kept: the test runs each job itself, when it chooses."""
    sent = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: sent.append(job_id))
    return sent


def texts(user, knowledge_base, query, mode):
    return [hit.text for hit in search(user=user, knowledge_base=knowledge_base, query=query, mode=mode).hits]


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_searches_answer_from_the_old_chunks_during_a_rebuild_and_from_the_new_ones_after(
    alice, plant, dispatched, django_capture_on_commit_callbacks, monkeypatch
):
    vectors.cache_clear()
    old_code, old_paraphrase = texts(alice, plant, CODE_QUERY, "bm25"), texts(alice, plant, PARAPHRASE, "dense")
    assert old_code[0] == "Part ZX-4411 is the return spring of the model B press."
    assert "restart the router" in old_paraphrase[0]
    old_chunks = set(Chunk.objects.values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0) == 3
    plant.refresh_from_db()
    assert plant.rebuilding and (plant.chunk_tokens, plant.building_chunk_tokens) == (24, 200)
    assert plant.rebuild_progress() | {"embedding_model": ""} == {
        "chunk_tokens": 200,
        "chunk_overlap": 0,
        "embedding_model": "",
        "done": 0,
        "total": 3,
    }
    assert sorted(dispatched) == sorted(plant.documents.values_list("pk", flat=True))
    assert set(plant.documents.values_list("status", flat=True)) == {"ready"}  # searchable throughout

    # While a document's new chunks are being written, every mode still reads the old ones.
    embedder, during = load_embedder(), []

    def embed_and_search(texts_to_embed):
        during.append(
            {
                mode: texts(alice, plant, query, mode)
                for mode, query in (("bm25", CODE_QUERY), ("dense", PARAPHRASE), ("hybrid", CODE_QUERY))
            }
        )
        return type(embedder).embed(embedder, texts_to_embed)

    parts, network, office = (plant.documents.get(name=name) for name in ("parts.md", "network.md", "office.md"))
    ingest_document(parts.pk)
    monkeypatch.setattr(embedder, "embed", embed_and_search)
    ingest_document(network.pk)
    monkeypatch.undo()
    plant.refresh_from_db()
    assert plant.rebuilding and plant.rebuild_progress()["done"] == 2
    assert during and during[0]["bm25"] == old_code and during[0]["dense"] == old_paraphrase
    assert any(text == old_code[0] for text in during[0]["hybrid"][:2])
    assert texts(alice, plant, CODE_QUERY, "bm25") == old_code  # parts.md has its new chunks, unused yet
    new_chunks = Chunk.objects.exclude(pk__in=old_chunks)
    assert new_chunks.count() == 2 and set(new_chunks.values_list("generation", flat=True)) == {1}

    ingest_document(office.pk)  # the last one: the switch
    plant.refresh_from_db()
    assert not plant.rebuilding and (plant.active_generation, plant.chunk_tokens, plant.chunk_overlap) == (1, 200, 0)
    assert not Chunk.objects.filter(pk__in=old_chunks).exists()
    assert Chunk.objects.count() == 3 and set(plant.documents.values_list("chunk_count", flat=True)) == {1}
    code = texts(alice, plant, CODE_QUERY, "bm25")
    assert "ZX-4411" in code[0] and "ZX-4410" in code[0] and "ZX-1144" in code[0]  # the whole list is one chunk now
    assert "restart the router" in texts(alice, plant, PARAPHRASE, "dense")[0]
    assert "restart the router" in texts(alice, plant, PARAPHRASE, "hybrid")[0]
    assert IngestionJob.objects.filter(status=JobStatus.FINISHED).count() == 3


def test_a_document_uploaded_during_a_rebuild_is_indexed_in_both_generations(alice, plant, dispatched, ingest):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    (holidays,) = ingest(plant, alice, [upload("holidays.md", "# Leave\n\nEvery employee gets 30 days of vacation.")])
    assert holidays.status == "ready" and holidays.rebuilt_chunk_count == 1
    assert set(holidays.chunks.values_list("generation", flat=True)) == {0, 1}
    assert texts(alice, plant, "How much paid time off do I get?", "dense")[0].endswith("30 days of vacation.")
    for document in plant.documents.exclude(pk=holidays.pk):
        ingest_document(document.pk)
    plant.refresh_from_db()
    assert not plant.rebuilding and set(Chunk.objects.values_list("generation", flat=True)) == {1}
    assert texts(alice, plant, "How much paid time off do I get?", "dense")[0].endswith("30 days of vacation.")


def test_a_rebuild_of_a_base_without_documents_switches_at_once(alice, handbook):
    assert services.knowledge_base_rebuild(user=alice, knowledge_base=handbook, chunk_tokens=100, chunk_overlap=10) == 0
    handbook.refresh_from_db()
    assert not handbook.rebuilding and (handbook.chunk_tokens, handbook.active_generation) == (100, 1)


def test_a_document_deleted_during_a_rebuild_no_longer_holds_it_back(alice, plant, dispatched):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    parts, network, office = (plant.documents.get(name=name) for name in ("parts.md", "network.md", "office.md"))
    ingest_document(parts.pk)
    ingest_document(network.pk)
    services.document_delete(user=alice, document=office)
    plant.refresh_from_db()
    assert not plant.rebuilding and plant.chunk_tokens == 200 and Chunk.objects.count() == 2


@pytest.mark.parametrize(
    "values, field",
    [
        ({"chunk_tokens": 8}, "chunk_tokens"),
        ({"chunk_tokens": 300}, "chunk_tokens"),
        ({"chunk_tokens": "many"}, "chunk_tokens"),
        ({"chunk_tokens": 100, "chunk_overlap": 100}, "chunk_overlap"),
        ({"embedding_model": "bge-large"}, "embedding_model"),
    ],
)
def test_it_refuses_settings_the_embedder_cannot_take(alice, plant, values, field):
    with pytest.raises(services.KnowledgeError) as refused:
        services.knowledge_base_rebuild(user=alice, knowledge_base=plant, **values)
    assert refused.value.field == field
    plant.refresh_from_db()
    assert not plant.rebuilding


def test_one_rebuild_at_a_time(alice, plant, dispatched):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    with pytest.raises(services.KnowledgeError, match="already running"):
        services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=100, chunk_overlap=0)


def test_the_api_starts_a_rebuild_and_reports_its_progress(alice, plant, dispatched):
    client, token = Client(), bearer(alice)
    answer = client.post(
        f"/api/knowledge/{plant.pk}/rebuild/",
        {"chunk_tokens": 200, "chunk_overlap": 0},
        content_type="application/json",
        **token,
    )
    assert answer.status_code == 202, answer.content
    assert answer.json() | {"embedding_model": ""} == {
        "id": plant.pk,
        "embedding_model": "",
        "chunk_tokens": 24,
        "chunk_overlap": 0,
        "queued": 3,
        "rebuild": {
            "chunk_tokens": 200,
            "chunk_overlap": 0,
            "embedding_model": plant.embedding_model,
            "done": 0,
            "total": 3,
        },
    }
    again = client.post(f"/api/knowledge/{plant.pk}/rebuild/", {}, content_type="application/json", **token)
    assert again.status_code == 409 and "already running" in again.json()["error"]
    ingest_document(plant.documents.get(name="parts.md").pk)
    assert client.get(f"/api/knowledge/{plant.pk}/rebuild/", **token).json()["rebuild"]["done"] == 1


def test_the_api_names_the_field_it_refuses(alice, plant):
    answer = Client().post(
        f"/api/knowledge/{plant.pk}/rebuild/", {"chunk_tokens": 999}, content_type="application/json", **bearer(alice)
    )
    assert answer.status_code == 400 and answer.json()["error"] == "chunk_tokens: must be from 16 to 254"


def test_another_person_cannot_rebuild_a_private_base_it_is_not_found(bob, alice, dispatched, handbook):
    answer = Client().post(f"/api/knowledge/{handbook.pk}/rebuild/", {}, content_type="application/json", **bearer(bob))
    assert answer.status_code == 404
    assert Client().get(f"/api/knowledge/{handbook.pk}/rebuild/", **bearer(bob)).status_code == 404
    assert client_for(bob).post(f"/knowledge/{handbook.pk}/rebuild/", {"chunk_tokens": "100"}).status_code == 404
    handbook.refresh_from_db()
    assert not handbook.rebuilding


def test_another_person_cannot_rebuild_a_shared_base_it_is_forbidden(bob, plant, dispatched):
    answer = Client().post(f"/api/knowledge/{plant.pk}/rebuild/", {}, content_type="application/json", **bearer(bob))
    assert answer.status_code == 403
    assert Client().get(f"/api/knowledge/{plant.pk}/rebuild/", **bearer(bob)).status_code == 200  # may look
    page = client_for(bob).post(f"/knowledge/{plant.pk}/rebuild/", {"chunk_tokens": "100", "chunk_overlap": "0"})
    assert page.status_code == 403
    detail = client_for(bob).get(f"/knowledge/{plant.pk}/").content.decode()
    assert "passages of 24 tokens" in detail and "Rebuild the index" not in detail
    plant.refresh_from_db()
    assert not plant.rebuilding and not dispatched


def test_the_page_rebuilds_and_shows_its_progress_live(alice, plant, dispatched):
    client = client_for(alice)
    detail = client.get(f"/knowledge/{plant.pk}/").content.decode()
    assert "Rebuild the index" in detail and 'name="chunk_tokens" value="24"' in detail
    assert "all-MiniLM-L6-v2</option>" in detail  # the one model the studio bundles
    card = client.post(
        f"/knowledge/{plant.pk}/rebuild/",
        {"chunk_tokens": "200", "chunk_overlap": "0", "embedding_model": plant.embedding_model},
        **HTMX,
    )
    assert card.status_code == 200
    html = card.content.decode()
    assert "rebuilding: 0 of 3 documents" in html and 'hx-trigger="every 2s"' in html
    assert "Rebuild the index" not in html  # one at a time
    ingest_document(plant.documents.get(name="parts.md").pk)
    assert "rebuilding: 1 of 3 documents" in client.get(f"/knowledge/{plant.pk}/rebuild/", **HTMX).content.decode()
    assert 'rebuild/?generation=1"' in html  # the card polls naming the index it watches being built
    for document in plant.documents.exclude(name="parts.md"):
        ingest_document(document.pk)
    html = client.get(f"/knowledge/{plant.pk}/rebuild/?generation=1", **HTMX).content.decode()
    assert "Rebuilt: searches use the new index" in html and "passages of 200 tokens" in html
    assert "every 2s" not in html.split('id="documents"')[0]  # the card stops polling
    assert 'id="documents" hx-swap-oob="true"' in html  # and the documents' passage counts follow


def test_the_page_says_what_is_wrong_with_the_settings(alice, plant):
    answer = client_for(alice).post(
        f"/knowledge/{plant.pk}/rebuild/", {"chunk_tokens": "300", "chunk_overlap": "0"}, **HTMX
    )
    assert answer.status_code == 400 and "must be from 16 to 254" in answer.content.decode()
    plant.refresh_from_db()
    assert not plant.rebuilding


def test_a_ready_document_being_rebuilt_cannot_be_cancelled_alone(alice, plant, dispatched):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    with pytest.raises(services.KnowledgeError, match="stays searchable"):
        services.document_cancel(user=alice, document=plant.documents.first())
    assert KnowledgeBase.objects.get(pk=plant.pk).rebuilding
    assert Document.objects.filter(status="ready").count() == 3


def test_a_cancelled_rebuild_leaves_the_index_in_use_as_it_was(alice, plant, dispatched, monkeypatch):
    vectors.cache_clear()
    old_code, old_paraphrase = texts(alice, plant, CODE_QUERY, "bm25"), texts(alice, plant, PARAPHRASE, "dense")
    old_chunks = set(Chunk.objects.values_list("pk", flat=True))
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    parts, network, office = (plant.documents.get(name=name) for name in ("parts.md", "network.md", "office.md"))
    ingest_document(parts.pk)  # one done, one stopped half-way, one never started
    embedder = load_embedder()

    def cancel_while_embedding(texts_to_embed):
        services.knowledge_base_rebuild_cancel(user=alice, knowledge_base=KnowledgeBase.objects.get(pk=plant.pk))
        return type(embedder).embed(embedder, texts_to_embed)

    monkeypatch.setattr(embedder, "embed", cancel_while_embedding)
    ingest_document(network.pk)
    monkeypatch.undo()
    ingest_document(office.pk)  # its job was ended: a late delivery does nothing

    plant.refresh_from_db()
    assert not plant.rebuilding and (plant.active_generation, plant.chunk_tokens, plant.chunk_overlap) == (0, 24, 0)
    assert set(Chunk.objects.values_list("pk", flat=True)) == old_chunks  # the new passages are gone
    assert set(plant.documents.values_list("status", flat=True)) == {"ready"}  # none failed
    assert set(plant.documents.values_list("rebuilt_chunk_count", flat=True)) == {None}
    assert set(IngestionJob.objects.filter(pk__in=[network.pk, office.pk]).values_list("status", flat=True)) == {
        JobStatus.CANCELLED
    }
    assert (
        texts(alice, plant, CODE_QUERY, "bm25") == old_code
        and texts(alice, plant, PARAPHRASE, "dense") == old_paraphrase
    )
    with pytest.raises(services.KnowledgeError, match="no rebuild is running"):
        services.knowledge_base_rebuild_cancel(user=alice, knowledge_base=plant)
    # A new rebuild starts from a clean slate and completes.
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    for document in plant.documents.all():
        ingest_document(document.pk)
    plant.refresh_from_db()
    assert not plant.rebuilding and plant.chunk_tokens == 200 and Chunk.objects.count() == 3


def test_a_document_uploaded_during_a_cancelled_rebuild_is_indexed_for_the_index_in_use(alice, plant, dispatched):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    (holidays,) = services.documents_add(
        user=alice,
        knowledge_base=plant,
        files=[upload("holidays.md", "# Leave\n\nEvery employee gets 30 days of vacation.")],
    )
    services.knowledge_base_rebuild_cancel(user=alice, knowledge_base=plant)
    ingest_document(holidays.document.pk)
    holidays.document.refresh_from_db()
    assert holidays.document.status == "ready" and holidays.document.rebuilt_chunk_count is None
    assert set(holidays.document.chunks.values_list("generation", flat=True)) == {0}


def test_a_rebuild_cancelled_while_a_new_document_is_indexed_leaves_none_of_its_passages(
    alice, plant, dispatched, monkeypatch
):
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    (holidays,) = services.documents_add(
        user=alice,
        knowledge_base=plant,
        files=[upload("holidays.md", "# Leave\n\nEvery employee gets 30 days of vacation.")],
    )
    embedder = load_embedder()

    def cancel_while_embedding(texts_to_embed):
        if KnowledgeBase.objects.get(pk=plant.pk).rebuilding:
            services.knowledge_base_rebuild_cancel(user=alice, knowledge_base=KnowledgeBase.objects.get(pk=plant.pk))
        return type(embedder).embed(embedder, texts_to_embed)

    monkeypatch.setattr(embedder, "embed", cancel_while_embedding)
    ingest_document(holidays.document.pk)
    holidays.document.refresh_from_db()
    assert holidays.document.status == "ready" and holidays.document.rebuilt_chunk_count is None
    assert set(Chunk.objects.values_list("generation", flat=True)) == {0}, "nothing left of the cancelled index"


def test_the_api_cancels_a_rebuild_for_its_owner_only(alice, bob, plant, dispatched):
    client = Client()
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    refused = client.post(f"/api/knowledge/{plant.pk}/rebuild/cancel/", **bearer(bob))  # shared: may look, not act
    assert refused.status_code == 403 and KnowledgeBase.objects.get(pk=plant.pk).rebuilding
    answer = client.post(f"/api/knowledge/{plant.pk}/rebuild/cancel/", **bearer(alice))
    assert answer.status_code == 200 and answer.json()["rebuild"] is None and answer.json()["chunk_tokens"] == 24
    again = client.post(f"/api/knowledge/{plant.pk}/rebuild/cancel/", **bearer(alice))
    assert again.status_code == 409 and "no rebuild is running" in again.json()["error"]


def test_another_person_cannot_cancel_a_private_rebuild_it_is_not_found(alice, bob, handbook, dispatched, ingest):
    ingest(handbook, alice, [upload("parts.md", PARTS)])
    services.knowledge_base_rebuild(user=alice, knowledge_base=handbook, chunk_tokens=200, chunk_overlap=0)
    assert Client().post(f"/api/knowledge/{handbook.pk}/rebuild/cancel/", **bearer(bob)).status_code == 404
    assert client_for(bob).post(f"/knowledge/{handbook.pk}/rebuild/cancel/", **HTMX).status_code == 404
    assert KnowledgeBase.objects.get(pk=handbook.pk).rebuilding


def test_the_page_cancels_a_rebuild_and_a_watching_tab_says_so(alice, bob, plant, dispatched):
    client = client_for(alice)
    services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    detail = client.get(f"/knowledge/{plant.pk}/").content.decode()
    assert "Cancel the rebuild" in detail
    assert "Cancel the rebuild" not in client_for(bob).get(f"/knowledge/{plant.pk}/").content.decode()
    assert client_for(bob).post(f"/knowledge/{plant.pk}/rebuild/cancel/", **HTMX).status_code == 403
    card = client.post(f"/knowledge/{plant.pk}/rebuild/cancel/", **HTMX)
    html = card.content.decode()
    assert card.status_code == 200 and "Rebuild cancelled: searches use the index as it was" in html
    assert (
        "passages of 24 tokens" in html
        and "Rebuild the index" in html
        and "every 2s" not in html.split('id="documents"')[0]
    )
    # Another tab's card, still polling for generation 1, learns the same.
    assert "Rebuild cancelled" in client.get(f"/knowledge/{plant.pk}/rebuild/?generation=1", **HTMX).content.decode()
    again = client.post(f"/knowledge/{plant.pk}/rebuild/cancel/", **HTMX)
    assert again.status_code == 409 and "no rebuild is running" in again.content.decode()
