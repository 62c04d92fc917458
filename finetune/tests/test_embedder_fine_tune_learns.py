"""The embedder fine-tune on a planted base (finetune/tests/planted_base.py): trained through the
API's job on the questions that are not held out, the tuned embedder finds the held-out questions'
passages the bundled one could not; it lands in the registry, is offered to its base, and the base
rebuilt with it is searched through the web process's numpy twin of the tuned folder."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from finetune.embedder_runner import run_embedder_fine_tune
from finetune.models import EmbedderFineTune, TunedEmbedder
from knowledge import search as knowledge_search
from knowledge import tuned_embedders
from knowledge.ingestion import ingest_document
from knowledge.models import IngestionJob, KnowledgeBase
from knowledge.search import search
from studio.jobs import JobStatus
from studio.llm.numpy_embedder import NumpyEmbedder

from .planted_base import planted_base, planted_notes, planted_test

# A training run of the real bundled embedder (8 steps): about a minute on 2 loaded CPU cores.
pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(autouse=True)
def embedders_dir(settings, tmp_path):
    settings.STUDIO_EMBEDDERS_DIR = tmp_path / "embedders"
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    knowledge_search._query_vector.cache_clear()  # registry ids come back once a test's rows are rolled back


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def test_the_tuned_embedder_finds_the_held_out_passages_and_serves_its_base(carol):
    knowledge_base = planted_base(carol)
    test = planted_test(carol, knowledge_base)
    client, headers = Client(), bearer(carol)
    # A higher learning rate than the default and four epochs: 36 questions are a tiny training set.
    answer = client.post(
        f"/api/knowledge/{knowledge_base.pk}/embedder-fine-tunes/",
        json.dumps({"retrieval_test": test.pk, "held_out": 0.3, "epochs": 4, "learning_rate": 2e-4, "batch_size": 16}),
        content_type="application/json",
        **headers,
    )
    assert answer.status_code == 201, answer.content
    job_id = answer.json()["id"]
    run_embedder_fine_tune(job_id)  # as the training lane's job worker runs it

    figures = client.get(f"/api/embedder-fine-tunes/{job_id}/", **headers).json()
    assert figures["status"] == JobStatus.FINISHED, figures["error"]
    assert figures["held_out_questions"] == 11 and figures["pairs"] == {
        "judged": 0,
        "tests": 25,
        "generated": 0,
        "total": 25,
    }
    assert figures["recall_before"] <= 0.6  # the code words mean nothing to the bundled embedder (0.45 here)
    assert figures["recall_after"] >= 0.8 and figures["recall_after"] - figures["recall_before"] >= 0.3
    assert figures["mrr_after"] > figures["mrr_before"]
    assert figures["progress"]["done"] == figures["progress"]["total"] == 8  # 25 pairs: 2 steps of 16, 4 epochs

    tuned = TunedEmbedder.objects.get(job_id=job_id)
    assert figures["embedder"] == tuned.pinned_name == f"tuned:{tuned.pk}"
    folder = tuned_embedders.folder_of(tuned.pk)
    assert {"config.json", "model.safetensors", "tokenizer.json", tuned_embedders.MANIFEST} <= {
        f.name for f in folder.iterdir()
    }
    assert NumpyEmbedder(folder).embed(["glorp"]).shape == (1, 384)
    assert KnowledgeBase.objects.get(pk=knowledge_base.pk).embedding_model == "all-MiniLM-L6-v2"  # not changed

    # "Use this embedder": a rebuild whose new passages are embedded with it, then pinned.
    answer = client.post(f"/api/embedder-fine-tunes/{job_id}/use/", **headers)
    assert answer.status_code == 202 and answer.json()["documents"] == 36
    knowledge_base.refresh_from_db()
    assert knowledge_base.building_embedding_model == tuned.pinned_name
    assert knowledge_base.embedding_model == "all-MiniLM-L6-v2"  # until the switch-over
    for job in IngestionJob.objects.filter(document__knowledge_base=knowledge_base):
        ingest_document(job.pk)
    knowledge_base.refresh_from_db()
    assert (knowledge_base.embedding_model, knowledge_base.building_embedding_model) == (tuned.pinned_name, "")

    # The base's own search (the query embedded by the numpy twin) ranks as the job measured.
    held_out = EmbedderFineTune.objects.get(pk=job_id).held_out
    notes = planted_notes()
    found = 0
    for ordinal in held_out:
        question, passage = notes[ordinal]
        hits = search(user=carol, knowledge_base=knowledge_base, query=question, mode="dense", k=5).hits
        found += any(passage in hit.text for hit in hits)
    assert abs(found / len(held_out) - figures["recall_after"]) <= 1 / len(held_out)
