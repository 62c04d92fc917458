"""Search: the full-text index (SQLite FTS5 here; PostgreSQL in tests/test_search_on_postgresql.py),
highlighted snippets, filters, hostile queries and other people's conversations."""

from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from chat import search_index
from chat.models import Conversation, Message
from chat.search import MAX_QUERY_CHARS, MAX_TERMS, conversations_search, search_terms

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
SYNTAX = [
    '"',
    '""',
    "*",
    "lisbon*",
    "NEAR(",
    "NEAR(lisbon porto, 2)",
    "-",
    "-lisbon",
    ":",
    "content:lisbon",
    "(",
    "(lisbon",
    ")",
    "OR",
    "lisbon OR",
    "OR lisbon",
    "AND",
    "NOT lisbon",
    "^lisbon",
    "lisbon + porto",
    "'",
    "\\",
    "{content}: lisbon",
    'lisbon"porto',
    "%",
    "_",
    "[",
    "!:&|<->",
]


def chat(owner, title, *turns, **fields) -> Conversation:
    """A conversation whose finished messages are `turns` (user, assistant, user, ...)."""
    conversation = Conversation.objects.create(owner=owner, title=title, **fields)
    for number, text in enumerate(turns):
        Message.objects.create(conversation=conversation, role="assistant" if number % 2 else "user", content=text)
    return conversation


def found(user, query="", **filters) -> list[int]:
    return [hit.conversation_id for hit in conversations_search(user=user, query=query, **filters)]


@pytest.mark.django_db(transaction=True)
def test_it_finds_conversations_stored_before_the_index_existed(alice):
    before = [("chat", "0009_branches_and_chat_settings")]  # no index, no triggers
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldConversation, OldMessage = old_apps.get_model("chat", "Conversation"), old_apps.get_model("chat", "Message")
    older = OldConversation.objects.create(owner_id=alice.pk, title="Holiday")
    for role, content in (("user", "Which trains go to Lisbon?"), ("assistant", "The Alfa Pendular, from Porto.")):
        OldMessage.objects.create(conversation=older, role=role, content=content)
    bulk = OldConversation.objects.create(owner_id=alice.pk, title="Imported")
    OldMessage.objects.bulk_create([OldMessage(conversation=bulk, role="user", content="a quiet beach near Sintra")])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO chat_conversation (owner_id, kind, title, system_prompt, prompt_variables, "
            "template_every_turn, model_name, parameters, job, created_at, updated_at) "
            "VALUES (%s, 'chat', 'Raw ferry notes', '', '{}', 0, '', '{}', '', %s, %s)",
            [alice.pk, timezone.now(), timezone.now()],
        )

    # 0010 builds the index from what is stored; later migrations that rebuild chat_message on
    # SQLite (0011 does) drop its triggers, and `migrate` puts them back (post_migrate).
    call_command("migrate", verbosity=0)

    raw = Conversation.objects.get(title="Raw ferry notes")
    assert found(alice, "lisbon") == [older.pk]
    assert found(alice, "sintra") == [bulk.pk]
    assert found(alice, "ferry") == [raw.pk]
    # ...and what comes after is indexed by the triggers.
    newer = chat(alice, "Later", "Ferries to Lisbon at night")
    assert found(alice, "lisbon") == [newer.pk, older.pk]


def test_it_finds_titles_and_messages_whatever_the_case_and_accents(alice):
    by_title = chat(alice, "Café in Lisbóa")
    by_message = chat(alice, "Trip", "where is the best CAFE?", "Try the one near the river.")
    chat(alice, "Other", "nothing here")
    assert set(found(alice, "cafe")) == {by_title.pk, by_message.pk}
    assert found(alice, "LISBOA") == [by_title.pk]
    assert found(alice, "river near") == [by_message.pk]  # every word, anywhere in one message
    assert found(alice, "riv") == [by_message.pk]  # the last word may be the start of one


def test_every_word_must_match_and_the_newest_conversation_comes_first(alice):
    first = chat(alice, "One", "red apples and green pears")
    second = chat(alice, "Two", "red apples only")
    Conversation.objects.filter(pk=first.pk).update(updated_at=timezone.now() + timedelta(minutes=1))
    assert found(alice, "red apples") == [first.pk, second.pk]
    assert found(alice, "apples pears") == [first.pk]


def test_the_hit_names_the_newest_matching_message_and_marks_its_words(alice):
    conversation = chat(
        alice,
        "Trip",
        "Tell me about Lisbon trams.",
        "Tram 28 crosses Lisbon's old town.",
        "And buses?",
        "Buses are slower.",
    )
    hit = conversations_search(user=alice, query="lisbon")[0]
    second = conversation.messages.order_by("pk")[1]
    assert hit.message_id == second.pk and hit.url == f"/chat/{conversation.pk}/#message-{second.pk}"
    assert "<mark>Lisbon</mark>" in hit.snippet_html and "Tram 28" in hit.snippet_html
    assert hit.title_html == "Trip"


def test_snippets_and_titles_escape_the_stored_text(alice, client):
    markers = chat(alice, "Markers", "\ue001 lisbon \ue000\ue001\ue001 text holding the snippet markers \ue000")
    chat(alice, "<img src=x onerror=alert(1)> lisbon", 'Use <script>alert("lisbon")</script> & <b>bold</b> text')
    hit, marked = conversations_search(user=alice, query="lisbon")
    assert "<script" not in hit.snippet_html and "<b>" not in hit.snippet_html
    assert "&lt;script&gt;alert(&quot;<mark>lisbon</mark>&quot;)" in hit.snippet_html
    assert "<img" not in hit.title_html and "&lt;img" in hit.title_html and "<mark>lisbon</mark>" in hit.title_html
    assert marked.conversation_id == markers.pk and "lisbon" in marked.snippet_html
    assert marked.snippet_html.count("<mark>") == marked.snippet_html.count("</mark>") >= 1
    client.force_login(alice)
    page = client.get("/chat/search/", {"q": "lisbon"}).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "<mark>lisbon</mark>" in page


def test_fts_syntax_in_a_query_is_only_text(alice, client):
    lisbon = chat(alice, "Lisbon", "we met near Lisbon and Porto: content")
    chat(alice, "Madrid", "madrid only")
    client.force_login(alice)
    for query in SYNTAX:
        page = client.get("/chat/search/", {"q": query})
        results = client.get("/chat/search/", {"q": query}, headers={**HTMX, "HX-Target": "search-results"})
        assert page.status_code == results.status_code == 200, query
        text = page.content.decode().lower()
        assert "syntax" not in text and "fts5" not in text and "operationalerror" not in text, query
        assert "error" not in results.content.decode().lower(), query
    assert found(alice, "lisbon OR madrid") == []  # OR is a word here, not an operator
    assert found(alice, "-madrid") == found(alice, "madrid")  # and - is no NOT
    assert found(alice, "NEAR(lisbon porto)") == [lisbon.pk]  # "near lisbon" is a phrase of the message


def test_a_10_kB_query_is_cut_and_answers_200(alice, client):
    chat(alice, "Lisbon", "lisbon")
    client.force_login(alice)
    long_query = "lisbon " + "x" * 10_000
    response = client.get("/chat/search/", {"q": long_query})
    assert response.status_code == 200
    terms = search_terms(long_query)
    assert sum(len(phrase) for phrase in terms.phrases) <= MAX_QUERY_CHARS
    assert len(search_terms("word " * 5_000).phrases) == MAX_TERMS
    assert found(alice, "lisbon " * 2_000) == found(alice, "lisbon")


def test_nul_bytes_are_refused_with_a_message_by_the_page_and_ignored_by_search(alice, client):
    lisbon = chat(alice, "Lisbon", "lisbon")
    client.force_login(alice)
    # Every query parameter with a NUL gets the studio's 400 page saying so (studio.middleware).
    response = client.get("/chat/search/", {"q": "lis\x00bon"})
    assert response.status_code == 400 and "NUL" in response["X-Studio-Error"]
    # Called from elsewhere, search drops NULs and other control characters itself.
    assert found(alice, "\x00lisbon\x00") == [lisbon.pk]
    assert found(alice, "\x00\x01\x1b") == []
    assert found(alice, "lisbon\ud800") == [lisbon.pk]


def test_nobody_finds_another_persons_conversations(alice, bob, client):
    chat(alice, "Alice's secret plan", "the password is swordfish")
    mine = chat(bob, "Bob's", "swordfish recipes")
    assert found(bob, "secret") == []
    assert found(bob, "swordfish") == [mine.pk]
    assert found(bob, since=date(2000, 1, 1)) == [mine.pk]
    client.force_login(bob)
    for query in ("secret", "swordfish", "password"):
        page = client.get("/chat/search/", {"q": query}).content.decode()
        assert "Alice" not in page and "password is" not in page


def test_only_chats_and_api_requests_are_searched(alice):
    listed = [chat(alice, "kiwi", kind=kind).pk for kind in ("chat", "api")]
    chat(alice, "kiwi", kind="playground")
    chat(alice, "kiwi", kind="evaluation")
    assert sorted(found(alice, "kiwi")) == listed


def test_archived_conversations_are_found_and_marked(alice):
    conversation = chat(alice, "Old trip", "lisbon")
    Conversation.objects.filter(pk=conversation.pk).update(archived_at=timezone.now(), pinned_at=timezone.now())
    hit = conversations_search(user=alice, query="lisbon")[0]
    assert hit.conversation_id == conversation.pk and hit.archived and hit.pinned


def test_replies_are_indexed_when_they_end_and_follow_edits_and_deletes(alice):
    conversation = chat(alice, "Trip", "hello")
    reply = Message.objects.create(conversation=conversation, role="assistant", content="", status="streaming")
    Message.objects.filter(pk=reply.pk).update(content="Lisbon is")  # a streaming flush
    assert found(alice, "lisbon") == []
    Message.objects.filter(pk=reply.pk).update(content="Lisbon is lovely", status="complete")
    assert found(alice, "lovely") == [conversation.pk]
    reply.refresh_from_db()
    reply.content = "Porto is lovely"
    reply.save()
    assert found(alice, "lisbon") == [] and found(alice, "porto") == [conversation.pk]
    reply.flagged_at = timezone.now()
    reply.save()  # every column written, the text unchanged: the index stays right
    assert found(alice, "porto") == [conversation.pk]
    reply.delete()
    assert found(alice, "porto") == []
    Conversation.objects.filter(pk=conversation.pk).update(title="Renamed holiday")
    assert found(alice, "holiday") == [conversation.pk] and found(alice, "trip") == []
    conversation.delete()
    assert found(alice, "holiday") == [] and found(alice, "hello") == []
    with connection.cursor() as cursor:  # the index holds nothing of what is gone
        cursor.execute("INSERT INTO chat_message_fts(chat_message_fts, rank) VALUES ('integrity-check', 1)")


@pytest.mark.django_db(transaction=True)
def test_the_index_is_rebuilt_after_a_migration_remade_the_message_table(alice):
    conversation = chat(alice, "Trip", "lisbon trams")
    # What Django does for some schema changes on SQLite: copy, drop (and its triggers), rename.
    with connection.schema_editor() as editor:
        editor._remake_table(Message)
        editor._remake_table(Conversation)
    chat(alice, "Unseen", "lisbon while the triggers were gone")
    search_index.ensure_installed(using="default")  # what post_migrate runs
    after = chat(alice, "After", "lisbon again")
    assert found(alice, "lisbon")[0] == after.pk and len(found(alice, "lisbon")) == 3
    assert found(alice, "trams") == [conversation.pk]


def test_each_filter_narrows_the_results(alice, bob):
    from prompts.services import prompt_create

    prompt = prompt_create(owner=bob, name="Trip planner", slug="trip-planner", version={"template": "{{ text }}"})
    plain = chat(alice, "Plain", "lisbon", "a reply", model_name="")
    tuned = chat(alice, "Tuned", "lisbon")
    Message.objects.create(conversation=tuned, role="assistant", content="ok", model_name="order-json-ft1")
    from_prompt = chat(alice, "From a prompt", "lisbon", prompt_version=prompt.versions.get())
    flagged = chat(alice, "Flagged", "lisbon", "a bad reply")
    flagged.messages.filter(role="assistant").update(flagged_at=timezone.now())
    old = chat(alice, "Old", "lisbon")
    Conversation.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40), updated_at=timezone.now() - timedelta(days=30)
    )
    everything = {plain.pk, tuned.pk, from_prompt.pk, flagged.pk, old.pk}
    assert set(found(alice, "lisbon")) == everything
    assert found(alice, "lisbon", model="order-json-ft1") == [tuned.pk]
    assert found(alice, "lisbon", prompt="trip-planner") == [from_prompt.pk]
    assert found(alice, "lisbon", flagged=True) == [flagged.pk]
    assert set(found(alice, "lisbon", flagged=False)) == everything - {flagged.pk}
    today = timezone.localdate()
    assert set(found(alice, "lisbon", since=today - timedelta(days=1))) == everything - {old.pk}
    assert found(alice, "lisbon", until=today - timedelta(days=20)) == [old.pk]
    assert found(alice, "lisbon", since=today - timedelta(days=35), until=today - timedelta(days=25)) == [old.pk]
    assert found(alice, "lisbon", model="order-json-ft1", flagged=True) == []


def test_filters_without_words_list_the_conversations_they_select(alice, client):
    flagged = chat(alice, "Flagged", "hello", "bad")
    flagged.messages.filter(role="assistant").update(flagged_at=timezone.now())
    chat(alice, "Unflagged", "hello", "good")
    assert found(alice, flagged=True) == [flagged.pk]
    assert found(alice, "") == [] and found(alice, " * - ") == []  # nothing asked, nothing listed
    client.force_login(alice)
    page = client.get("/chat/search/", {"flagged": "on", "since": "not a date"}).content.decode()
    results = page.split('id="search-results"')[1]
    assert ">Flagged<" in results and "Unflagged" not in results and "Enter a valid date" in page


def test_the_sidebar_box_swaps_results_for_the_list_and_back(alice, client):
    conversation = chat(alice, "Lisbon trip", "trams")
    client.force_login(alice)
    sidebar = {**HTMX, "HX-Target": "conversation-list"}
    results = client.get("/chat/search/", {"q": "trams", "kind": "chat"}, headers=sidebar).content.decode()
    assert results.startswith('<nav class="conversation-list conversation-list--search" id="conversation-list"')
    assert f'href="/chat/{conversation.pk}/#message-' in results and "<mark>trams</mark>" in results
    emptied = client.get(
        "/chat/search/", {"q": "", "kind": "chat", "current": conversation.pk}, headers=sidebar
    ).content.decode()
    assert emptied.startswith('<nav class="conversation-list" id="conversation-list"')
    assert f'href="/chat/{conversation.pk}/" aria-current="page"' in emptied
    partial = client.get("/chat/search/", {"q": "trams"}, headers={**HTMX, "HX-Target": "search-results"})
    assert partial.content.decode().startswith('<div class="search-results" id="search-results"')


def test_chat_pages_carry_the_search_box_and_the_shortcut_script(alice, client):
    conversation = chat(alice, "Trip", "hello")
    client.force_login(alice)
    for url in ("/chat/", f"/chat/{conversation.pk}/", "/chat/search/"):
        page = client.get(url).content.decode()
        assert 'id="sidebar-search"' in page and "js/search.js" in page, url
        assert 'hx-trigger="input changed delay:250ms, search"' in page, url


def test_search_requires_login(client):
    response = client.get("/chat/search/", {"q": "x"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_search_page_runs_a_fixed_number_of_queries(alice, client, django_assert_max_num_queries):
    for number in range(30):
        chat(alice, f"lisbon {number}", "lisbon trams", "lisbon buses")
    client.force_login(alice)
    with django_assert_max_num_queries(6):  # session, user, hits, their messages, snippets, titles
        client.get("/chat/search/", {"q": "lisbon"}, headers={**HTMX, "HX-Target": "search-results"})
