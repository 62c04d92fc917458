"""Export (JSON: the whole tree; Markdown: the active branch) and import (our JSON, ChatGPT's
conversations.json) of conversations, and the files an import refuses whole."""

import copy
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import exchange
from chat.models import Conversation, Message
from chat.selectors import Branches
from chat.services import _append_message, branch_switch, conversation_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def trip(alice):
    """Alice's chat with two branches: she edited her second question, then went back to the
    first branch (the edited one still remembers its reply)."""
    conversation = conversation_create(owner=alice, title="Trip plans", system_prompt="Be brief.")
    conversation.parameters = {"temperature": 0.3, "max_new_tokens": 200}
    conversation.save(update_fields=["parameters"])
    question = _append_message(conversation, None, role="user", content="Where to go in May?")
    answer = _append_message(
        conversation,
        question.pk,
        role="assistant",
        content="Lisbon.",
        model_name="tiny",
        parameters={"temperature": 0.3, "seed": 7},
        prompt_tokens=12,
        completion_tokens=3,
        feedback="up",
    )
    june = _append_message(conversation, answer.pk, role="user", content="And in June?")
    _append_message(
        conversation, june.pk, role="assistant", content="Oslo.", model_name="tiny", finish_reason="length"
    )  # cut at its maximum tokens: the page offers Continue
    july = _append_message(conversation, answer.pk, role="user", content="And in **July**?")
    _append_message(conversation, july.pk, role="assistant", content="Reykjavík", status="stopped", model_name="tiny")
    branch_switch(conversation=conversation, message_id=june.pk)
    conversation.refresh_from_db()
    return conversation


def tree(conversation) -> dict:
    """The conversation's shape and text, by position: what an export and import must keep."""
    messages = list(conversation.messages.order_by("pk"))
    index = {m.pk: n for n, m in enumerate(messages)}
    branches = Branches.of(conversation)
    return {
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "parameters": conversation.parameters,
        "messages": [
            (
                index.get(m.parent_id),
                index.get(m.active_child_id),
                m.role,
                m.content,
                m.status,
                m.model_name,
                m.parameters,
                m.prompt_tokens,
                m.completion_tokens,
                m.feedback,
                m.finish_reason,
                m.created_at,
            )
            for m in messages
        ],
        "active_path": [index[pk] for pk in branches.active_path()],
    }


def upload(document, name="conversations.json") -> SimpleUploadedFile:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return SimpleUploadedFile(name, raw, content_type="application/json")


def test_the_json_export_keeps_every_branch(client, alice, trip):
    client.force_login(alice)
    response = client.get(f"/chat/{trip.pk}/export/?format=json")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="trip-plans.json"'
    exported = json.loads(response.content)
    assert exported["format"] == "chat-prompt-studio.conversation" and exported["version"] == 1
    assert exported["title"] == "Trip plans" and exported["system_prompt"] == "Be brief."
    assert exported["prompt_version"] is None and exported["parameters"] == {"temperature": 0.3, "max_new_tokens": 200}
    assert [(m["id"], m["parent"], m["content"]) for m in exported["messages"]] == [
        (1, None, "Where to go in May?"),
        (2, 1, "Lisbon."),
        (3, 2, "And in June?"),
        (4, 3, "Oslo."),
        (5, 2, "And in **July**?"),
        (6, 5, "Reykjavík"),
    ]
    assert exported["active_path"] == [1, 2, 3, 4]
    lisbon = exported["messages"][1]
    assert lisbon["model"] == "tiny" and lisbon["parameters"] == {"temperature": 0.3, "seed": 7}
    assert lisbon["usage"]["prompt_tokens"] == 12 and lisbon["feedback"] == "up"
    assert [m["finish_reason"] for m in exported["messages"]] == ["", "", "", "length", "", ""]


def test_an_export_imports_back_as_the_importers_own_with_the_same_tree(client, alice, bob, trip):
    client.force_login(alice)
    exported = client.get(f"/chat/{trip.pk}/export/?format=json").content
    client.force_login(bob)
    response = client.post("/chat/import/", {"file": upload(exported)})
    imported = Conversation.objects.get(owner=bob)
    assert response.status_code == 302 and response["Location"] == f"/chat/{imported.pk}/"
    assert imported.kind == Conversation.Kind.CHAT and imported.pk != trip.pk
    assert imported.title == "Trip plans (imported)"  # told apart from the chat it came from
    assert tree(imported) == {**tree(trip), "title": "Trip plans (imported)"}
    assert imported.created_at == trip.created_at
    assert Conversation.objects.filter(owner=alice).count() == 1
    # Imported again from its own export: still one mark.
    client.post("/chat/import/", {"file": upload(client.get(f"/chat/{imported.pk}/export/?format=json").content)})
    assert Conversation.objects.filter(owner=bob).order_by("pk").last().title == "Trip plans (imported)"


def test_the_markdown_export_shows_only_the_active_branch(client, alice, trip):
    client.force_login(alice)
    response = client.get(f"/chat/{trip.pk}/export/?format=markdown")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="trip-plans.md"'
    text = response.content.decode()
    assert text.startswith("# Trip plans\n") and "Be brief." in text
    assert (
        text.index("**You**\n\nWhere to go in May?")
        < text.index("**Assistant** (tiny)\n\nLisbon.")
        < text.index("**You**\n\nAnd in June?")
        < text.index("Oslo.")
    )
    assert "July" not in text and "Reykjavík" not in text


def test_a_title_made_from_a_long_first_message_is_cut_at_a_word_and_exported_so(client, alice):
    from chat.services import TITLE_FROM_MESSAGE_CHARS, reply_request

    conversation = conversation_create(owner=alice)
    question = (
        "Please compare the maintenance schedules of the model B and model C presses in detail, with their spare parts"
    )
    reply_request(conversation=conversation, content=question)
    conversation.refresh_from_db()
    assert conversation.title == "Please compare the maintenance schedules of the model B and…"
    assert len(conversation.title) <= TITLE_FROM_MESSAGE_CHARS
    client.force_login(alice)
    text = client.get(f"/chat/{conversation.pk}/export/?format=markdown").content.decode()
    assert text.startswith("# Please compare the maintenance schedules of the model B and…\n")
    assert f"**You**\n\n{question}" in text  # the message itself whole


def test_a_long_imported_title_is_cut_at_a_word_before_its_mark(client, alice, trip):
    client.force_login(alice)
    exported = json.loads(client.get(f"/chat/{trip.pk}/export/?format=json").content)
    exported["title"] = "word " * 60
    client.post("/chat/import/", {"file": upload(exported)})
    title = Conversation.objects.filter(owner=alice).order_by("pk").last().title
    assert len(title) <= 200 and title.endswith("word… (imported)")


def test_someone_elses_conversation_is_not_exported(client, bob, trip):
    client.force_login(bob)
    for kind in ("json", "markdown"):
        assert client.get(f"/chat/{trip.pk}/export/?format={kind}").status_code == 404


def test_an_unknown_export_format_is_a_400(client, alice, trip):
    client.force_login(alice)
    response = client.get(f"/chat/{trip.pk}/export/?format=pdf")
    assert response.status_code == 400 and "json or markdown" in response.content.decode()


def test_export_and_import_require_login(client, trip):
    for response in (
        client.get(f"/chat/{trip.pk}/export/?format=json"),
        client.get("/chat/import/"),
        client.post("/chat/import/", {"file": upload({"format": "x"})}),
    ):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Conversation.objects.count() == 1


def test_the_import_page_shows_the_form_and_the_pages_link_to_it(client, alice, trip):
    client.force_login(alice)
    page = client.get("/chat/import/").content.decode()
    assert 'name="file"' in page and 'enctype="multipart/form-data"' in page
    detail = client.get(f"/chat/{trip.pk}/").content.decode()
    assert f"/chat/{trip.pk}/export/?format=json" in detail and f"/chat/{trip.pk}/export/?format=markdown" in detail
    assert 'href="/chat/import/"' in detail


def test_a_conversation_from_a_prompt_version_links_it_again_and_an_unknown_one_is_left_out(alice, bob):
    from prompts import services as prompt_services

    prompt = prompt_services.prompt_create(
        owner=alice, name="Triage", slug="triage", version={"template": "{{ input }}", "instructions": "Sort it."}
    )
    conversation = conversation_create(owner=alice, title="From triage")
    conversation.prompt_version = prompt.versions.get()
    conversation.prompt_variables = {"input": "a ticket"}
    conversation.save()
    exported = exchange.conversation_export_json(conversation)
    assert exported["prompt_version"] == "triage@1"
    unknown = {**copy.deepcopy(exported), "prompt_version": "nowhere@3"}
    linked, unlinked = exchange.conversations_import(owner=bob, upload=upload([exported, unknown]))
    assert linked.prompt_version == prompt.versions.get() and linked.prompt_variables == {"input": "a ticket"}
    assert unlinked.prompt_version is None and unlinked.prompt_variables == {}


# ChatGPT's conversations.json: a system node, a hidden one, an edit that made a branch, a tool
# call in the second branch, and the current node on that branch.


def chatgpt_node(node_id, parent, children, role=None, text="", **extra):
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": 1714000000.0 + len(node_id),
            "update_time": None,
            "content": {"content_type": extra.pop("content_type", "text"), "parts": [text]},
            "status": extra.pop("status", "finished_successfully"),
            "end_turn": True,
            "weight": 1.0,
            "metadata": extra.pop("metadata", {}),
            "recipient": extra.pop("recipient", "all"),
            **extra,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


CHATGPT_EXPORT = [
    {
        "title": "Haiku help",
        "create_time": 1714000000.5,
        "update_time": 1714000900.5,
        "mapping": {
            "root": chatgpt_node("root", None, ["sys"]),
            "sys": chatgpt_node(
                "sys", "root", ["rain", "snow"], "system", "", metadata={"is_visually_hidden_from_conversation": True}
            ),
            "rain": chatgpt_node("rain", "sys", ["rain-reply"], "user", "Write a haiku about rain."),
            "rain-reply": chatgpt_node(
                "rain-reply", "rain", [], "assistant", "Soft rain on the roof", metadata={"model_slug": "gpt-4o"}
            ),
            "snow": chatgpt_node("snow", "sys", ["snow-call"], "user", "Write a haiku about snow."),
            "snow-call": chatgpt_node(
                "snow-call",
                "snow",
                ["snow-tool"],
                "assistant",
                "search('snow haiku')",
                content_type="code",
                recipient="browser",
            ),
            "snow-tool": chatgpt_node(
                "snow-tool", "snow-call", ["snow-reply"], "tool", "results...", content_type="execution_output"
            ),
            "snow-reply": chatgpt_node(
                "snow-reply",
                "snow-tool",
                ["french"],
                "assistant",
                "White hush on the pines",
                metadata={"model_slug": "gpt-4o"},
            ),
            "french": chatgpt_node("french", "snow-reply", ["french-reply"], "user", "Now in French."),
            "french-reply": chatgpt_node(
                "french-reply",
                "french",
                [],
                "assistant",
                "Neige sur les pins",
                metadata={"model_slug": "gpt-4o"},
                status="in_progress",
            ),
        },
        "moderation_results": [],
        "current_node": "french-reply",
        "conversation_id": "6620c0de-0000-0000-0000-000000000000",
        "default_model_slug": "gpt-4o",
    },
    {
        "title": "Quick question",
        "create_time": 1714100000.0,
        "mapping": {
            "a": chatgpt_node("a", None, ["b"]),
            "b": chatgpt_node("b", "a", ["c"], "user", "2+2?"),
            "c": chatgpt_node("c", "b", [], "assistant", "4"),
        },
        "current_node": "c",
    },
]


def test_a_chatgpt_export_imports_with_its_branches_and_current_branch(client, alice):
    client.force_login(alice)
    response = client.post("/chat/import/", {"file": upload(CHATGPT_EXPORT)})
    haiku, quick = Conversation.objects.filter(owner=alice).order_by("pk")
    assert response.status_code == 302 and response["Location"] == f"/chat/{haiku.pk}/"
    assert haiku.title == "Haiku help (imported)" and quick.title == "Quick question (imported)"
    by_content = {m.content: m for m in haiku.messages.all()}
    assert sorted(by_content) == [
        "Neige sur les pins",
        "Now in French.",
        "Soft rain on the roof",
        "White hush on the pines",
        "Write a haiku about rain.",
        "Write a haiku about snow.",
    ]
    rain, snow = by_content["Write a haiku about rain."], by_content["Write a haiku about snow."]
    assert rain.parent is None and snow.parent is None  # the system node is left out: both start the chat
    assert by_content["White hush on the pines"].parent == snow  # the tool call and its output are left out
    assert by_content["Soft rain on the roof"].model_name == "gpt-4o"
    assert by_content["Neige sur les pins"].status == Message.Status.STOPPED  # was in progress
    path = [m.content for m in haiku.messages.filter(pk__in=Branches.of(haiku).active_path()).order_by("pk")]
    assert path == ["Write a haiku about snow.", "White hush on the pines", "Now in French.", "Neige sur les pins"]
    assert Branches.of(haiku).siblings(snow.pk) == [rain.pk, snow.pk]
    assert [m.content for m in quick.messages.order_by("pk")] == ["2+2?", "4"]
    assert haiku.created_at.timestamp() == 1714000000.5


# Refused files: a 400 that says what and where, and nothing imported.


def refused(client, user, document, *, htmx=False) -> str:
    client.force_login(user)
    before = (Conversation.objects.count(), Message.objects.count())
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = client.post("/chat/import/", {"file": upload(document)}, **headers)
    assert response.status_code == 400
    assert (Conversation.objects.count(), Message.objects.count()) == before
    return response.content.decode()


def test_malformed_json_is_refused(client, alice):
    page = refused(client, alice, b'{"format": "chat-prompt-studio.conversation", "messages": [')
    assert "Nothing was imported. The file is not valid JSON" in page


def test_a_file_over_the_limit_is_refused_before_it_is_read(client, alice, settings):
    settings.CHAT_IMPORT_MAX_BYTES = 1024
    page = refused(client, alice, b"[" + b" " * 2000 + b"]")
    assert "The file is 2,002 bytes; an import takes at most 1,024 bytes." in page

    class Unreadable:
        size = 5_000

        def read(self, *args):
            raise AssertionError("read before its size was checked")

    with pytest.raises(exchange.ImportRefused, match="at most 1,024 bytes"):
        exchange.conversations_import(owner=alice, upload=Unreadable())


def test_the_import_route_lets_a_file_of_the_limit_through_the_body_limit(settings):
    from studio.request_limits import body_limit_for

    assert body_limit_for("/chat/import/") > settings.CHAT_IMPORT_MAX_BYTES > body_limit_for("/chat/new/")


def test_a_nul_byte_is_refused_naming_where_it_is(client, alice, trip):
    exported = exchange.conversation_export_json(trip)
    exported["messages"][1]["content"] = "Lis\x00bon"
    page = refused(client, alice, exported)
    assert "conversation 1, message 2: content contains a NUL character" in page


def test_a_finish_reason_other_than_stop_or_length_is_refused_naming_where_it_is(client, alice, trip):
    exported = exchange.conversation_export_json(trip)
    exported["messages"][3]["finish_reason"] = "tool_calls"
    page = refused(client, alice, exported)
    assert "conversation 1, message 4: finish_reason must be stop or length" in page


def test_a_message_that_is_not_text_is_refused_naming_where_it_is(client, alice, trip):
    exported = exchange.conversation_export_json(trip)
    exported["messages"][3]["content"] = {"text": "Oslo."}
    page = refused(client, alice, [exported, exported, exported])  # the first two were fine: still nothing
    assert "Nothing was imported. conversation 1, message 4: content is not text" in page


def test_a_file_naming_another_owner_is_imported_as_the_importers(client, alice, bob, trip):
    exported = exchange.conversation_export_json(trip)
    exported.update(owner="bob", owner_id=bob.pk, user={"id": bob.pk, "username": "bob"})
    for message in exported["messages"]:
        message["author"] = "bob"
    client.force_login(alice)
    response = client.post("/chat/import/", {"file": upload(exported)})
    assert response.status_code == 302
    assert not Conversation.objects.filter(owner=bob).exists()
    assert Conversation.objects.filter(owner=alice).count() == 2


def test_more_messages_than_a_conversation_takes_are_refused(client, alice):
    messages = [
        {"id": n, "parent": n - 1 if n > 1 else None, "role": "user" if n % 2 else "assistant", "content": "hi"}
        for n in range(1, exchange.MAX_MESSAGES + 2)
    ]
    document = {"format": "chat-prompt-studio.conversation", "version": 1, "title": "Long", "messages": messages}
    page = refused(client, alice, document)
    assert "conversation 1: it holds 10,001 messages; a conversation takes at most 10,000" in page


def test_a_chatgpt_message_over_the_message_limit_is_refused_naming_its_node(client, alice, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 20
    page = refused(client, alice, CHATGPT_EXPORT)
    assert "conversation 1, node rain: content is 25 characters; the limit is 20" in page


def test_more_messages_in_all_than_an_import_takes_are_refused(client, alice, trip, monkeypatch):
    monkeypatch.setattr(exchange, "MAX_MESSAGES_IN_ALL", 10)
    exported = exchange.conversation_export_json(trip)
    assert "more than 10 messages in all" in refused(client, alice, [exported, exported])


def test_a_loop_of_parents_and_a_bad_active_path_are_refused(client, alice):
    document = {
        "format": "chat-prompt-studio.conversation",
        "version": 1,
        "messages": [
            {"id": 1, "parent": None, "role": "user", "content": "a"},
            {"id": 2, "parent": 3, "role": "assistant", "content": "b"},
            {"id": 3, "parent": 2, "role": "user", "content": "c"},
        ],
    }
    assert "conversation 1, message 2: its parents lead back to itself" in refused(client, alice, document)
    document["messages"] = document["messages"][:1] + [{"id": 2, "parent": 1, "role": "assistant", "content": "b"}]
    document["active_path"] = [2]
    assert "active_path: message 2 does not follow the start" in refused(client, alice, document)


def test_sampling_parameters_out_of_range_are_refused(client, alice, trip):
    exported = exchange.conversation_export_json(trip)
    exported["parameters"] = {"max_new_tokens": 10**9}
    assert "conversation 1: parameters.max_new_tokens must be between 1 and" in refused(client, alice, exported)
    exported["parameters"] = {"stop": ["a", "b", "c", "d", "e"]}  # the most a request (and any engine) takes is 4
    with pytest.raises(exchange.ImportRefused) as refusal:
        exchange.conversations_import(owner=alice, upload=upload(exported))
    assert (refusal.value.code, refusal.value.field) == ("invalid_sampling", "conversation 1")


def test_a_file_that_is_no_conversation_is_refused(client, alice):
    assert "neither a conversation exported from the studio" in refused(client, alice, [{"hello": "world"}])
    assert "The file holds no conversations." in refused(client, alice, [])


def test_htmx_gets_a_client_redirect_or_the_form_with_the_error(client, alice, trip):
    exported = exchange.conversation_export_json(trip)
    client.force_login(alice)
    response = client.post("/chat/import/", {"file": upload(exported)}, HTTP_HX_REQUEST="true")
    newest = Conversation.objects.filter(owner=alice).order_by("-pk").first()
    assert response.status_code == 200 and response["HX-Redirect"] == f"/chat/{newest.pk}/"
    page = refused(client, alice, b"not json", htmx=True)
    assert page.lstrip().startswith('<form class="card form" id="import-form"') and "not valid JSON" in page
