"""Judged failure cases as a retrieval test of a knowledge base: the cases its owner may see whose
right passages were judged from that base, each as its question (what its retrieval searched for)
with those passages (a judged chunk by its text); from the service, the API and the base's page."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.services import api_token_create
from evals.models import FailureCase
from evals.retrieval_tests import retrieval_test_from_cases
from knowledge import retrieval_tests
from knowledge.models import Chunk, RetrievalTest
from knowledge.retrieval_tests import RetrievalTestError
from prompts import services as prompt_services

pytestmark = pytest.mark.django_db

WARRANTY = "The Quibble 3000 blender carries a warranty of seven years on its motor."
JUG = "The Quibble jug holds one and a half litres."
MANUAL = f"# Warranty\n\n{WARRANTY}\n\n# Jug\n\n{JUG}\n\n# Lid\n\nThe Quibble lid locks with a quarter turn clockwise."


def base_of(owner, name, text, settings):
    from knowledge.ingestion import ingest_document
    from knowledge.services import documents_add, knowledge_base_create

    knowledge_base = knowledge_base_create(owner=owner, name=name, shared=True)
    [added] = documents_add(
        user=owner, knowledge_base=knowledge_base, files=[SimpleUploadedFile(f"{name}.md", text.encode())]
    )
    ingest_document(added.document.pk)
    return knowledge_base


@pytest.fixture
def manual(alice, settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    return base_of(alice, "quibble", MANUAL, settings)


def case(user, *, text="", judgment, retrieved=(), shared=False, version=None, variables=None):
    return FailureCase.objects.create(
        created_by=user,
        input_text=text,
        input_variables=variables or {},
        prompt_version=version,
        expected="…",
        retrieved=list(retrieved),
        retrieval_judgment=judgment,
        shared=shared,
    )


@pytest.fixture
def judged(alice, bob, manual, settings):
    """alice's private case judged on a chunk it read; bob's shared case of a prompt that retrieves
    from the manual, judged with a text; and cases that must not count."""
    warranty = Chunk.objects.get(knowledge_base=manual, text__contains="seven years")
    source = {
        "n": 1,
        "chunk": warranty.pk,
        "text": warranty.text,
        "document": "quibble.md",
        "knowledge_base": manual.pk,
    }
    case(
        alice,
        text="How long is the motor guaranteed?",
        retrieved=[source],
        judgment={"right": [{"chunk": warranty.pk, "document": "quibble.md", "page": None, "text": "stale"}]},
    )
    prompt = prompt_services.prompt_create(
        owner=bob,
        name="Quibble help",
        slug="quibble",
        version={
            "instructions": "Answer from the sources.",
            "template": "{{ question }}",
            "retrieval": {"knowledge_bases": [manual.pk], "k": 3, "mode": "dense"},
        },
    )
    case(
        bob,
        version=prompt.versions.get(),
        variables={"question": "How much does the jug hold?"},
        judgment={"right": [{"text": JUG}]},
        shared=True,
    )
    case(bob, text="Bob's private question", judgment={"right": [{"text": JUG}]})  # alice cannot see it
    case(alice, text="Does it make coffee?", judgment={"right": [], "not_in_kb": True})  # nothing to find
    case(alice, text="Not judged", judgment={})
    other = base_of(alice, "other", "# Other\n\nSomething else entirely.", settings)
    elsewhere = Chunk.objects.get(knowledge_base=other)
    case(
        alice,
        text="From the other base",
        retrieved=[{"chunk": elsewhere.pk, "knowledge_base": other.pk, "text": elsewhere.text}],
        judgment={"right": [{"chunk": elsewhere.pk, "text": elsewhere.text}]},
    )
    return prompt


def test_judged_cases_of_the_base_become_a_retrieval_test(alice, manual, judged):
    test = retrieval_test_from_cases(alice, manual)
    assert (test.name, test.source, test.question_count) == ("Judged failure cases", "cases", 2)
    questions = [(q.question, q.passages) for q in test.questions.all()]
    warranty = Chunk.objects.get(knowledge_base=manual, text__contains="seven years").text
    assert questions == [
        ("How long is the motor guaranteed?", [{"text": warranty}]),  # the chunk's text now, not the stale copy
        ("How much does the jug hold?", [{"text": JUG}]),  # the variable the version searches with
    ]
    state = retrieval_tests.retrieval_test_state(test, user=alice)
    test.refresh_from_db()
    assert state.status == "ready" and test.figures["recall_at_10"] == 1.0


def test_only_the_cases_of_a_prompt_when_one_is_named(alice, manual, judged):
    test = retrieval_test_from_cases(alice, manual, prompt=judged, name="Quibble cases")
    assert test.name == "Quibble cases" and [q.question for q in test.questions.all()] == [
        "How much does the jug hold?"
    ]
    with pytest.raises(RetrievalTestError, match="no prompt of that slug"):
        retrieval_test_from_cases(alice, manual, prompt="nope")


def test_the_api_and_the_page_build_one_and_say_when_there_is_nothing_to_build(alice, bob, manual, judged):
    token = api_token_create(user=alice, name="t")[1]
    answer = Client().post(
        f"/api/knowledge/{manual.pk}/retrieval-tests/",
        json.dumps({"name": "From cases", "from_cases": True}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 201 and answer.json()["questions"] == 2
    client = Client()
    client.force_login(alice)
    clicked = client.post(f"/knowledge/{manual.pk}/retrieval-tests/from-cases/")
    newest = RetrievalTest.objects.order_by("-pk").first()
    assert clicked.status_code == 302 and clicked["Location"] == f"/knowledge/{manual.pk}/retrieval-tests/{newest.pk}/"

    FailureCase.objects.update(retrieval_judgment={})
    refused = client.post(f"/knowledge/{manual.pk}/retrieval-tests/from-cases/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and "no failure case you can see has judged passages" in refused.content.decode()
    bobs = Client()
    bobs.force_login(bob)
    assert bobs.post(f"/knowledge/{manual.pk}/retrieval-tests/from-cases/").status_code == 403
