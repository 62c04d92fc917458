"""Embedder fine-tunes are for staff: every page and API route refuses others (403, no hint of the
jobs; anonymous visitors the login page or 401); staff reach only those of bases they can see
(another person's private base: 404, as for knowledge bases)."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from finetune.models import EmbedderFineTune, TunedEmbedder

from .planted_base import registered_copy, small_base

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def folders(settings, tmp_path):
    settings.STUDIO_EMBEDDERS_DIR = tmp_path / "embedders"
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"


@pytest.fixture
def dave(django_user_model):
    """Staff too."""
    return django_user_model.objects.create_user("dave", password="dave-password-1", is_staff=True)


@pytest.fixture
def job(carol):
    knowledge_base = small_base(carol, name="Carol's secret notes")
    job = EmbedderFineTune.objects.create(
        knowledge_base=knowledge_base, start_embedder="all-MiniLM-L6-v2", created_by=carol
    )
    registered_copy(knowledge_base)
    return job


def pages(job):
    tuned = TunedEmbedder.objects.get(knowledge_base=job.knowledge_base)
    return [
        ("get", f"/fine-tunes/embedders/new/?knowledge_base={job.knowledge_base_id}"),
        ("post", "/fine-tunes/embedders/new/"),
        ("get", f"/fine-tunes/embedders/{job.pk}/"),
        ("get", f"/fine-tunes/embedders/{job.pk}/progress/"),
        ("post", f"/fine-tunes/embedders/{job.pk}/cancel/"),
        ("post", f"/fine-tunes/embedders/tuned/{tuned.pk}/use/"),
        ("post", f"/fine-tunes/embedders/tuned/{tuned.pk}/delete/"),
    ]


def api_routes(job):
    return [
        ("post", f"/api/knowledge/{job.knowledge_base_id}/embedder-fine-tunes/"),
        ("get", f"/api/embedder-fine-tunes/{job.pk}/"),
        ("post", f"/api/embedder-fine-tunes/{job.pk}/cancel/"),
        ("post", f"/api/embedder-fine-tunes/{job.pk}/use/"),
    ]


def call(method, url, user, body=None):
    """A JSON API call with `user`'s token (None: without one)."""
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"} if user else {}
    if method == "post":
        return Client().post(url, json.dumps(body or {}), content_type="application/json", **headers)
    return Client().get(url, **headers)


def test_a_non_staff_user_gets_403_everywhere_and_no_hint(client, alice, job):
    client.force_login(alice)
    for method, url in pages(job):
        response = getattr(client, method)(url, {"knowledge_base": job.knowledge_base_id})
        assert response.status_code == 403, url
        assert "secret" not in response.content.decode(), url
    for method, url in api_routes(job):
        response = call(method, url, alice)
        assert response.status_code == 403, url
        assert "secret" not in response.content.decode(), url
    assert EmbedderFineTune.objects.get(pk=job.pk).status == "queued"


def test_anonymous_visitors_log_in_first(client, job):
    for method, url in pages(job):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    for method, url in api_routes(job):
        assert call(method, url, None).status_code == 401, url


def test_another_staff_member_does_not_reach_a_private_bases_fine_tune(client, dave, job):
    client.force_login(dave)
    for method, url in pages(job):
        response = getattr(client, method)(url, {"knowledge_base": job.knowledge_base_id})
        assert response.status_code == 404, url
        assert "secret" not in response.content.decode(), url
    for method, url in api_routes(job):
        response = call(method, url, dave, {"retrieval_test": 1})
        assert response.status_code == 404, url
    listing = client.get("/fine-tunes/").content.decode()
    assert "secret" not in listing and "tuned:" not in listing


def test_staff_reach_the_pages_of_their_own(client, carol, job):
    client.force_login(carol)
    for url in (
        f"/fine-tunes/embedders/new/?knowledge_base={job.knowledge_base_id}",
        f"/fine-tunes/embedders/{job.pk}/",
        f"/fine-tunes/embedders/{job.pk}/progress/",
        "/fine-tunes/",
    ):
        assert client.get(url).status_code == 200, url
    assert "Fine-tune the embedder" in client.get(f"/knowledge/{job.knowledge_base_id}/").content.decode()
