"""Cut replies and kept playground runs, in Debian's Chromium at 1280 × 800 against a real daphne
server with the tiny model: a reply cut at its maximum tokens says so and Continue makes the same
reply grow; playground runs stay listed after a reload, open again, compare side by side."""

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage
from tests.browser.test_chat_in_browser import wait_until_connected

pytestmark = pytest.mark.browser

# Replies held by a regular expression to readable words (the tiny model's own greedy text is mostly
# newlines), at least 30 tokens long: cut at 12, and again at 24 after Continue.
PATTERN = "Once upon a time (the pears sailed on (and on ){12,})+and they came home\\."
SETUP = f"""
from django.contrib.auth.models import User
from chat.models import Conversation
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt = prompt_create(owner=admin, name="Pear story", slug="pear-story", version={{
    "instructions": "Tell the story.", "template": "{{{{ topic }}}}", "max_new_tokens": 12,
    "output_format": {{"type": "regex", "pattern": {PATTERN!r}}}}})
version = prompt.versions.get()
chat = Conversation.objects.create(owner=admin, title="Pear story", prompt_version=version,
                                   system_prompt=version.instructions)
print("CHAT", chat.pk)
"""


@pytest.fixture(autouse=True)
def patient(page):
    # The model loads while the first test runs, and helpers may share the machine: generous waits.
    page.set_default_timeout(120_000)


@pytest.fixture(scope="module")
def story_chat(studio):
    return manage(["shell", "-c", SETUP], studio.env).split("CHAT")[1].split()[0]


def finished_reply(page):
    """The only reply, once it has ended and the server's rendering is swapped in (with Copy)."""
    page.wait_for_function(
        """() => {
      const replies = document.querySelectorAll('#messages [data-role="assistant"]');
      return replies.length === 1 && replies[0].dataset.status === "complete"
        && replies[0].querySelector('[data-action="copy"]') !== null;
    }""",
        polling="raf",
    )
    return page.locator('#messages [data-role="assistant"]')


def test_a_cut_reply_is_marked_and_continue_extends_it(page, log_in, story_chat, screenshot):
    log_in()
    page.goto(f"/chat/{story_chat}/")
    wait_until_connected(page)
    box = page.get_by_label("Message", exact=True)
    box.fill("The pears")
    box.press("Enter")
    reply = finished_reply(page)
    expect(reply.locator(".message__cut")).to_have_text("cut at 12 tokens")
    first_text = reply.locator(".message__raw").input_value()
    assert first_text.startswith("Once upon a time") and not first_text.endswith("home.")
    screenshot("chat-cut-reply")

    reply.get_by_role("button", name="Continue").click()
    expect(reply.locator(".message__cut")).to_have_text("cut at 24 tokens")  # the same reply, 12 tokens on
    reply = finished_reply(page)
    grown = reply.locator(".message__raw").input_value()
    assert grown.startswith(first_text) and len(grown) > len(first_text), (first_text, grown)
    expect(page.locator('#messages [data-role="assistant"]')).to_have_count(1)
    screenshot("chat-continued-reply")

    page.reload()
    wait_until_connected(page)
    reply = page.locator('#messages [data-role="assistant"]')
    expect(reply).to_have_count(1)
    expect(reply.locator(".message__cut")).to_have_text("cut at 24 tokens")
    assert reply.locator(".message__raw").input_value() == grown


def test_playground_runs_survive_a_reload_open_again_continue_and_compare(page, log_in, story_chat, screenshot):
    log_in()
    page.goto("/prompts/pear-story/playground/")
    run_list = page.locator("#run-list")
    before = run_list.locator("tbody tr").count()
    page.get_by_label("topic").fill("pears at sea")
    page.get_by_role("button", name="Run", exact=True).click()
    pane = page.locator("#runs .run")
    expect(pane.locator("[data-run-state]")).to_have_text("done", timeout=120_000)
    expect(pane.locator(".message__cut")).to_have_text("cut at 12 tokens")
    expect(run_list.locator("tbody tr")).to_have_count(before + 1)  # listed as soon as it ended

    # Continue, in the playground too: the run's reply grows.
    first_text = pane.locator(".message__raw").input_value()
    pane.get_by_role("button", name="Continue").click()
    expect(page.locator("#runs .run .message__cut")).to_have_text("cut at 24 tokens", timeout=120_000)
    grown = page.locator("#runs .run .message__raw").input_value()
    assert grown.startswith(first_text) and len(grown) > len(first_text)

    page.get_by_label("topic").fill("pears in the rain")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#runs .run .run__sent")).to_contain_text("pears in the rain")
    expect(page.locator("#runs .run [data-run-state]")).to_have_text("done", timeout=120_000)
    expect(run_list.locator("tbody tr")).to_have_count(before + 2)

    # A reload keeps them: listed with their figures, opened again, compared side by side.
    page.reload()
    rows = page.locator("#run-list tbody tr")
    expect(rows).to_have_count(before + 2)
    expect(rows.nth(1)).to_contain_text("v1")
    expect(rows.nth(1)).to_contain_text("cut at 24")
    expect(rows.nth(0)).to_contain_text("cut at 12")
    expect(page.locator("#runs .run")).to_have_count(0)
    rows.nth(1).get_by_role("button", name="Open").click()
    opened = page.locator("#runs .run")
    expect(opened).to_have_count(1)
    expect(opened.locator(".run__sent")).to_contain_text("pears at sea")
    assert opened.locator(".message__raw").input_value() == grown
    expect(opened.locator("[data-run-meta]")).to_contain_text("reply tokens")
    expect(opened.get_by_role("button", name="Flag as failure")).to_be_visible()

    rows.nth(0).get_by_role("checkbox").check()
    rows.nth(1).get_by_role("checkbox").check()
    page.get_by_role("button", name="Compare the two ticked").click()
    panes = page.locator("#runs .side-by-side--two .run")
    expect(panes).to_have_count(2)
    expect(panes.nth(0).locator(".run__sent")).to_contain_text("pears in the rain")
    expect(panes.nth(1).locator(".run__sent")).to_contain_text("pears at sea")
    screenshot("playground-runs-compared")
