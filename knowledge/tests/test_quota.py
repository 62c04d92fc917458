"""A person's documents keep at most KNOWLEDGE_QUOTA_BYTES_PER_PERSON of files, in all their
knowledge bases (issue 25: there was no quota). An upload that does not fit is refused whole, with a
413 and a sentence saying what is left, before a file is stored; what is used and left is on the
pages."""

import pytest
from django.test import Client

from knowledge import services
from knowledge.models import Document
from knowledge.services import knowledge_base_create

from .conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def quota(settings):
    settings.KNOWLEDGE_QUOTA_BYTES_PER_PERSON = 10_000
    return settings.KNOWLEDGE_QUOTA_BYTES_PER_PERSON


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_upload_past_the_quota_is_refused_whole_before_a_file_is_stored(handbook, alice, quota, knowledge_files):
    other = knowledge_base_create(owner=alice, name="Other")
    services.documents_add(user=alice, knowledge_base=other, files=[upload("a.md", "x" * 6_000)])
    assert services.storage_use(user=alice).used == 6_000  # every base of hers counts
    with pytest.raises(
        services.QuotaExceeded,
        match=r"needs 5\.9 KB, and 3\.9 KB of your 9\.8 KB for documents "
        r"is left .*nothing was stored",
    ) as refused:
        services.documents_add(
            user=alice,
            knowledge_base=handbook,
            files=[upload("b.md", "y" * 2_000), upload("c.md", "z" * 4_000), upload("setup.exe", b"MZ" * 10_000)],
        )
    assert refused.value.status == 413 and refused.value.code == "quota_exceeded"
    assert not handbook.documents.exists() and not (knowledge_files / f"kb-{handbook.pk}").exists()
    # What fits is stored; a file refused unread (its kind) takes nothing.
    services.documents_add(
        user=alice, knowledge_base=handbook, files=[upload("b.md", "y" * 2_000), upload("setup.exe", b"MZ" * 10_000)]
    )
    assert services.storage_use(user=alice).used == 8_000


def test_failed_documents_and_other_peoples_take_nothing_of_ones_quota(handbook, alice, bob, quota, ingest):
    ingest(handbook, alice, [upload("broken.pdf", b"not a pdf" * 800)])  # fails: its file is deleted
    bobs = knowledge_base_create(owner=bob, name="Bob's")
    services.documents_add(user=bob, knowledge_base=bobs, files=[upload("b.md", "b" * 9_000)])
    assert services.storage_use(user=alice).used == 0 and services.storage_use(user=bob).used == 9_000
    services.documents_add(user=alice, knowledge_base=handbook, files=[upload("fits.md", "a" * 9_000)])


def test_the_page_and_the_api_answer_413_and_the_page_shows_what_is_used(handbook, alice, quota):
    from accounts.services import api_token_create

    client = client_for(alice)
    page = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    assert "Your documents' files: 0\xa0bytes of 9.8\xa0KB (9.8\xa0KB left)" in page
    refused = client.post(
        f"/knowledge/{handbook.pk}/documents/upload/",
        {"file": [upload("big.md", "x" * 12_000)]},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 413 and "of your 9.8 KB for documents is left" in refused.content.decode()
    token = api_token_create(user=alice, name="scripts")[1]
    answer = Client().post(
        f"/api/knowledge/{handbook.pk}/documents/",
        {"file": [upload("big.md", "x" * 12_000)]},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 413 and "nothing was stored" in answer.json()["error"]
    assert not Document.objects.exists()
    stored = client.post(
        f"/knowledge/{handbook.pk}/documents/upload/", {"file": [upload("ok.md", "x" * 4_000)]}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "3.9\xa0KB of 9.8\xa0KB (5.9\xa0KB left)" in stored  # the list it swaps in says so at once
    assert "of 9.8\xa0KB" in client.get("/knowledge/").content.decode()


def test_no_quota_when_it_is_zero(handbook, alice, settings):
    settings.KNOWLEDGE_QUOTA_BYTES_PER_PERSON = 0
    services.documents_add(user=alice, knowledge_base=handbook, files=[upload("a.md", "x" * 50_000)])
    assert "(no quota)" in client_for(alice).get(f"/knowledge/{handbook.pk}/").content.decode()
