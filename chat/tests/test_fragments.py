"""Parts of the chat page that a change elsewhere on the page must update, without a reload."""

import pytest

from chat.models import Conversation
from chat.services import conversation_create, message_append

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def trip(alice):
    conversation = conversation_create(owner=alice, title="Trip", system_prompt="Be brief.")
    message_append(conversation=conversation, role="user", content="Plan it")
    return conversation


def test_renaming_updates_the_sidebar_too(client, alice, trip):
    client.force_login(alice)
    html = client.post(f"/chat/{trip.pk}/rename/", {"title": "Lisbon in May"}, headers=HTMX).content.decode()
    sidebar = html.split('id="conversation-list"')[1]
    assert 'hx-swap-oob="true"' in sidebar.split(">")[0]
    assert "Lisbon in May" in sidebar and ">Trip<" not in sidebar


def test_a_title_that_cannot_be_stored_is_refused_where_the_person_looks(client, alice, trip):
    client.force_login(alice)
    response = client.post(f"/chat/{trip.pk}/rename/", {"title": "x" * 10 + "\x00"}, headers=HTMX)
    assert response.status_code == 400 and "NUL" in response["X-Studio-Error"]
    assert Conversation.objects.get(pk=trip.pk).title == "Trip"


def test_clearing_the_system_prompt_updates_its_summary(client, alice, trip):
    client.force_login(alice)
    page = client.get(f"/chat/{trip.pk}/").content.decode()
    assert "System prompt · set" in page
    html = client.post(f"/chat/{trip.pk}/system-prompt/", {"system_prompt": ""}, headers=HTMX).content.decode()
    summary = html.split('id="system-prompt-summary"')[1].split("</summary>")[0]
    assert 'hx-swap-oob="true"' in summary and "· none" in summary


def test_a_refused_system_prompt_keeps_the_typed_text_and_says_why(client, alice, trip, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    client.force_login(alice)
    html = client.post(
        f"/chat/{trip.pk}/system-prompt/", {"system_prompt": "far too long a prompt"}, headers=HTMX
    ).content.decode()
    assert "far too long a prompt" in html and "longer than 10" in html
    assert Conversation.objects.get(pk=trip.pk).system_prompt == "Be brief."


def test_new_chat_clicks_do_not_pile_up_empty_conversations_in_the_list(client, alice, trip):
    client.force_login(alice)
    for _ in range(3):
        client.post("/chat/new/")
    newest = Conversation.objects.filter(owner=alice).order_by("-id").first()
    page = client.get(f"/chat/{newest.pk}/").content.decode()
    sidebar = page.split('id="conversation-list"')[1].split("</nav>")[0]
    assert sidebar.count("conversation-list__item") == 2  # the chat with a message, and the open one
    assert "Trip" in sidebar


def test_untouched_empty_conversations_are_cleared_after_a_day(alice, trip):
    from datetime import timedelta

    from django.utils import timezone

    stale = conversation_create(owner=alice)
    Conversation.objects.filter(pk=stale.pk).update(updated_at=timezone.now() - timedelta(days=2))
    conversation_create(owner=alice)
    assert not Conversation.objects.filter(pk=stale.pk).exists()
    assert Conversation.objects.filter(pk=trip.pk).exists()


def test_the_sidebar_is_paged(client, alice):
    for n in range(60):
        conversation = conversation_create(owner=alice, title=f"chat {n}")
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert page.count("conversation-list__item") == 50 and "Older conversations" in page
    more = client.get("/chat/conversations/?page=2").content.decode()
    assert more.count("conversation-list__item") == 10 and "Older conversations" not in more
