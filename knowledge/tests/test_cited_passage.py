"""A citation opens its passage (issue 25: the cited passage was not highlighted on the document
page): `?passage=<chunk>` opens the page of 50 that holds it, marked, with the anchor the link
scrolls to; a passage indexed again since says so; a chat's source links there."""

import numpy as np
import pytest
from django.test import Client

from knowledge.models import Chunk, Document

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def long_document(handbook, alice):
    document = Document.objects.create(
        knowledge_base=handbook, name="manual.md", kind="markdown", status="ready", uploaded_by=alice, chunk_count=120
    )
    Chunk.objects.bulk_create(
        [
            Chunk(
                knowledge_base=handbook,
                document=document,
                ordinal=n,
                text=f"Passage {n}.",
                start=n,
                end=n + 1,
                token_count=3,
                embedding=np.zeros(384, "<f4").tobytes(),
            )
            for n in range(120)
        ]
    )
    return document


def test_a_cited_passage_opens_on_its_page_marked(alice, handbook, long_document):
    cited = long_document.chunks.get(ordinal=73)
    page = (
        client_for(alice)
        .get(f"/knowledge/{handbook.pk}/documents/{long_document.pk}/", {"passage": cited.pk})
        .content.decode()
    )
    assert "Passage 73." in page and "Passage 0." not in page  # page 2 of 3, not the first
    assert (
        f'<tr id="chunk-{cited.pk}" class="knowledge-chunks__cited" aria-current="true" '
        f'title="The passage the reply cited">'
    ) in page
    assert page.count("knowledge-chunks__cited") == 1


def test_a_passage_indexed_again_since_says_so(alice, handbook, long_document):
    page = (
        client_for(alice)
        .get(f"/knowledge/{handbook.pk}/documents/{long_document.pk}/", {"passage": "999999"})
        .content.decode()
    )
    assert "no longer in this document's index" in page and "Passage 0." in page
    assert "knowledge-chunks__cited" not in page
    garbage = client_for(alice).get(f"/knowledge/{handbook.pk}/documents/{long_document.pk}/", {"passage": "9" * 40})
    assert garbage.status_code == 200


def test_a_chat_source_links_to_its_passage(alice, handbook, long_document):
    from django.template.loader import render_to_string

    cited = long_document.chunks.get(ordinal=73)
    record = {
        "sources": [
            {
                "n": 1,
                "chunk": cited.pk,
                "document": "manual.md",
                "document_id": long_document.pk,
                "knowledge_base": handbook.pk,
                "page": None,
                "heading": "",
                "score": 0.5,
                "text": "Passage 73.",
            }
        ]
    }
    html = render_to_string("chat/_sources.html", {"message": {"pk": 1, "retrieval": record}})
    assert f'href="/knowledge/{handbook.pk}/documents/{long_document.pk}/?passage={cited.pk}#chunk-{cited.pk}"' in html
