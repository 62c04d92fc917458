"""Branches, Markdown while it streams, code blocks and feedback, in Debian's Chromium against a
real daphne server with the tiny model."""

import re

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage
from tests.browser.test_chat_in_browser import wait_until_connected, wait_until_reply_ends

pytestmark = pytest.mark.browser

# A chat whose replies are held, by a regular-expression output format, to this Markdown: real
# decoding of a known text, long enough after the code block to watch it while it is written.
MARKDOWN_HEAD = 'Here is the plan:\n\n- pack the pears\n- ship them\n\n```python\nprint("pears")\n```\n\n'
PATTERN = (
    "".join("\\n" if ch == "\n" else "\\" + ch if ch in ".^$*+?()[]{}|\\" else ch for ch in MARKDOWN_HEAD)
    + "Then (we wait and see how it goes ){60}done\\."
)
SETUP = f"""
from django.contrib.auth.models import User
from chat.models import Conversation
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt = prompt_create(owner=admin, name="Plan in Markdown", slug="plan-markdown", version={{
    "instructions": "Plan it.", "template": "{{{{ task }}}}", "max_new_tokens": 1200,
    "output_format": {{"type": "regex", "pattern": {PATTERN!r}}}}})
version = prompt.versions.get()
chat = Conversation.objects.create(owner=admin, title="Markdown plan", prompt_version=version,
                                   system_prompt=version.instructions)
print("CHAT", chat.pk)
"""

# Records, from before the message is sent, whether the reply showed a rendered list and code
# block while it was still being written (tokens come faster than Playwright could poll).
RECORD_FORMATTED_WHILE_STREAMING = """() => {
  window.__formattedWhileStreaming = {list: false, code: false, openCode: false};
  const messages = document.getElementById("messages");
  new MutationObserver(() => {
    const reply = messages.querySelector('[data-role="assistant"][data-status="streaming"]');
    if (!reply) return;
    const seen = window.__formattedWhileStreaming;
    seen.list = seen.list || reply.querySelector(".message__blocks ul li") !== null;
    seen.code = seen.code || reply.querySelector(".message__blocks .code-block .highlight") !== null;
    seen.openCode = seen.openCode || reply.querySelector(".message__tail .code-block") !== null;
  }).observe(messages, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(autouse=True)
def patient(page):
    # The model loads while the first test runs, and helpers may share the machine: generous waits.
    page.set_default_timeout(120_000)


def new_chat(page):
    page.goto("/chat/")
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url(re.compile(r"/chat/\d+/$"))
    wait_until_connected(page)


def send(page, text):
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def replies(page):
    return page.locator('#messages [data-role="assistant"]')


def wait_for_new_reply(page, replies_before):
    """Until a reply beyond the `replies_before` shown has come and ended (swapped for the server's
    rendering, which has the Copy button)."""
    page.wait_for_function(
        """before => {
          const replies = document.querySelectorAll('#messages [data-role="assistant"]');
          const reply = replies[replies.length - 1];
          return replies.length > before && reply.dataset.status === "complete"
            && reply.querySelector('[data-action="copy"]') !== null;
        }""",
        arg=replies_before,
        polling="raf",
    )


def ask(page, text):
    before = replies(page).count()
    send(page, text)
    wait_for_new_reply(page, before)


def test_an_edit_makes_a_branch_and_switching_and_reloading_keep_it(page, log_in, screenshot):
    log_in()
    new_chat(page)
    ask(page, "First question")
    ask(page, "Second question")
    user_messages = page.locator('#messages .message[data-role="user"]')
    expect(user_messages).to_have_count(2)

    # ArrowUp in the empty box edits the last message; the edit is a new branch from there.
    page.get_by_label("Message", exact=True).press("ArrowUp")
    editor = page.get_by_label("Edit the message")
    expect(editor).to_have_value("Second question")
    editor.fill("Second question, edited")
    editor.press("Enter")
    edited = user_messages.nth(1)
    expect(edited.locator(".message__body")).to_have_text("Second question, edited")
    expect(page.locator("#messages .message")).to_have_count(4)  # the old branch left the page
    wait_until_reply_ends(page, "complete")  # the new branch's reply
    expect(edited.locator(".siblings__count")).to_have_text("2/2")

    # ‹ goes back to the original branch, with its own reply; the page keeps it after a reload.
    edited.get_by_role("button", name="Previous version").click()
    expect(user_messages.nth(1).locator(".message__body")).to_have_text("Second question")
    expect(user_messages.nth(1).locator(".siblings__count")).to_have_text("1/2")
    expect(page.locator("#messages .message")).to_have_count(4)
    page.reload()
    wait_until_connected(page)
    expect(user_messages.nth(1).locator(".message__body")).to_have_text("Second question")
    expect(user_messages.nth(1).locator(".siblings__count")).to_have_text("1/2")
    screenshot("chat-branch-switch")

    # Regenerate keeps the old reply as a sibling: 2/2 on the new one, ‹ brings the first back.
    first_reply_text = page.locator('#messages [data-role="assistant"]').last.locator(".message__raw").input_value()
    page.locator('#messages [data-role="assistant"]').last.get_by_role("button", name="Regenerate").click()
    reply = page.locator('#messages [data-role="assistant"]').last
    expect(reply.locator(".siblings__count")).to_have_text("2/2")
    wait_until_reply_ends(page, "complete")
    reply.get_by_role("button", name="Previous version").click()
    expect(page.locator('#messages [data-role="assistant"]').last.locator(".siblings__count")).to_have_text("1/2")
    assert (
        page.locator('#messages [data-role="assistant"]').last.locator(".message__raw").input_value()
        == first_reply_text
    )


def test_markdown_renders_while_the_reply_streams_and_code_copies(page, log_in, studio, screenshot):
    chat = manage(["shell", "-c", SETUP], studio.env).split("CHAT")[1].split()[0]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in()
    page.goto(f"/chat/{chat}/")
    wait_until_connected(page)
    page.evaluate(RECORD_FORMATTED_WHILE_STREAMING)
    send(page, "Ship the pears")
    reply = replies(page).last
    streaming_code = reply.locator(".message__blocks .code-block")
    try:
        streaming_code.wait_for(timeout=60_000)
        if reply.get_attribute("data-status") == "streaming":
            screenshot("chat-markdown-mid-reply")
    finally:
        wait_until_reply_ends(page, "complete")
    seen = page.evaluate("window.__formattedWhileStreaming")
    assert seen["list"] and seen["code"], seen  # formatted before the reply ended

    # The finished reply: highlighted, labelled with its language, copied with its button.
    code = reply.locator(".code-block")
    expect(code.locator(".code-block__lang")).to_have_text("python")
    expect(code.locator(".highlight .s2").first).to_be_visible()  # Pygments marked the string
    code.get_by_role("button", name="Copy").click()
    expect(code.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("pears")\n'
    screenshot("chat-markdown-done")


def test_thumbs_down_opens_the_failure_case_form_filled_in(page, log_in):
    log_in()
    new_chat(page)
    ask(page, "What is two and two?")
    reply = replies(page).last
    reply.get_by_role("button", name="Bad reply").click()
    form = reply.locator(".flag-form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("What is two and two?")  # the input it answered
    expect(form.get_by_label("Expected answer")).to_be_focused()
    expect(reply.get_by_role("button", name="Bad reply")).to_have_attribute("aria-pressed", "true")
    form.get_by_label("Expected answer").fill("Four.")
    form.get_by_role("button", name="Save failure case").click()
    expect(reply.locator(".flagged-note")).to_contain_text("failure case #")


def test_side_by_side_streams_two_replies_and_keeping_one_records_the_pair(page, log_in, screenshot):
    log_in()
    new_chat(page)
    # Sampled replies (this chat's own setting), so that the two differ. Sampling is in the Controls sheet.
    page.locator("#chat-controls > summary").click()
    page.locator("#sampling-panel > summary").click()
    page.get_by_label("Temperature").fill("1.5")
    page.get_by_label("Seed").fill("not a number")
    page.get_by_role("button", name="Save").last.click()
    expect(page.locator("#sampling [role=alert]")).to_contain_text("Seed must be a whole number")
    page.get_by_label("Seed").fill("")
    page.get_by_role("button", name="Save").last.click()
    expect(page.locator("#sampling")).to_contain_text("Saved; applies to the next reply.")
    expect(page.locator('[data-sampling-source="temperature"]')).to_contain_text("1.5 · this chat")
    expect(page.locator("#sampling-summary")).to_contain_text("T 1.5 · top-p")
    page.keyboard.press("Escape")  # the sheet closes; the chat is back
    expect(page.locator(".sheet")).to_be_hidden()

    page.locator("#compare-model").select_option(index=1)
    send(page, "Tell me about pears")
    pair = page.locator(".message-pair")
    expect(pair.locator('.message[data-role="assistant"]')).to_have_count(2)
    screenshot("chat-side-by-side-streaming")
    for n in range(2):
        # Two sampled replies of 400 tokens in one batch: minutes on a busy 2-core machine.
        expect(pair.locator('.message[data-role="assistant"]').nth(n)).to_have_attribute(
            "data-status", "complete", timeout=360_000
        )
    expect(pair.locator('[data-action="keep"]')).to_have_count(2)
    side = pair.locator(".message[data-beside]")
    side_id = side.get_attribute("data-message-id")
    assert "T 1.5" in side.locator(".message__parameters").inner_text()  # stored with the reply
    side.get_by_role("button", name="Keep this one").click()
    kept = page.locator(f"#message-{side_id}")
    expect(kept.locator(".flag-slot")).to_contain_text("preference pair #")
    expect(kept).not_to_have_attribute("data-beside", "true")  # it leads the pair now
    screenshot("chat-side-by-side-kept")


def test_keyboard_shortcuts_and_the_chat_at_phone_width(page, log_in, screenshot):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in()
    new_chat(page)
    ask(page, "Hello there")
    page.locator("body").click()  # focus outside the box: `?` lists the shortcuts
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()
    page.keyboard.press("Control+Shift+C")
    expect(page.locator("#composer-hint")).to_have_text("Copied the last reply.")
    assert page.evaluate("navigator.clipboard.readText()") == replies(page).last.locator(".message__raw").input_value()
    # Esc stops a reply being written.
    send(page, "Another one")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    page.keyboard.press("Escape")
    expect(replies(page).last).to_have_attribute("data-status", re.compile("stopped|complete"), timeout=60_000)
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot("chat-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, page.evaluate("""() =>
        [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)
        .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
    page.set_viewport_size({"width": 1280, "height": 800})
    url = page.url
    page.keyboard.press("Control+Shift+O")  # a new chat
    page.wait_for_url(lambda new_url: new_url != url and re.search(r"/chat/\d+/$", new_url))


OLD_CONVERSATION = """
from django.contrib.auth.models import User
from chat.models import Conversation
from chat.services import message_append
admin = User.objects.get(username="admin")
old = Conversation.objects.create(owner=admin, title="Zoo trip")
message_append(conversation=old, role="user", content="Which animal hops on Rottnest Island?")
message_append(conversation=old, role="assistant", content="The quokka, a small marsupial.")
print("OLD", old.pk)
"""


def test_ctrl_k_searches_and_finds_a_word_from_an_old_conversation(page, log_in, studio, screenshot):
    old = manage(["shell", "-c", OLD_CONVERSATION], studio.env).split("OLD")[1].split()[0]
    log_in()
    new_chat(page)
    page.locator("body").click()
    page.keyboard.press("Control+k")
    box = page.get_by_label("Search conversations")
    expect(box).to_be_focused()
    box.press_sequentially("quokk")
    hit = page.locator(f'.search-hit[data-conversation-id="{old}"]')
    expect(hit).to_be_visible()
    expect(hit.locator("mark").first).to_contain_text("quokk")
    screenshot("chat-search")
    hit.click()
    page.wait_for_url(re.compile(rf"/chat/{old}/"))
    expect(page.locator("#messages")).to_contain_text("The quokka, a small marsupial.")
