"""A version's output format in Chromium: written in the version form, refused with the reason
where it is typed, shown with a sample, and enforced on the playground's reply."""

import json
import re

from playwright.sync_api import expect

pytestmark = __import__("pytest").mark.browser

SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": ["refund", "exchange", "question"]}, "urgent": {"type": "boolean"}},
    "required": ["intent", "urgent"],
    "additionalProperties": False,
}


def test_a_schema_is_saved_with_the_version_shown_and_enforced_in_the_playground(page, log_in, screenshot):
    log_in()
    page.goto("/prompts/new/")
    page.get_by_label("Name", exact=True).fill("Ticket triage")
    page.get_by_label("Instructions").fill("Classify the customer's message.")
    page.get_by_label("User turn template").fill("{{ message }}")
    page.get_by_label("The answer is").select_option("json_schema")
    # A schema the grammar cannot enforce is refused where it was typed, and nothing is saved.
    page.locator("#id_output_spec").fill(json.dumps({"type": "strng"}))
    page.get_by_role("button", name="Create prompt").click()
    expect(page.locator("#id_output_spec")).to_have_attribute("aria-invalid", "true")
    # The alert at the top points to the field; the field says where in the schema and what to write.
    expect(page.get_by_role("alert").first).to_contain_text("under the field")
    expect(page.locator("#output-format-error")).to_contain_text("not a valid JSON Schema")
    expect(page.locator("#output-format-error")).to_contain_text("did you mean 'string'")
    page.locator("#id_output_spec").fill(json.dumps(SCHEMA, indent=2))
    page.get_by_role("button", name="Create prompt").click()
    page.wait_for_url("**/prompts/ticket-triage/")
    expect(page.locator(".output-format-text")).to_contain_text('"intent"')
    expect(page.get_by_text("An answer of this shape, for example:")).to_be_visible()
    screenshot("output-format-version")

    page.goto("/prompts/ticket-triage/playground/?a=1")
    page.get_by_label("message").fill("My parcel never came, I want my money back!")
    page.get_by_role("button", name=re.compile("^Run")).click()
    run = page.locator(".run").first
    expect(run.locator("[data-run-state]")).to_have_text("done", timeout=60_000)
    state = run.locator("[data-run-format-state]")
    expect(state).to_contain_text(re.compile("valid by construction|cut short"))
    if "valid by construction" in state.text_content():
        answer = json.loads(run.locator("[data-run-output]").text_content())
        assert answer["intent"] in ("refund", "exchange", "question") and isinstance(answer["urgent"], bool)
    screenshot("output-format-playground")
