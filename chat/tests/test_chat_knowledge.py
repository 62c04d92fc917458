"""Knowledge in chat and prompt versions: what is attached is searched for every reply with the
asking person's access; the reply stores the numbered sources it read (chunk ids) and its page
shows them as citation chips; the sources reach the model in the system turn (or the template's
`passages`); a chat set to say so answers "nothing found" itself instead of guessing."""

import json

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import services as chat_services
from chat.models import Message
from chat.selectors import chat_history_before
from prompts import services as prompt_services

PARTS = "\n\n".join(
    [
        "# Spare parts",
        "Part ZX-4411 is the return spring of the model B press.",
        "Part ZX-4412 is the gasket of the model C press.",
    ]
)
NETWORK = "# Network\n\nTo restart the router, hold the power button for ten seconds until the lights blink."
OFFICE = "# Office\n\nInvoices are sent on the first working day of each month."


def make_base(owner, name, files, *, shared=False):
    from knowledge.ingestion import ingest_document
    from knowledge.services import documents_add, knowledge_base_create

    knowledge_base = knowledge_base_create(owner=owner, name=name, shared=shared)
    added = documents_add(
        user=owner,
        knowledge_base=knowledge_base,
        files=[SimpleUploadedFile(n, text.encode(), "text/markdown") for n, text in files],
    )
    for item in added:
        ingest_document(item.document.pk)
    return knowledge_base


@pytest.fixture
def small_chunks(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0


@pytest.fixture
def plant(alice, small_chunks):
    """alice's private base."""
    return make_base(alice, "Plant", [("parts.md", PARTS), ("network.md", NETWORK)])


@pytest.mark.django_db
def test_a_reply_in_a_chat_with_a_base_attached_reads_numbered_sources(alice, plant):
    conversation = chat_services.conversation_create(owner=alice, system_prompt="Be brief.")
    chat_services.conversation_attach(conversation=conversation, kind="knowledge_base", item_id=plant.pk)
    _, reply = chat_services.reply_request(conversation=conversation, content="How do I restart the router?")
    record = reply.retrieval
    assert record["searched"] == ["Plant"] and record["sources"][0]["document"] == "network.md"
    system = chat_history_before(message=reply)[0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\nAnswer from the numbered sources")
    assert "[1] network.md" in system["content"] and "restart the router" in system["content"]


@pytest.mark.django_db
def test_the_reply_page_shows_citation_chips_from_the_stored_chunks(client, alice, plant):
    conversation = chat_services.conversation_create(owner=alice)
    chat_services.conversation_attach(conversation=conversation, kind="knowledge_base", item_id=plant.pk)
    _, reply = chat_services.reply_request(conversation=conversation, content="return spring ZX-4411")
    Message.objects.filter(pk=reply.pk).update(status="complete", content="It is the return spring [1].")
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/messages/{reply.pk}/").content.decode()
    first = reply.retrieval["sources"][0]
    assert f'data-chunk="{first["chunk"]}"' in page and "[1] parts.md" in page
    assert "ZX-4411 is the return spring" in page  # the passage, opened on click
    assert "searched Plant" in page


@pytest.mark.django_db
def test_a_cited_passage_shows_as_markdown_and_its_markup_cannot_run(client, alice, plant):
    conversation = chat_services.conversation_create(owner=alice)
    chat_services.conversation_attach(conversation=conversation, kind="knowledge_base", item_id=plant.pk)
    _, reply = chat_services.reply_request(conversation=conversation, content="return spring ZX-4411")
    record = reply.retrieval
    record["sources"][0]["text"] = (
        "## Springs\n\nThe **return spring** is ZX-4411.\n\n<script>alert(1)</script><img src=x onerror=alert(2)>"
    )
    Message.objects.filter(pk=reply.pk).update(status="complete", content="ZX-4411 [1].", retrieval=record)
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/messages/{reply.pk}/").content.decode()
    passage = page.split('class="citation__text markdown"')[1].split("</div>")[0]
    assert "<h2>Springs</h2>" in passage and "<strong>return spring</strong>" in passage
    assert "<script" not in passage and "<img" not in passage  # shown as text, never as markup
    assert "&lt;script&gt;" in passage


@pytest.mark.django_db
def test_nothing_above_the_minimum_score_is_said_without_the_model(alice, plant):
    conversation = chat_services.conversation_create(owner=alice)
    chat_services.conversation_attach(conversation=conversation, kind="knowledge_base", item_id=plant.pk)
    chat_services.conversation_set_retrieval(
        conversation=conversation, values={"k": "3", "mode": "dense", "min_score": "0.97", "when_nothing_found": "say"}
    )
    _, reply = chat_services.reply_request(conversation=conversation, content="What is our parental leave policy?")
    assert reply.status == "complete" and reply.content.startswith("I found nothing in the attached knowledge")
    assert reply.retrieval["nothing_passed"]
    chat_services.conversation_set_retrieval(
        conversation=conversation,
        values={"k": "3", "mode": "dense", "min_score": "0.97", "when_nothing_found": "answer"},
    )
    _, reply = chat_services.reply_request(conversation=conversation, content="And the dental plan?")
    assert reply.status == "queued" and reply.retrieval["sources"] == []


@pytest.mark.django_db
def test_retrieval_settings_are_checked(client, alice):
    conversation = chat_services.conversation_create(owner=alice)
    client.force_login(alice)
    response = client.post(f"/chat/{conversation.pk}/knowledge/", {"k": "1000000000", "mode": "hybrid"})
    assert response.status_code == 400 and "from 1 to 50" in response.content.decode()
    response = client.post(
        f"/chat/{conversation.pk}/knowledge/",
        {"k": "4", "mode": "dense", "min_score": "0.3", "when_nothing_found": "answer"},
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.retrieval_settings == {
        "k": 4,
        "mode": "dense",
        "min_score": 0.3,
        "when_nothing_found": "answer",
    }


@pytest.mark.django_db
def test_attaching_is_checked_against_the_person(client, alice, bob, plant, small_chunks):
    shared = make_base(alice, "Office", [("office.md", OFFICE)], shared=True)
    conversation = chat_services.conversation_create(owner=bob)
    client.force_login(bob)
    refused = client.post(f"/chat/{conversation.pk}/knowledge/attach/", {"kind": "knowledge_base", "id": plant.pk})
    assert refused.status_code == 400 and "not shared with you" in refused.content.decode()
    document = plant.documents.first()
    refused = client.post(f"/chat/{conversation.pk}/knowledge/attach/", {"kind": "document", "id": document.pk})
    assert refused.status_code == 400
    suggestions = client.get(f"/chat/{conversation.pk}/knowledge/suggest/?q=").content.decode()
    assert "Office" in suggestions and "Plant" not in suggestions and "parts.md" not in suggestions
    attached = client.post(f"/chat/{conversation.pk}/knowledge/attach/", {"kind": "knowledge_base", "id": shared.pk})
    assert attached.status_code == 200 and 'data-attached="knowledge_base:' in attached.content.decode()
    page = client.get(f"/chat/{conversation.pk}/").content.decode()  # the panel, as the chat page shows it
    assert f'data-attached="knowledge_base:{shared.pk}"' in page and "Search: top 5, hybrid" in page
    assert list(conversation.knowledge_bases.all()) == [shared]
    # alice's chat is not bob's to see or change
    alices = chat_services.conversation_create(owner=alice)
    assert client.get(f"/chat/{alices.pk}/knowledge/").status_code == 404
    assert (
        client.post(f"/chat/{alices.pk}/knowledge/attach/", {"kind": "knowledge_base", "id": shared.pk}).status_code
        == 404
    )
    detached = client.post(f"/chat/{conversation.pk}/knowledge/detach/", {"kind": "knowledge_base", "id": shared.pk})
    assert detached.status_code == 200 and not conversation.knowledge_bases.exists()


@pytest.mark.django_db
def test_a_small_document_attached_is_read_whole(client, alice, plant):
    conversation = chat_services.conversation_create(owner=alice)
    network = plant.documents.get(name="network.md")
    chat_services.conversation_attach(conversation=conversation, kind="document", item_id=network.pk)
    client.force_login(alice)
    panel = client.get(f"/chat/{conversation.pk}/knowledge/").content.decode()
    assert "network.md" in panel and ">whole<" in panel
    _, reply = chat_services.reply_request(conversation=conversation, content="Anything about spares?")
    assert reply.retrieval["whole"] == ["network.md"] and len(reply.retrieval["sources"]) == network.chunk_count


@pytest.mark.django_db
def test_a_version_attaches_bases_and_a_private_one_gives_others_nothing(client, alice, bob, plant):
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Support",
        slug="support",
        version={
            "instructions": "Answer the customer.",
            "template": "{{ question }}",
            "retrieval": {"knowledge_bases": [plant.pk], "k": 2, "mode": "hybrid", "query": "question"},
        },
    )
    version = prompt.versions.get()
    assert version.retrieval == {
        "knowledge_bases": [{"id": plant.pk, "name": "Plant"}],
        "k": 2,
        "mode": "hybrid",
        "min_score": None,
        "query": "question",
        "layout": "system",
    }
    _, reply = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"question": "How do I restart the router?"}
    )
    assert len(reply.retrieval["sources"]) == 2 and reply.retrieval["sources"][0]["document"] == "network.md"
    _, bobs = chat_services.conversation_start_from_prompt(
        owner=bob, prompt_version=version, variables={"question": "How do I restart the router?"}
    )
    assert bobs.retrieval["sources"] == [] and bobs.retrieval["withheld"] == 1
    client.force_login(bob)
    page = client.get(f"/chat/{bobs.conversation_id}/messages/{bobs.pk}/").content.decode()
    assert "private to its owner and gave you nothing" in page
    version_page = client.get(version.get_absolute_url()).content.decode()
    # alice's private base is not named to bob (issue 25): "a knowledge base you cannot see"
    assert "You get nothing from a knowledge base you cannot see" in version_page and "Plant" not in version_page
    # bob cannot attach alice's private base by id to a version of his own
    with pytest.raises(prompt_services.PromptError, match="not shared with you"):
        prompt_services.prompt_create(
            owner=bob,
            name="Mine",
            slug="mine",
            version={"template": "{{ q }}", "retrieval": {"knowledge_bases": [plant.pk]}},
        )


@pytest.mark.django_db
def test_a_template_lays_out_the_passages_itself(alice, plant):
    template = (
        "Sources:\n{% for p in passages %}({{ p.number }}) {{ p.document }}: {{ p.text }}\n{% endfor %}Q: {{ q }}"
    )
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Laid out",
        slug="laid-out",
        version={"template": template, "retrieval": {"knowledge_bases": [plant.pk], "k": 1}},
    )
    version = prompt.versions.get()
    assert version.variables == ["q"] and version.retrieval["layout"] == "template"
    conversation, reply = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"q": "Which part is the gasket of the model C press?"}
    )
    question = reply.parent
    assert question.content.startswith("Sources:\n(1) parts.md: ") and "ZX-4412" in question.content
    assert question.content.endswith("Q: Which part is the gasket of the model C press?")
    assert "numbered sources" not in (
        chat_history_before(message=reply)[0]["content"]
        if chat_history_before(message=reply)[0]["role"] == "system"
        else ""
    )


@pytest.mark.django_db
def test_retrieval_is_part_of_the_version_diff_and_export(client, alice, plant, bob):
    prompt = prompt_services.prompt_create(
        owner=alice, name="Support", slug="support", version={"template": "{{ question }}"}
    )
    prompt_services.version_create(
        prompt=prompt,
        author=alice,
        fields={
            "template": "{{ question }}",
            "retrieval": {"knowledge_bases": [plant.pk], "k": 3, "mode": "dense", "min_score": 0.4},
        },
    )
    client.force_login(alice)
    diff = client.get("/prompts/support/diff/?from=1&to=2").content.decode()
    assert "<h2>Knowledge <span" in diff and "<ins>Plant</ins>" in diff and "Passages: top 3, dense search" in diff
    exported = prompt_services.prompt_export(prompt)
    assert exported["versions"][1]["retrieval"]["knowledge_bases"] == [{"id": plant.pk, "name": "Plant"}]
    exported["prompt"]["slug"] = "support-copy"
    copy = prompt_services.prompt_import(data=json.loads(json.dumps(exported)), owner=alice)
    assert copy.versions.get(number=2).retrieval["knowledge_bases"] == [{"id": plant.pk, "name": "Plant"}]
    exported["prompt"]["slug"] = "elsewhere"
    exported["versions"][1]["retrieval"]["knowledge_bases"] = [{"id": 999, "name": "Their handbook"}]
    moved = prompt_services.prompt_import(data=exported, owner=bob)
    assert moved.versions.get(number=2).retrieval["knowledge_bases"] == [{"id": None, "name": "Their handbook"}]


@pytest.mark.django_db
def test_the_version_form_attaches_a_base(client, alice, plant):
    prompt = prompt_services.prompt_create(owner=alice, name="Support", slug="support", version={"template": "{{ q }}"})
    client.force_login(alice)
    form = client.get("/prompts/support/versions/new/?from=1").content.decode()
    assert 'name="knowledge_base" value="%d"' % plant.pk in form
    response = client.post(
        "/prompts/support/versions/new/",
        {
            "from": "1",
            "template": "{{ q }}",
            "knowledge_base": [str(plant.pk)],
            "retrieval_k": "4",
            "retrieval_mode": "bm25",
            "retrieval_min_score": "",
            "retrieval_query": "q",
            "output_type": "text",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert prompt.versions.get(number=2).retrieval["knowledge_bases"] == [{"id": plant.pk, "name": "Plant"}]
    assert prompt.versions.get(number=2).retrieval["k"] == 4


@pytest.mark.django_db(transaction=True)
async def test_the_model_reads_the_sources_and_the_reply_keeps_them(alice, plant, chat_client, start_worker):
    conversation = await database_sync_to_async(chat_services.conversation_create)(owner=alice)
    await database_sync_to_async(chat_services.conversation_attach)(
        conversation=conversation, kind="knowledge_base", item_id=plant.pk
    )
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    await client.send({"type": "send", "content": "How do I restart the router?"})
    done = (await client.receive_until("done", timeout=120))[-1]
    assert done["status"] == "complete"
    reply = await Message.objects.aget(pk=done["message_id"])
    assert reply.retrieval["sources"][0]["document"] == "network.md"
    # What the worker fed the model held the sources: far more prompt tokens than the question alone.
    assert reply.prompt_tokens > 60


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_the_openai_api_retrieves_as_the_tokens_owner(alice, bob, plant):
    from django.test import Client

    from accounts.services import api_token_create

    prompt_services.prompt_create(
        owner=alice,
        name="Support",
        slug="support",
        version={
            "template": "{{ question }}",
            "max_new_tokens": 4,
            "retrieval": {"knowledge_bases": [plant.pk], "k": 2, "query": "question"},
        },
    )
    stored = {}
    for person in (alice, bob):
        token = api_token_create(user=person, name="sdk")[1]
        answer = Client().post(
            "/v1/chat/completions",
            json.dumps(
                {"model": "prompt:support", "messages": [{"role": "user", "content": "How do I restart the router?"}]}
            ),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert answer.status_code == 200, answer.content[:500]
        stored[person.username] = Message.objects.filter(conversation__owner=person, role="assistant").get().retrieval
    assert stored["alice"]["sources"][0]["document"] == "network.md"
    assert stored["bob"]["sources"] == [] and stored["bob"]["withheld"] == 1


@pytest.mark.django_db
def test_an_exported_chat_keeps_its_sources_and_an_import_cannot_forge_links(client, alice, plant):
    from chat import exchange

    conversation = chat_services.conversation_create(owner=alice)
    chat_services.conversation_attach(conversation=conversation, kind="knowledge_base", item_id=plant.pk)
    _, reply = chat_services.reply_request(conversation=conversation, content="How do I restart the router?")
    Message.objects.filter(pk=reply.pk).update(status="complete", content="Hold the power button [1].")
    exported = exchange.conversation_export_json(conversation)
    assert exported["messages"][1]["retrieval"]["sources"][0]["document"] == "network.md"
    exported["messages"][1]["retrieval"]["sources"][0].update(
        {"knowledge_base": "x/../../admin", "document_id": {"evil": 1}, "text": "<script>alert(1)</script>"}
    )
    upload = SimpleUploadedFile("chat.json", json.dumps(exported).encode(), "application/json")
    [copy] = exchange.conversations_import(owner=alice, upload=upload)
    imported = copy.messages.get(role="assistant")
    source = imported.retrieval["sources"][0]
    assert source["knowledge_base"] is None and source["document_id"] is None and imported.retrieval["imported"]
    client.force_login(alice)
    page = client.get(f"/chat/{copy.pk}/messages/{imported.pk}/").content.decode()
    assert "[1] network.md" in page and "<script>alert(1)" not in page and "Open the document" not in page


@pytest.mark.django_db
def test_ingestion_is_told_when_people_wait_for_replies(alice):
    from chat.models import Conversation
    from studio import chat_activity

    assert not chat_activity.replies_in_progress()
    unlisted = chat_services.reply_request_unlisted(
        owner=alice,
        kind=Conversation.Kind.EVALUATION,
        model_name="",
        messages=[{"role": "user", "content": "case"}],
        parameters={},
    )
    assert unlisted.status == "queued" and not chat_activity.replies_in_progress()  # an evaluation's: background
    conversation = chat_services.conversation_create(owner=alice)
    chat_services.reply_request(conversation=conversation, content="Hello?")
    assert chat_activity.replies_in_progress()
