"""A reviewer's correction becomes a failure case (source `production`, linked to the reply and its
conversation, with the version, the model and the input's variables), which an evaluation of the
prompt and a fine-tune's training data then take."""

import pytest

from chat.models import Message
from evals import services as case_services
from evals.models import FailureCase
from finetune import services as finetune_services
from review.models import Review, ReviewItem
from review.services import item_add

pytestmark = pytest.mark.django_db


@pytest.fixture
def item(reply):
    return item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)


def test_the_expected_answer_becomes_a_production_case_of_the_reply(api, item, reply, support_version, alice):
    answer = api("alice").post(f"/api/review-queue/{item.pk}/", {"expected": "It ships tomorrow."})
    assert answer.status_code == 201 and answer.json()["case"]
    case = FailureCase.objects.get(pk=answer.json()["case"])
    assert case.source == "production" and case.expected == "It ships tomorrow." and case.actual == "No idea."
    assert case.source_message == reply and case.source_conversation == reply.conversation
    assert case.prompt_version == support_version and case.model_name == "tiny-llama-v2"
    assert case.input_variables == {"question": "Where is my order?"} and case.created_by == alice
    assert case.shared is False  # as every new case: private until its author shares it
    item.refresh_from_db()
    assert item.status == "corrected" and item.reviewed == 1
    assert Review.objects.get().case == case
    assert Message.objects.get(pk=reply.pk).flagged_at is not None  # the reply shows it was flagged


def test_an_evaluation_of_the_prompt_takes_the_case(api, item, support_version, alice):
    case_id = api("alice").post(f"/api/review-queue/{item.pk}/", {"expected": "It ships tomorrow."}).json()["case"]
    evaluation = case_services.evaluation_create(
        user=alice, version=support_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    assert case_id in evaluation.case_ids


def test_a_fine_tune_trains_on_a_shared_correction(api, item, support, carol):
    case_id = api("alice").post(f"/api/review-queue/{item.pk}/", {"expected": "It ships tomorrow.", "shared": True})
    case_id = case_id.json()["case"]
    planned = finetune_services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora"
    )
    assert planned["cases"] == [case_id]
    assert planned["rows"][0]["prompt"] == [
        {"role": "system", "content": "Answer the customer in one sentence."},
        {"role": "user", "content": "Question: Where is my order?"},
    ]
    assert planned["rows"][0]["completion"] == [{"role": "assistant", "content": "It ships tomorrow."}]


def test_an_empty_or_oversized_answer_is_refused_and_the_item_stays_open(api, item):
    for body, words in (
        ({"expected": "  "}, "expected: write the answer"),
        ({"expected": "x" * 40_000}, "expected: is longer than 32,000 characters"),
        ({"expected": "ok", "verdict": "fine"}, "verdict:"),
        ({"verdict": "maybe"}, "verdict:"),
        ({"note": "?"}, "Send {"),
        ({"expected": "ok", "shared": "yes"}, "shared: must be true or false"),
    ):
        answer = api("alice").post(f"/api/review-queue/{item.pk}/", body)
        assert answer.status_code == 400 and words in answer.json()["error"], (body, answer.json())
    item.refresh_from_db()
    assert item.status == "open" and not FailureCase.objects.exists()


def test_passages_from_a_knowledge_base_the_reviewer_may_not_see_stay_out_of_the_case(api, item, reply, bob):
    from knowledge.services import knowledge_base_create

    private = knowledge_base_create(owner=bob, name="Bob's notes")
    source = {"n": 1, "chunk": None, "text": "secret", "document": "notes.md", "document_id": None, "page": None}
    Message.objects.filter(pk=reply.pk).update(
        retrieval={"query": "order", "sources": [{**source, "heading": "", "score": 0.9, "knowledge_base": private.pk}]}
    )
    shown = api("alice").get("/api/review-queue/?prompt=support").json()["items"][0]["context"]
    assert shown["sources"] == [] and shown["withheld"] == 1
    case_id = api("alice").post(f"/api/review-queue/{item.pk}/", {"expected": "ok"}).json()["case"]
    assert FailureCase.objects.get(pk=case_id).retrieved == []
