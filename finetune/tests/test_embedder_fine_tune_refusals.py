"""What an embedder fine-tune refuses before it is queued, saying what to change: too few pairs a
person chose (3 judgments: how many it needs and how many it has), a missing or foreign retrieval
test, a setting out of range or unknown, a model that is not served, a second one for the same base."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from evals import services as case_services
from evals.models import FailureCase
from finetune.models import EmbedderFineTune
from knowledge import retrieval_tests

from .planted_base import planted_notes, small_base

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def folders(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"


@pytest.fixture
def base(carol):
    return small_base(carol)


@pytest.fixture
def one_question(carol, base):
    """A test of one question: it is the held-out one, so the test gives no training pair."""
    question, passage = planted_notes()[0]
    return retrieval_tests.retrieval_test_create(
        user=carol, knowledge_base=base, name="One", questions=[{"question": question, "passages": [passage]}]
    )


def post(user, knowledge_base, body):
    token = api_token_create(user=user, name="t")[1]
    return Client().post(
        f"/api/knowledge/{knowledge_base.pk}/embedder-fine-tunes/",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def judge(user, count):
    """`count` train-split failure cases whose right passage (a note of the base) was judged."""
    rows = [
        {"input": f"What does note {n} say?", "expected": "-", "passages": [passage]}
        for n, (_, passage) in enumerate(planted_notes()[:count])
    ]
    case_services.cases_create(user=user, rows=rows, source=FailureCase.Source.API)


def test_three_judgments_are_refused_saying_how_many_it_needs(carol, base, one_question):
    judge(carol, 3)
    answer = post(carol, base, {"retrieval_test": one_question.pk})
    assert answer.status_code == 400
    error = answer.json()
    assert error["error"].startswith("pairs: needs at least 20 judged passages or test questions (has 3)")
    assert "generated questions" in error["error"] and error["code"] == "too_few_pairs"
    assert not EmbedderFineTune.objects.exists()


def test_with_generated_questions_asked_for_it_is_queued(carol, base, one_question):
    judge(carol, 3)
    answer = post(carol, base, {"retrieval_test": one_question.pk, "generate_questions": {"chunks": 3}})
    assert answer.status_code == 201
    job = EmbedderFineTune.objects.get(pk=answer.json()["id"])
    assert job.generate["chunks"] == 3 and job.held_out == [0] and job.start_embedder == "all-MiniLM-L6-v2"


def test_another_bases_test_is_not_found_and_a_missing_one_is_named(carol, base, one_question):
    other = small_base(carol, name="Other")
    assert post(carol, other, {"retrieval_test": one_question.pk}).status_code == 404
    answer = post(carol, base, {})
    assert answer.status_code == 400 and answer.json()["error"].startswith("retrieval_test: is required")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"held_out": 1.5}, "held_out"),
        ({"learning_rate": 0.5}, "learning_rate"),
        ({"batch_size": 1}, "batch_size"),
        ({"generate_questions": {"model": "nope"}}, "generate_questions.model"),
        ({"generate_questions": {"chunks": 100000}}, "generate_questions.chunks"),
        ({"epoch": 2}, "epoch"),
    ],
)
def test_a_setting_out_of_range_is_named(carol, base, one_question, body, field):
    answer = post(carol, base, {"retrieval_test": one_question.pk, **body})
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{field}: "), answer.content


def test_a_second_fine_tune_of_a_base_waits_for_the_first(carol, base, one_question):
    body = {"retrieval_test": one_question.pk, "generate_questions": {"chunks": 3}}
    assert post(carol, base, body).status_code == 201
    assert post(carol, base, body).status_code == 409


def test_the_form_says_the_same_and_launches_with_generated_questions(client, carol, base, one_question):
    judge(carol, 3)
    client.force_login(carol)
    form = {"knowledge_base": base.pk, "retrieval_test": one_question.pk, "held_out": "0.3"}
    refused = client.post("/fine-tunes/embedders/new/", form)
    assert refused.status_code == 400
    assert "needs at least 20 judged passages or test questions (has 3)" in refused.content.decode()
    launched = client.post("/fine-tunes/embedders/new/", {**form, "generate": "on", "chunks": "3"})
    job = EmbedderFineTune.objects.get()
    assert launched.status_code == 302 and launched["Location"] == f"/fine-tunes/embedders/{job.pk}/"
    assert job.generate == {"model": job.generate["model"], "chunks": 3} and job.held_out_share == 0.3
