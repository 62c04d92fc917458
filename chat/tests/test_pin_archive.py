"""Pin and archive: the header's buttons, the sidebar's Pinned group and Archived list."""

import time

import pytest
from django.utils import timezone

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def chat(owner, title, **fields) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, **fields)
    Message.objects.create(conversation=conversation, role="user", content=f"about {title}")
    return conversation


def sidebar_titles(page: str) -> list[str]:
    """The titles the sidebar lists, in order, with its group headings."""
    import re

    listed = page.split('id="conversation-list"')[1].split("</nav>")[0]
    return re.findall(r'class="conversation-list__(?:item[^"]*|group)"[^>]*>([^<]+)<', listed)


def test_pin_and_archive_require_login(client, alice):
    conversation = chat(alice, "Trip")
    for action in ("pin", "archive"):
        response = client.post(f"/chat/{conversation.pk}/{action}/")
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_they_only_allow_post(client, alice):
    conversation = chat(alice, "Trip")
    client.force_login(alice)
    for action in ("pin", "archive"):
        assert client.get(f"/chat/{conversation.pk}/{action}/").status_code == 405


def test_someone_elses_conversation_is_not_found(client, alice, bob):
    conversation = chat(alice, "Trip")
    client.force_login(bob)
    for action, field in (("pin", "pinned"), ("archive", "archived")):
        assert client.post(f"/chat/{conversation.pk}/{action}/", {field: "true"}, headers=HTMX).status_code == 404
        assert client.post(f"/chat/999999/{action}/").status_code == 404
    conversation.refresh_from_db()
    assert conversation.pinned_at is None and conversation.archived_at is None


def test_pinned_conversations_head_the_list_under_pinned(client, alice):
    for title in ("Oldest", "Middle", "Newest"):
        chat(alice, title)
    middle = Conversation.objects.get(title="Middle")
    client.force_login(alice)
    response = client.post(f"/chat/{middle.pk}/pin/", {"pinned": "true"}, headers=HTMX)
    answer = response.content.decode()
    assert response.status_code == 200 and ">Unpin<" in answer and 'hx-swap-oob="true"' in answer
    assert sidebar_titles(answer) == ["Pinned", "Middle", "Recent", "Newest", "Oldest"]
    assert sidebar_titles(client.get("/chat/").content.decode()) == ["Pinned", "Middle", "Recent", "Newest", "Oldest"]
    client.post(f"/chat/{middle.pk}/pin/", {"pinned": "false"}, headers=HTMX)
    assert sidebar_titles(client.get("/chat/").content.decode()) == ["Newest", "Middle", "Oldest"]


def test_pinning_is_not_activity(client, alice):
    conversation = chat(alice, "Trip")
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    client.force_login(alice)
    client.post(f"/chat/{conversation.pk}/pin/", {"pinned": "true"}, headers=HTMX)
    client.post(f"/chat/{conversation.pk}/archive/", {"archived": "true"}, headers=HTMX)
    assert Conversation.objects.get(pk=conversation.pk).updated_at == before


def test_a_repeated_click_does_not_undo_itself_and_no_field_toggles(client, alice):
    conversation = chat(alice, "Trip")
    client.force_login(alice)
    for _ in range(2):
        client.post(f"/chat/{conversation.pk}/pin/", {"pinned": "true"}, headers=HTMX)
    conversation.refresh_from_db()
    pinned_at = conversation.pinned_at
    assert pinned_at is not None
    client.post(f"/chat/{conversation.pk}/pin/", headers=HTMX)
    conversation.refresh_from_db()
    assert conversation.pinned_at is None
    # Without htmx, the form posts and the conversation opens again.
    response = client.post(f"/chat/{conversation.pk}/archive/")
    assert response.status_code == 302 and response["Location"] == f"/chat/{conversation.pk}/"


def test_archived_conversations_leave_the_list_for_archived(client, alice):
    kept, archived = chat(alice, "Kept"), chat(alice, "Put away")
    client.force_login(alice)
    answer = client.post(f"/chat/{archived.pk}/archive/", {"archived": "true"}, headers=HTMX).content.decode()
    assert ">Unarchive<" in answer and sidebar_titles(answer) == ["Archived", "Put away"]
    assert sidebar_titles(client.get("/chat/").content.decode()) == ["Kept"]
    assert sidebar_titles(client.get("/chat/?kind=archived").content.decode()) == ["Archived", "Put away"]
    # Its own page lists the archived ones, itself current; a kept one's page lists the others.
    page = client.get(f"/chat/{archived.pk}/").content.decode()
    assert sidebar_titles(page) == ["Archived", "Put away"] and 'aria-current="page">Put away<' in page
    assert sidebar_titles(client.get(f"/chat/{kept.pk}/").content.decode()) == ["Kept"]
    client.post(f"/chat/{archived.pk}/archive/", {"archived": "false"}, headers=HTMX)
    assert sidebar_titles(client.get("/chat/").content.decode()) == ["Put away", "Kept"]
    assert "Nothing archived" in client.get("/chat/?kind=archived").content.decode()


def test_the_headers_menu_has_pin_and_archive_beside_delete(client, alice):
    conversation = chat(alice, "Trip")
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    header = page.split('id="chat-menu"')[1].split("</details>")[0]  # the header's ⋯ menu
    assert header.index(f"/chat/{conversation.pk}/pin/") < header.index(f"/chat/{conversation.pk}/delete/")
    assert f"/chat/{conversation.pk}/archive/" in header and ">Pin<" in header and ">Archive<" in header


def test_the_sidebar_stays_a_few_queries_with_10000_conversations(client, alice, bob, django_assert_max_num_queries):
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(
                owner=alice,
                title=f"chat {number}",
                pinned_at=now if number % 1000 == 0 else None,
                archived_at=now if number % 10 == 1 else None,
            )
            for number in range(10_000)
        ]
        + [Conversation(owner=bob, title=f"bob {number}") for number in range(1_000)],
        batch_size=1000,
    )
    opened = Conversation.objects.filter(owner=alice, archived_at=None).last()
    client.force_login(alice)
    client.get("/chat/")  # the session is warm, as a person's is
    timings = {}
    for url in (
        "/chat/",
        "/chat/conversations/?page=2&kind=chat",
        "/chat/?kind=archived",
        "/chat/conversations/?page=20&kind=archived",
    ):
        with django_assert_max_num_queries(5):  # session, user, count and page of conversations, workers
            started = time.perf_counter()
            response = client.get(url)
            timings[url] = time.perf_counter() - started
        assert response.status_code == 200
    with django_assert_max_num_queries(12):  # the conversation page, its sidebar the same two queries
        client.get(f"/chat/{opened.pk}/")
    page = client.get("/chat/").content.decode()
    titles = sidebar_titles(page)
    assert titles[:11] == ["Pinned", *[f"chat {number}" for number in range(9000, -1, -1000)]]
    assert titles[11] == "Recent" and len(titles) == 52 and "bob" not in page
    print("sidebar with 10,000 conversations:", {url: f"{seconds * 1000:.0f} ms" for url, seconds in timings.items()})
