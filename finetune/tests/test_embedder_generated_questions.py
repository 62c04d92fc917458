"""Questions generated for a base's passages by a served model the person picks: asked through the
model workers (a real one, on the tiny model, which writes noise), as evaluations ask; each usable
reply becomes a pair with its passage, the unusable ones are left out, and the job's conversations
are removed when it ends."""

import pytest

from chat.models import Conversation
from evals.selectors import available_models
from finetune import embedder_pairs, embedder_runner, embedder_services
from finetune.models import EmbedderFineTune
from knowledge import retrieval_tests
from studio.jobs import JobStatus
from studio.llm.embedder_training import save_folder

from .planted_base import planted_notes, small_base

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("model_worker")]


@pytest.fixture(autouse=True)
def folders(settings, tmp_path, monkeypatch):
    settings.STUDIO_EMBEDDERS_DIR = tmp_path / "embedders"
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    monkeypatch.setattr(embedder_pairs, "GENERATION_MAX_NEW_TOKENS", 24)  # noise: keep it short


def test_each_usable_question_a_served_model_wrote_is_a_pair_with_its_passage(carol, monkeypatch):
    from transformers import AutoModel

    knowledge_base = small_base(carol)
    question, passage = planted_notes()[0]
    test = retrieval_tests.retrieval_test_create(
        user=carol, knowledge_base=knowledge_base, name="One", questions=[{"question": question, "passages": [passage]}]
    )
    written, kept = [], []
    real = embedder_pairs.generated_question

    def reading(reply, passage):
        written.append(reply)
        question = real(reply, passage)
        kept.append(question) if question else None
        return question

    trained_on = []

    def training(pairs, *, start_folder, output_folder, config, progress):
        trained_on.extend(pairs)
        save_folder(AutoModel.from_pretrained(start_folder), start_folder=start_folder, output_folder=output_folder)

    monkeypatch.setattr(embedder_pairs, "generated_question", reading)
    monkeypatch.setattr(embedder_runner, "train_embedder", training)
    monkeypatch.setattr(embedder_runner, "MIN_PAIRS", 1)  # the tiny model's noise may give few usable questions
    job = embedder_services.embedder_fine_tune_create(
        user=carol,
        knowledge_base_id=knowledge_base.pk,
        retrieval_test=test.pk,
        generate_questions={"model": available_models()[0], "chunks": 3},
    )
    embedder_runner.run_embedder_fine_tune(job.pk)
    job = EmbedderFineTune.objects.get(pk=job.pk)
    assert len(written) == 3  # one reply for each of the 3 passages
    if not kept:
        assert job.status == JobStatus.FAILED and "0 generated" in job.error
    else:
        assert job.status == JobStatus.FINISHED, job.error
        assert job.pairs == {"judged": 0, "tests": 0, "generated": len(kept), "total": len(kept)}
        assert {pair.question for pair in trained_on} == set(kept)
        assert all(pair.passage.endswith(tuple(p for _, p in planted_notes()[:3])) for pair in trained_on)
    assert not Conversation.objects.filter(job=embedder_runner.job_key(job.pk)).exists()


def test_the_unusable_replies_are_left_out():
    passage = embedder_pairs.BasePassage(1, "Clean the water pump every 3 days.", "note-00", "note-00.txt", None)
    assert embedder_pairs.generated_question("Question: How often is the pump cleaned?\nMore.", passage) == (
        "How often is the pump cleaned?"
    )
    assert embedder_pairs.generated_question("1. “When do I clean it?”", passage) == "When do I clean it?"
    assert embedder_pairs.generated_question("Why?", passage) == ""  # under three words
    assert embedder_pairs.generated_question("Clean the water pump every", passage) == ""  # the passage copied
    assert embedder_pairs.generated_question("", passage) == ""
