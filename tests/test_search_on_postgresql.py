"""Search on PostgreSQL (scaled mode): the GIN indexes of migration chat/0010 built over
conversations stored before it, `phraseto_tsquery` and `ts_headline` through the real pages of a
real daphne, hostile queries, other people's conversations, filters. The SQLite index has the same
tests in chat/tests/test_search.py."""

import html
import re
from urllib.parse import urlencode

import pytest

from benchmarks.processes import manage, running_studio
from chat import search_index
from chat.tests.test_search import SYNTAX
from tests.scaled import query

pytestmark = pytest.mark.scaled

# Stored while chat/0009 is the last migration: the index is built over them afterwards.
BEFORE_THE_INDEX = """
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
chat_apps = MigrationLoader(connection).project_state([("chat", "0009_branches_and_chat_settings")]).apps
Conversation, Message = chat_apps.get_model("chat", "Conversation"), chat_apps.get_model("chat", "Message")
alice = User.objects.create_user("alice", password="alice-password-1")
bob = User.objects.create_user("bob", password="bob-password-1")
old = Conversation.objects.create(owner_id=alice.pk, title="Holiday in Lisbon")
Message.objects.bulk_create([
    Message(conversation=old, role="user", content="Which trams cross the old town?"),
    Message(conversation=old, role="assistant", content="Tram 28, <b>always</b> & busy", model_name="order-json-ft1",
            flagged_at=timezone.now()),
])
secret = Conversation.objects.create(owner_id=bob.pk, title="Bob's swordfish")
Message.objects.create(conversation=secret, role="user", content="my Lisbon password is swordfish")
"""
AFTER_THE_INDEX = """
from django.contrib.auth.models import User
from chat.models import Conversation, Message
from prompts.services import prompt_create
alice = User.objects.get(username="alice")
prompt = prompt_create(owner=alice, name="Trip planner", slug="trip-planner", version={"template": "{{ text }}"})
planned = Conversation.objects.create(owner=alice, title="Planned", prompt_version=prompt.versions.get())
Message.objects.create(conversation=planned, role="user", content="two days in Lisbon")
writing = Conversation.objects.create(owner=alice, title="Writing")
Message.objects.create(conversation=writing, role="user", content="tell me about airships")
Message.objects.create(conversation=writing, role="assistant", content="A zeppelin is", status="streaming")
"""


@pytest.fixture(scope="module")
def studio(scaled_env, tmp_path_factory):
    env, _ = scaled_env
    manage(["migrate", "--verbosity", "0"], env)
    manage(["migrate", "chat", "0009", "--verbosity", "0"], env)  # 0010 reversed: no index
    manage(["shell", "-c", BEFORE_THE_INDEX], env)
    with running_studio(env, tmp_path_factory.mktemp("search-logs")) as server:  # serve migrates to 0010
        manage(["shell", "-c", AFTER_THE_INDEX], env)
        server.alice = server.login("alice", "alice-password-1")
        server.bob = server.login("bob", "bob-password-1")
        yield server


def search(session, **params) -> tuple[int, str]:
    """The results partial, as the search page's htmx form asks for it (from the search page: a
    browser's Referer, not the request's own URL, which would double a 10 kB query's headers)."""
    status, page, _ = session.request(
        "GET",
        "/chat/search/?" + urlencode(params),
        headers={"HX-Request": "true", "HX-Target": "search-results", "Referer": session.base_url + "/chat/search/"},
    )
    return status, page


def titles(page: str) -> list[str]:
    return [
        html.unescape(re.sub(r"<[^>]+>", "", title))
        for title in re.findall(r'class="search-hit__title">(.*?)</span>', page)
    ]


def test_conversations_stored_before_the_index_are_found_with_marked_snippets(studio):
    status, page = search(studio.alice, q="trams")
    assert status == 200 and titles(page) == ["Holiday in Lisbon"]
    assert "<mark>trams</mark>" in page
    assert titles(search(studio.alice, q="TRAM")[1]) == ["Holiday in Lisbon"]  # any case, a prefix
    assert "Holiday in <mark>Lisbon</mark>" in search(studio.alice, q="lisbon")[1]
    assert titles(search(studio.alice, q="lisbon")[1]) == ["Planned", "Holiday in Lisbon"]


def test_stored_text_is_escaped_in_snippets(studio):
    page = search(studio.alice, q="always busy")[1]
    # ts_headline's parser takes <b> for markup and leaves it out; the rest is escaped.
    assert "<b>" not in page and "<mark>always</mark>" in page and "&amp; <mark>busy</mark>" in page


def test_fts_syntax_long_queries_and_nul_bytes_never_answer_500(studio):
    for text in [*SYNTAX, "lisbon " + "x" * 10_000, "word " * 2_000, "'lisbon':*", "lisbon & !porto", "<->"]:
        status, page = search(studio.alice, q=text)
        assert status == 200 and "error" not in page.lower(), text[:40]
    assert titles(search(studio.alice, q="lisbon OR madrid")[1]) == []  # OR is a word, not an operator
    status, _, headers = studio.alice.request("GET", "/chat/search/?q=lis%00bon")
    assert status == 400 and "NUL" in headers.get("X-Studio-Error", "")


def test_nobody_finds_another_persons_conversations(studio):
    assert titles(search(studio.bob, q="trams")[1]) == []
    assert titles(search(studio.bob, q="lisbon")[1]) == ["Bob's swordfish"]
    assert titles(search(studio.alice, q="swordfish")[1]) == []
    assert "swordfish" not in search(studio.alice, since="2000-01-01")[1]


def test_filters_narrow_the_results(studio):
    assert titles(search(studio.alice, q="lisbon", flagged="on")[1]) == ["Holiday in Lisbon"]
    assert titles(search(studio.alice, q="lisbon", model="order-json-ft1")[1]) == ["Holiday in Lisbon"]
    assert titles(search(studio.alice, q="lisbon", prompt="trip-planner")[1]) == ["Planned"]
    assert titles(search(studio.alice, q="lisbon", until="2001-01-01")[1]) == []
    assert titles(search(studio.alice, prompt="trip-planner")[1]) == ["Planned"]  # filters alone


def test_a_reply_is_found_once_it_is_written(studio, scaled_env):
    _, database = scaled_env
    assert titles(search(studio.alice, q="zeppelin")[1]) == []
    query(
        database,
        "UPDATE chat_message SET status = 'complete', content = 'A zeppelin is an airship' "
        "WHERE status = 'streaming' RETURNING id",
    )
    assert titles(search(studio.alice, q="zeppelin")[1]) == ["Writing"]


def test_the_indexes_are_valid_and_serve_the_search(scaled_env):
    import psycopg

    _, database = scaled_env
    valid = dict(
        query(
            database,
            "SELECT c.relname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE %s",
            "chat_%_search",
        )
    )
    assert valid == {"chat_message_content_search": True, "chat_conversation_title_search": True}
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection:
        connection.execute("SET enable_seqscan = off")  # a few rows: the planner would scan them anyway
        for sql, params in (
            search_index.matching_conversation_ids("postgresql", ("old", "town"), True),
            search_index.matching_title_ids("postgresql", ("lisbon",), False),
        ):
            plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + sql, params).fetchall())
            assert "_search" in plan, plan
