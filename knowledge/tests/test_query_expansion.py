"""Query expansion through a real model worker on the tiny model: the rewrites come from the served
model's reply (its unlisted conversation removed after), the question's own ranking still leads, the
time is returned; with no model worker the search goes on with the question alone and says why."""

import pytest

from chat.models import Conversation
from knowledge import expansion, services
from knowledge.search import search

from .conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

HANDBOOK = "\n\n".join(
    [
        "# Handbook",
        "To restart the router, hold the power button for ten seconds until the lights blink.",
        "The cafeteria serves lunch from noon to two.",
        "Invoices are sent on the first working day of each month.",
    ]
)


@pytest.fixture
def handbook(alice, ingest, settings):
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = services.knowledge_base_create(owner=alice, name="Handbook")
    (document,) = ingest(knowledge_base, alice, [upload("handbook.md", HANDBOOK)])
    assert document.status == "ready", document.error
    return knowledge_base


def test_the_rewrites_are_the_served_models_and_the_question_still_leads(alice, handbook, model_worker):
    question = "When is lunch served?"
    plain = search(user=alice, knowledge_base=handbook, query=question, k=3)
    expanded = search(user=alice, knowledge_base=handbook, query=question, k=3, expand_query=True)
    assert expanded.expansion is not None and expanded.expansion.ms > 0
    assert expanded.notes == [] or expanded.expansion.rewrites == []  # a note only when it failed
    assert all(0 < len(r) <= expansion.MAX_REWRITE_CHARS for r in expanded.expansion.rewrites)
    assert len(expanded.expansion.rewrites) <= expansion.MAX_REWRITES
    assert expanded.hits[0].chunk_id == plain.hits[0].chunk_id and "lunch" in expanded.hits[0].text
    assert not Conversation.objects.filter(kind=Conversation.Kind.RETRIEVAL).exists()  # removed once read


def test_without_a_model_worker_the_search_goes_on_and_says_why(alice, handbook, settings):
    settings.KNOWLEDGE_EXPANSION_TIMEOUT = 1.0
    answer = search(user=alice, knowledge_base=handbook, query="When is lunch served?", expand_query=True)
    assert "lunch" in answer.hits[0].text
    assert answer.expansion.rewrites == [] and answer.notes == [answer.expansion.note]
    assert answer.notes[0].startswith("not expanded:") and "KNOWLEDGE_EXPANSION_TIMEOUT" in answer.notes[0]
    assert not Conversation.objects.filter(kind=Conversation.Kind.RETRIEVAL).exists()


def test_rewrites_are_read_off_the_reply_once_each_without_the_question():
    reply = (
        '1. When do they serve lunch?\n- "When do they serve lunch?"\nwhen is lunch served?\n\nLunch hours\nx\nFourth'
    )
    assert expansion.rewrites_in(reply, "When is lunch served?") == [
        "When do they serve lunch?",
        "Lunch hours",
        "Fourth",
    ]
