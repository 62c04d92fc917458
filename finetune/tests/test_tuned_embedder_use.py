"""Offering a tuned embedder to its knowledge base: "Use this embedder" rebuilds the base (the
index in use answers meanwhile) and pins "tuned:<id>" at the switch-over; searches then embed the
query with the tuned folder's numpy twin, documents with its torch twin. Only the base it was tuned
for may pin it; a base can go back to the bundled model; an embedder in use is not deleted; a
tuned embedder whose files are gone fails documents and searches by keywords, saying why."""

import shutil

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from finetune import embedder_services
from knowledge import search as knowledge_search
from knowledge import services, tuned_embedders
from knowledge.ingestion import ingest_document
from knowledge.models import Document, IngestionJob, KnowledgeBase
from knowledge.search import search
from knowledge.services import KnowledgeError

from .planted_base import registered_copy, small_base

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def folders(settings, tmp_path):
    settings.STUDIO_EMBEDDERS_DIR = tmp_path / "embedders"
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    # Registry ids come back once a test's rows are rolled back: no query vector of another test's "tuned:1".
    knowledge_search._query_vector.cache_clear()


def run_ingestions(knowledge_base) -> None:
    for job in IngestionJob.objects.filter(document__knowledge_base=knowledge_base, status="queued"):
        ingest_document(job.pk)
    knowledge_base.refresh_from_db()


def test_staff_use_it_for_a_shared_base_and_searches_embed_with_it(alice, carol, settings):
    knowledge_base = small_base(alice, shared=True)
    tuned = registered_copy(knowledge_base)
    client = Client()
    client.force_login(carol)  # staff, not the owner: the base is shared with her
    answer = client.post(f"/fine-tunes/embedders/tuned/{tuned.pk}/use/")
    assert answer.status_code == 302 and answer["Location"] == f"/knowledge/{knowledge_base.pk}/"
    knowledge_base.refresh_from_db()
    assert knowledge_base.rebuild_progress()["embedding_model"] == tuned.pinned_name
    before = search(user=alice, knowledge_base=knowledge_base, query="water pump", mode="dense").hits
    assert before and knowledge_base.embedding_model == "all-MiniLM-L6-v2"  # the index in use answers meanwhile
    assert f"embedded with {tuned.pinned_name}" in client.get(f"/knowledge/{knowledge_base.pk}/").content.decode()

    run_ingestions(knowledge_base)
    assert (knowledge_base.embedding_model, knowledge_base.building_embedding_model) == (tuned.pinned_name, "")
    assert knowledge_base.chunk_tokens == settings.KNOWLEDGE_CHUNK_TOKENS  # its chunk settings kept
    tuned_embedders._numpy_embedder.cache_clear()
    hits = search(user=alice, knowledge_base=knowledge_base, query="How often is the water pump cleaned?", mode="dense")
    assert "water pump" in hits.hits[0].text and not hits.notes
    assert tuned_embedders._numpy_embedder.cache_info().currsize == 1  # the query went through the tuned folder
    page = client.get("/fine-tunes/").content.decode()
    assert tuned.pinned_name in page and "in use" in page


def test_only_the_base_it_was_tuned_for_may_pin_it(alice):
    first, second = small_base(alice, name="First"), small_base(alice, name="Second")
    tuned = registered_copy(first)
    with pytest.raises(KnowledgeError) as refused:
        services.knowledge_base_rebuild(user=alice, knowledge_base=second, embedding_model=tuned.pinned_name)
    assert refused.value.status == 409 and "tuned for another knowledge base" in refused.value.message
    second.refresh_from_db()
    assert not second.rebuilding and second.embedding_model == "all-MiniLM-L6-v2"


def test_a_base_goes_back_to_the_bundled_model_and_a_rebuild_keeps_its_tuned_one(carol):
    knowledge_base = small_base(carol)
    tuned = registered_copy(knowledge_base)
    embedder_services.embedder_use(user=carol, tuned=tuned)
    run_ingestions(knowledge_base)
    services.knowledge_base_rebuild(user=carol, knowledge_base=knowledge_base, chunk_tokens=100, chunk_overlap=10)
    run_ingestions(knowledge_base)
    assert (knowledge_base.embedding_model, knowledge_base.chunk_tokens) == (tuned.pinned_name, 100)
    services.knowledge_base_rebuild(user=carol, knowledge_base=knowledge_base, embedding_model="all-MiniLM-L6-v2")
    run_ingestions(knowledge_base)
    assert knowledge_base.embedding_model == "all-MiniLM-L6-v2"


def test_a_cancelled_rebuild_keeps_the_embedder_in_use(carol):
    knowledge_base = small_base(carol)
    tuned = registered_copy(knowledge_base)
    embedder_services.embedder_use(user=carol, tuned=tuned)
    services.knowledge_base_rebuild_cancel(user=carol, knowledge_base=knowledge_base)
    knowledge_base.refresh_from_db()
    assert (knowledge_base.embedding_model, knowledge_base.building_embedding_model) == ("all-MiniLM-L6-v2", "")


def test_an_embedder_in_use_is_not_deleted(carol):
    knowledge_base = small_base(carol)
    tuned = registered_copy(knowledge_base)
    embedder_services.embedder_use(user=carol, tuned=tuned)
    client = Client()
    client.force_login(carol)
    assert client.post(f"/fine-tunes/embedders/tuned/{tuned.pk}/delete/").status_code == 409
    run_ingestions(knowledge_base)
    assert client.post(f"/fine-tunes/embedders/tuned/{tuned.pk}/delete/").status_code == 409
    other = registered_copy(knowledge_base)
    assert client.post(f"/fine-tunes/embedders/tuned/{other.pk}/delete/").status_code == 302
    assert not tuned_embedders.folder_of(other.pk).exists()


def test_a_tuned_embedder_whose_files_are_gone_fails_documents_and_searches_by_keywords(carol):
    knowledge_base = small_base(carol)
    tuned = registered_copy(knowledge_base)
    embedder_services.embedder_use(user=carol, tuned=tuned)
    run_ingestions(knowledge_base)
    shutil.rmtree(tuned_embedders.folder_of(tuned.pk))
    answer = search(user=carol, knowledge_base=knowledge_base, query="How often is the water pump cleaned?")
    assert answer.hits and "STUDIO_EMBEDDERS_DIR" in answer.notes[0]
    uploaded = services.documents_add(
        user=carol,
        knowledge_base=knowledge_base,
        files=[SimpleUploadedFile("new.txt", b"The horn sounds twice when the doors lock.", "text/plain")],
    )[0].document
    ingest_document(uploaded.pk)
    uploaded.refresh_from_db()
    assert uploaded.status == Document.Status.FAILED and "STUDIO_EMBEDDERS_DIR" in uploaded.error
    with pytest.raises(KnowledgeError):  # nor is the base rebuilt with it
        services.knowledge_base_rebuild(user=carol, knowledge_base=KnowledgeBase.objects.get(pk=knowledge_base.pk))
