"""The embedder fine-tune's job on the training lane, around its training: a cancel (queued: at
once; running: at its next step) registers nothing; running out of memory fails it saying what to
lower; a retrieval test deleted meanwhile fails it saying so; its progress names what it is doing."""

import pytest
from django.test import Client
from transformers import AutoModel

from accounts.services import api_token_create
from finetune import embedder_runner, embedder_services
from finetune.models import EmbedderFineTune, TunedEmbedder
from knowledge import retrieval_tests
from studio.jobs import JobStatus
from studio.llm.embedder_training import StepReport, save_folder

from .planted_base import planted_notes, small_base

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def folders(settings, tmp_path):
    settings.STUDIO_EMBEDDERS_DIR = tmp_path / "embedders"
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"


@pytest.fixture
def job(carol):
    """Queued: 30 questions on three notes (9 held out, 21 to train on)."""
    knowledge_base = small_base(carol)
    notes = planted_notes()[:3]
    test = retrieval_tests.retrieval_test_create(
        user=carol,
        knowledge_base=knowledge_base,
        name="Thirty",
        questions=[
            {"question": f"{question} (asked {n} times)", "passages": [passage]}
            for n in range(10)
            for question, passage in notes
        ],
    )
    return embedder_services.embedder_fine_tune_create(
        user=carol, knowledge_base_id=knowledge_base.pk, retrieval_test=test.pk, hyperparameters={"batch_size": 8}
    )


def finished(job) -> EmbedderFineTune:
    embedder_runner.run_embedder_fine_tune(job.pk)
    return EmbedderFineTune.objects.get(pk=job.pk)


def test_a_queued_fine_tune_is_cancelled_at_once_through_the_api(carol, job):
    token = api_token_create(user=carol, name="t")[1]
    answer = Client().post(f"/api/embedder-fine-tunes/{job.pk}/cancel/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 200 and answer.json()["status"] == JobStatus.CANCELLED
    assert finished(job).status == JobStatus.CANCELLED  # a late delivery does not run it


def test_a_cancel_while_training_registers_nothing(job, monkeypatch):
    def training(pairs, *, start_folder, output_folder, config, progress):
        EmbedderFineTune.objects.filter(pk=job.pk).update(cancel_requested=True)  # the Cancel button
        progress(StepReport(step=1, total_steps=6, epoch=0.33, loss=2.0, learning_rate=1e-5))
        raise AssertionError("the step after a cancel ran")

    monkeypatch.setattr(embedder_runner, "train_embedder", training)
    job = finished(job)
    assert job.status == JobStatus.CANCELLED and job.recall_before is not None and job.recall_after is None
    assert job.pairs == {"judged": 0, "tests": 21, "generated": 0, "total": 21}
    assert not TunedEmbedder.objects.exists() and not embedder_runner.job_folder(job).exists()


def test_running_out_of_memory_fails_it_saying_what_to_lower(job, monkeypatch):
    def training(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(embedder_runner, "train_embedder", training)
    job = finished(job)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Out of memory while training the embedder: lower the batch size (now 8)")
    assert not TunedEmbedder.objects.exists()


def test_a_retrieval_test_deleted_meanwhile_fails_it_saying_so(carol, job):
    retrieval_tests.retrieval_test_delete(user=carol, test=job.retrieval_test)
    job = finished(job)
    assert job.status == JobStatus.FAILED and "retrieval test was deleted" in job.error


def test_its_page_shows_the_figures_and_offers_the_embedder(client, carol, job, monkeypatch):
    def training(pairs, *, start_folder, output_folder, config, progress):
        progress(StepReport(step=1, total_steps=1, epoch=1.0, loss=1.5, learning_rate=1e-5))

        save_folder(AutoModel.from_pretrained(start_folder), start_folder=start_folder, output_folder=output_folder)

    monkeypatch.setattr(embedder_runner, "train_embedder", training)
    job = finished(job)
    assert job.status == JobStatus.FINISHED and job.recall_after == job.recall_before  # the same weights
    client.force_login(carol)
    page = client.get(f"/fine-tunes/embedders/{job.pk}/").content.decode()
    assert "Use this embedder for Notes" in page and f"tuned:{job.result.pk}" in page
