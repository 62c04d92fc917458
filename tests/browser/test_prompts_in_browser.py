"""The prompt library in Chromium: create, version, diff, label, playground, chat from a version."""

import re

from playwright.sync_api import expect

pytestmark = __import__("pytest").mark.browser


def test_a_prompt_is_versioned_compared_run_and_chatted_with(page, log_in, screenshot):
    log_in()
    page.goto("/prompts/")
    page.get_by_role("link", name="New prompt").click()
    page.get_by_label("Name", exact=True).fill("Support reply")
    page.get_by_label("Description").fill("First answer to a customer's question")
    page.get_by_label("Instructions").fill("You are a support assistant. Answer politely.")
    page.get_by_label("User turn template").fill("Customer {{ customer_name }} asks: {{ question }}")
    page.locator("textarea[name=example_input]").first.fill("Where is my parcel?")
    page.locator("textarea[name=example_output]").first.fill("Let me check the tracking number for you.")
    page.get_by_role("button", name="Create prompt").click()
    page.wait_for_url("**/prompts/support-reply/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Support reply")

    # Version 2: the instructions change; version 1 stays as it was.
    page.get_by_role("link", name="Edit as new version").click()
    page.get_by_label("Instructions").fill("You are a support assistant. Answer politely and briefly.")
    page.get_by_role("button", name="+ Add example").click()
    page.locator("textarea[name=example_input]").nth(1).fill("Can I return shoes?")
    page.locator("textarea[name=example_output]").nth(1).fill("Yes, within 30 days.")
    page.get_by_label("Commit message").fill("Ask for brevity; add a returns example")
    page.get_by_role("button", name="Save as new version").click()
    page.wait_for_url("**/prompts/support-reply/versions/2/")
    screenshot("prompt-detail")

    # Point "production" at v1 (htmx, no reload): the label and its audit trail show.
    page.get_by_label("Label", exact=True).fill("production")
    page.locator("#label-version").select_option("1")
    page.get_by_role("button", name="Move label").click()
    expect(page.locator("#labels")).to_contain_text("production → v1")
    expect(page.locator("#labels .audit")).to_contain_text("by admin")

    page.get_by_role("link", name="Diff with v1").click()
    page.wait_for_url(re.compile(r".*/diff/\?from=1&to=2"))
    instructions = page.get_by_role("table", name=re.compile("Instructions"))
    expect(instructions.locator("ins")).to_contain_text("and briefly")
    expect(
        page.get_by_role("table", name=re.compile("Few-shot examples")).locator(".diff__row--added").first
    ).to_be_visible()
    screenshot("prompt-diff")

    # Playground: v2 against v1 on the same input; the user's braces reach the model as text.
    page.goto("/prompts/support-reply/playground/?a=2&b=1")
    page.get_by_label("customer_name").fill("Ann")
    page.get_by_label("question").fill("What does {{ secret }} mean?")
    previews = page.locator(".preview")
    expect(previews).to_have_count(2)
    expect(previews.first).to_contain_text("Customer Ann asks: What does {{ secret }} mean?")
    expect(previews.first).to_contain_text("Can I return shoes?")
    page.get_by_role("button", name="Run both").click()
    outputs = page.locator("[data-run-output]")
    expect(outputs).to_have_count(2)
    growing = set()
    for _ in range(600):  # the first pane's reply, seen while it is being written
        status = outputs.first.get_attribute("data-status")
        if status == "streaming":
            growing.add(len(outputs.first.text_content()))
        elif status not in ("queued", None):
            break
        page.wait_for_timeout(25)
    assert len(growing) >= 2, f"the reply was seen growing ({sorted(growing)})"
    for pane in page.locator(".run").all():
        expect(pane.locator("[data-run-state]")).to_have_text("done", timeout=60_000)
        expect(pane.locator("[data-run-model]")).to_have_text("tiny-llama-v2")  # the model that answered
    expect(page.locator("[data-run-meta]").first).to_contain_text("tok/s")
    screenshot("prompt-playground")

    # A chat started from v2 records the version and the variables.
    page.goto("/prompts/support-reply/playground/?a=2")
    page.get_by_label("customer_name").fill("Ann")
    page.get_by_label("question").fill("Where is my order?")
    page.get_by_role("button", name="Start a chat").click()
    # Nothing is sent before the first message is shown.
    expect(page.locator("#chat-start")).to_contain_text("Customer Ann asks: Where is my order?")
    screenshot("chat-start-confirm")
    page.get_by_role("button", name="Send it and open the chat").click()
    page.wait_for_url(re.compile(r".*/chat/\d+/$"))
    expect(page.locator(".prompt-origin")).to_contain_text("Support reply v2")
    expect(page.locator("[data-role=user]").first).to_contain_text("Customer Ann asks: Where is my order?")
    expect(page.locator("[data-role=assistant]").first).to_have_attribute("data-status", "complete", timeout=60_000)
    screenshot("chat-from-prompt")

    page.goto("/prompts/")
    expect(page.locator(".table")).to_contain_text("production → v1")
    screenshot("prompt-library")


def test_a_missing_variable_is_shown_before_anything_runs(page, log_in):
    log_in()
    page.goto("/prompts/new/")
    page.get_by_label("Name", exact=True).fill("Greeting")
    page.get_by_label("User turn template").fill("Greet {{ name }}")
    page.get_by_role("button", name="Create prompt").click()
    page.wait_for_url("**/prompts/greeting/")
    page.get_by_role("link", name="Open in playground").click()
    expect(page.locator(".preview")).to_contain_text("Fill in the variable name")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".run")).to_contain_text("Fill in the variable name")
    expect(page.locator("[data-run-output]")).to_have_count(0)
