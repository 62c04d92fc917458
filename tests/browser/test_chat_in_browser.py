"""The chat page in Debian's Chromium against a real daphne server with the tiny model."""

import re

import pytest

from tests.browser.conftest import MAX_NEW_TOKENS

pytestmark = pytest.mark.browser

# Records every state the newest reply passes through, from before the message is sent:
# tokens arrive every few milliseconds, faster than Playwright could poll from outside.
RECORD_REPLY_STATES = """() => {
  window.__states = [];
  const messages = document.getElementById("messages");
  const record = () => {
    const replies = messages.querySelectorAll('[data-role="assistant"]');
    const reply = replies[replies.length - 1];
    if (!reply) return;
    const state = {
      id: reply.id,
      status: reply.dataset.status,
      length: reply.querySelector(".message__body").textContent.length,
      raw: reply.querySelector(".message__raw").value,
    };
    const last = window.__states[window.__states.length - 1];
    if (last && last.id === state.id && last.status === state.status && last.length === state.length) return;
    if (["queued", "streaming"].includes(state.status)) state.raw = null;  // keeps the record small
    window.__states.push(state);
  };
  new MutationObserver(record).observe(messages, {childList: true, subtree: true, attributes: true, characterData: true});
}"""

IN_PROGRESS = '#messages [data-status="queued"], #messages [data-status="streaming"]'


def open_new_chat(page, button_name):
    page.get_by_role("button", name=button_name, exact=True).click()
    page.wait_for_url(re.compile(r"/chat/\d+/$"))
    wait_until_connected(page)


def wait_until_connected(page):
    page.locator('#connection[data-state="open"]').wait_for()


def last_reply(page):
    return page.locator('#messages [data-role="assistant"]').last


def wait_until_reply_ends(page, status):
    reply = last_reply(page)
    page.wait_for_function(
        """status => {
          const replies = document.querySelectorAll('#messages [data-role="assistant"]');
          const reply = replies[replies.length - 1];
          // Ended, and swapped for the server's rendering (which has the Copy button).
          return reply && reply.dataset.status === status && reply.querySelector('[data-action="copy"]') !== null;
        }""",
        arg=status,
        polling="raf",
    )
    return reply


def raw_text(message):
    return message.locator(".message__raw").input_value()


def test_a_reply_streams_in_and_is_there_after_a_reload(page, log_in):
    log_in()
    page.get_by_role("button", name="Start a new chat").click()  # the button on /chat/
    page.wait_for_url(re.compile(r"/chat/\d+/$"))
    wait_until_connected(page)
    page.evaluate(RECORD_REPLY_STATES)

    box = page.get_by_label("Message")
    box.click()
    box.press_sequentially("Hello")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially("there")
    page.wait_for_timeout(300)
    assert box.input_value() == "Hello\nthere"
    assert page.locator("#messages [data-role]").count() == 0

    box.press("Enter")
    user_message = page.locator('#messages [data-role="user"]')
    user_message.wait_for()
    assert box.input_value() == ""
    page.get_by_role("button", name="Stop").wait_for()  # visible while the reply is written
    assert page.get_by_role("button", name="Send").is_disabled()
    reply = wait_until_reply_ends(page, "complete")

    states = page.evaluate("window.__states")
    statuses = [s["status"] for i, s in enumerate(states) if i == 0 or s["status"] != states[i - 1]["status"]]
    assert statuses == ["queued", "streaming", "complete"], statuses
    streamed = next(s["raw"] for s in states if s["status"] == "complete")  # the tokens as they came
    partial_lengths = [s["length"] for s in states if s["status"] == "streaming"]
    assert partial_lengths == sorted(partial_lengths)  # it only grows
    growing = [n for n in partial_lengths if 0 < n < len(streamed)]
    assert len(set(growing)) >= 2, partial_lengths
    assert streamed.strip()  # greedy replies of the tiny model end in visible text
    assert page.get_by_role("button", name="Send").is_enabled()
    assert page.get_by_role("button", name="Stop").is_hidden()

    # The first message names the conversation.
    page.wait_for_function("document.querySelector('#conversation-title input').value === 'Hello there'")

    page.reload()
    wait_until_connected(page)
    assert user_message.locator(".message__body").inner_text() == "Hello\nthere"
    assert reply.get_attribute("data-status") == "complete"
    assert raw_text(reply) == streamed, (len(raw_text(reply)), len(streamed))
    # The tiny model writes no Markdown: its rendered reply reads as its text.
    assert reply.locator(".message__body").inner_text().strip() == streamed.strip()
    assert page.get_by_role("link", name="Hello there").get_attribute("aria-current") == "page"


def test_stop_keeps_the_partial_reply(page, log_in):
    log_in()
    open_new_chat(page, "New chat")  # "+ New chat" in the sidebar (its "+" is aria-hidden)
    page.get_by_label("Message").fill("Write as much as you can")
    page.get_by_role("button", name="Send").click()
    # Once the reply shows some words (it starts with a few dozen newlines), stop it.
    page.wait_for_function(
        """() => {
          const replies = document.querySelectorAll('#messages [data-role="assistant"]');
          const reply = replies[replies.length - 1];
          return reply && reply.dataset.status === "streaming" && reply.querySelector(".message__raw").value.trim() !== "";
        }""",
        polling="raf",
    )
    reply = last_reply(page)
    seen_before_stop = raw_text(reply)
    page.get_by_role("button", name="Stop").click()
    wait_until_reply_ends(page, "stopped")

    kept = raw_text(reply)
    assert kept.startswith(seen_before_stop) and kept.strip()
    assert reply.locator(".message__state").inner_text() == "Stopped"
    assert reply.locator(".message__body").inner_text().strip() == kept.strip()
    tokens = int(
        re.match(
            r"(\d+) tokens", reply.locator(".message__meta [title*=' tokens, first after']").get_attribute("title")
        ).group(1)
    )
    assert 0 < tokens < MAX_NEW_TOKENS  # stopped well before its end
    assert page.get_by_role("button", name="Stop").is_hidden()
    assert page.get_by_role("button", name="Send").is_enabled()

    page.reload()
    wait_until_connected(page)
    assert reply.get_attribute("data-status") == "stopped"
    assert raw_text(reply) == kept
    assert reply.locator(".message__body").inner_text().strip() == kept.strip()
    assert reply.locator(".message__state").inner_text() == "Stopped"
    assert page.get_by_role("button", name="Stop").is_hidden()


XSS = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> **bold**'


def test_html_in_a_message_is_shown_as_text_and_never_runs(page, log_in):
    log_in()
    open_new_chat(page, "New chat")
    box = page.get_by_label("Message")
    box.fill(XSS)
    box.press("Enter")
    wait_until_reply_ends(page, "complete")
    user_body = page.locator('#messages [data-role="user"] .message__body')
    user_body.locator("strong").wait_for()  # the server's rendering (Markdown) is in

    def assert_shown_as_text():
        assert page.evaluate("typeof window.__xss") == "undefined"
        text = user_body.inner_text()
        assert '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> bold' == text
        assert page.locator("#messages script, #messages img, .sidebar img").count() == 0

    assert_shown_as_text()
    # The message also names the conversation: the title shows it as text too.
    page.wait_for_function("document.querySelector('#conversation-title input').value.startsWith('<script>')")

    page.reload()
    wait_until_connected(page)
    page.wait_for_load_state("load")
    page.wait_for_timeout(200)  # an image's onerror would have fired by now
    assert_shown_as_text()
    assert page.locator(".conversation-list").get_by_text("<script>window.__xss=1</script>", exact=False).count() == 1
