"""Search, pin and archive in Chromium: Ctrl+K focuses the sidebar's box, results replace the
list while something is typed and the list comes back when it is emptied; Pin and Archive move a
conversation between the sidebar's groups without a reload."""

import re

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from chat.models import Conversation, Message
admin = User.objects.get(username="admin")
for title, text in (("Trams of Lisbon", "Tram 28 crosses the <b>old</b> town"), ("Porto wine", "Port cellars"),
                    ("Madrid museums", "The Prado opens at ten")):
    if not Conversation.objects.filter(owner=admin, title=title).exists():
        chat = Conversation.objects.create(owner=admin, title=title)
        Message.objects.create(conversation=chat, role="user", content=text)
print("ID", Conversation.objects.get(owner=admin, title="Porto wine").pk)
"""


@pytest.fixture
def porto(studio):
    return int(manage(["shell", "-c", SETUP], studio.env).split("ID ")[1].split()[0])


def test_ctrl_k_searches_as_one_types_and_the_list_comes_back(page, log_in, porto, screenshot):
    log_in()
    page.goto(f"/chat/{porto}/")
    page.locator("#message-input").focus()
    page.keyboard.press("Control+k")
    box = page.locator("#sidebar-search")
    expect(box).to_be_focused()
    box.press_sequentially("old tow", delay=30)
    results = page.locator("#conversation-list .search-hit")
    expect(results).to_have_count(1)
    expect(results.first.locator("mark")).to_have_text(["old", "town"])
    # The stored tag is shown as text, never as markup.
    expect(results.first.locator(".search-hit__snippet")).to_contain_text("Tram 28 crosses the <b>old</b> town")
    screenshot("search-sidebar")
    box.fill("")
    box.dispatch_event("input")
    expect(page.locator("#conversation-list .conversation-list__item")).to_have_count(3)
    expect(page.locator('#conversation-list [aria-current="page"]')).to_have_text("Porto wine")
    expect(page.locator("#conversation-list .search-hit")).to_have_count(0)


def test_pin_and_archive_move_the_conversation_in_the_sidebar(page, log_in, porto, screenshot):
    log_in()
    page.goto(f"/chat/{porto}/")
    page.locator("#chat-menu > summary").click()  # the header's ⋯ menu holds them
    page.get_by_role("button", name="Pin", exact=True).click()
    expect(page.get_by_role("button", name="Unpin")).to_be_visible()
    groups = page.locator("#conversation-list .conversation-list__group")
    expect(groups).to_have_text(["Pinned", "Recent"])
    expect(page.locator("#conversation-list .conversation-list__item").first).to_have_text("Porto wine")
    screenshot("sidebar-pinned")
    page.get_by_role("button", name="Archive", exact=True).click()
    expect(page.get_by_role("button", name="Unarchive")).to_be_visible()
    expect(page.locator("#conversation-list .conversation-list__item")).to_have_text(["Porto wine"])
    # Straight on, as a quick person clicks: Unpin waits until Unarchive's answer is in.
    page.get_by_role("button", name="Unarchive").click()
    page.get_by_role("button", name="Unpin").click()
    expect(page.get_by_role("button", name="Pin", exact=True)).to_be_visible()
    expect(page.locator("#conversation-list .conversation-list__group")).to_have_count(0)
    expect(page.locator("#conversation-list .conversation-list__item")).to_have_count(3)


def test_ctrl_k_on_the_search_page_focuses_its_box_and_filters_narrow(page, log_in, porto, screenshot):
    log_in()
    page.goto("/chat/search/")
    page.locator("body").click()
    page.keyboard.press("Control+k")
    box = page.locator("#search-page-q")
    expect(box).to_be_focused()
    box.press_sequentially("the", delay=30)
    expect(page.locator("#search-results .search-hit")).to_have_count(2)
    screenshot("search-page")
    page.get_by_label("To").fill("2001-01-01")
    expect(page.locator("#search-results .search-hit")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"[?&]until=2001-01-01"))  # the search is in the address
