"""The loop in Chromium: flag a playground reply with the expected answer, find it on the
curation page, run an evaluation and watch it reach 100 %, run it again and compare."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_a_flagged_reply_is_curated_evaluated_and_compared(page, log_in, screenshot):
    log_in()
    page.goto("/prompts/new/")
    page.get_by_label("Name", exact=True).fill("Order JSON")
    page.get_by_label("Instructions").fill('Reply with JSON only: {"item": <text>, "quantity": <number>}.')
    page.get_by_label("User turn template").fill("Order: {{ order }}")
    page.get_by_label("Max new tokens").fill("12")
    page.get_by_role("button", name="Create prompt").click()
    page.wait_for_url("**/prompts/order-json/")
    expect(page.locator("#prompt-cases")).to_contain_text("None yet")

    # A playground run, flagged with the answer it should have given.
    page.goto("/prompts/order-json/playground/")
    page.get_by_label("order").fill("three apples")
    page.get_by_role("button", name="Run", exact=True).click()
    run = page.locator(".run").first
    flag = run.get_by_role("button", name="Flag as failure")
    expect(flag).to_be_visible(timeout=60_000)
    flag.click()
    form = run.locator(".flag-form")
    expect(form).to_contain_text("Order JSON v1")
    expect(form).to_contain_text("three apples")
    form.get_by_label("Expected answer").fill('{"item": "apple", "quantity": 3}')
    form.get_by_label("Tags").fill("json-shape")
    screenshot("flag-form")
    form.get_by_role("button", name="Save failure case").click()
    expect(run.locator(".flagged-note")).to_contain_text("Flagged as failure case #1")
    expect(run.locator("#flagged-badge-" + run.get_attribute("id").removeprefix("message-"))).to_be_visible()

    # The curation page finds it by tag; edit in place changes the split.
    page.goto("/cases/")
    page.get_by_label("Tag").select_option("json-shape")
    expect(page.locator("#case-table tbody tr")).to_have_count(1)
    expect(page.locator("#case-table")).to_contain_text('{"item": "apple", "quantity": 3}')
    screenshot("curation")
    page.locator("#case-table tbody a").first.click()
    page.get_by_label("Split").select_option("eval")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#case-form")).to_contain_text("Saved.")

    # An evaluation runs on the job worker; its progress reaches 100 % without a reload.
    for round_number in (1, 2):
        page.goto("/evaluations/new/?prompt=order-json")
        page.get_by_role("checkbox", name=re.compile("JSON equal")).check()
        page.get_by_role("button", name="Run evaluation").click()
        page.wait_for_url(re.compile(r".*/evaluations/\d+/$"))
        expect(page.locator(".job-progress__status")).to_have_text("Finished", timeout=120_000)
        expect(page.locator(".job-progress__bar")).to_have_attribute("value", "100")
        expect(page.locator(".results tbody tr")).to_have_count(1)
        if round_number == 1:
            screenshot("evaluation")
            # A person's verdict: this output is acceptable after all.
            page.get_by_role("button", name="mark pass").click()
            expect(page.locator(".results .badge--pass")).to_be_visible()

    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r".*/evaluations/compare/\?.*"))
    counts = page.locator(".compare-counts")
    expect(counts).to_contain_text("regressed")
    expect(counts).to_contain_text("1 regressed")
    screenshot("comparison")
